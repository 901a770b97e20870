"""Differentiable augmentation of D's inputs (train.augment): the ops, ADA's p, and fit."""

from typing import get_args

import numpy as np
import pytest
import torch

from resgan.augment import (ADA_KIMG, ADA_TARGET, Augment, ada_step, cutout, parse,
                            rand_cutout, rand_translation, translate)
from resgan.config import AugmentPolicy, ConfigError, load_config, replace
from resgan.data import load_split, save_split
from resgan.training import checkpoint as ckpt_io
from resgan.training.loop import fit

POLICIES = get_args(AugmentPolicy)
OPS = [rand_translation, rand_cutout]


def _images(n=16, c=1, seed=0):
    return torch.rand(n, c, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture
def small(prepared, tmp_path):
    """The first 360 training digits: 9 D steps an epoch at batch 40, 11 at batch 32."""
    x, y = load_split(prepared / "train.npz")
    save_split(tmp_path / "small.npz", x[:360].numpy(), y[:360].numpy())
    return str(tmp_path / "small.npz")


def _always(policy):
    """The policy with p = 1 for the adaptive ones (they start at p = 0)."""
    aug = Augment(policy)
    aug._p.fill_(1.0)
    return aug


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shape_dtype_and_memory_format_are_kept(policy, dtype):
    x = _images(c=3).to(dtype)
    y = _always(policy)(x)
    assert y.shape == x.shape and y.dtype == dtype
    xc = x.contiguous(memory_format=torch.channels_last)
    yc = _always(policy)(xc)
    assert yc.is_contiguous(memory_format=torch.channels_last) and yc.dtype == dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the GPU path, forced on the CPU
        assert _always(policy)(x).dtype == dtype


@pytest.mark.parametrize("op", [
    lambda x: translate(x, torch.tensor([[1, -1]] * len(x))),
    lambda x: cutout(x, torch.tensor([[3, 3]] * len(x)), 2),
    rand_translation, rand_cutout, _always("ada-translation+cutout"),
])
def test_gradients_flow_through_every_op(op):
    x = _images(c=3).requires_grad_(True)
    w = torch.randn(x.shape)
    (op(x) * w).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_translation_by_one_pixel_moves_content_by_exactly_one_pixel():
    x = torch.zeros(4, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0
    x[:, 0, 0, 0] = 0.5  # leaves the image (zero fill) when shifted up or left
    y = translate(x, torch.tensor([[1, 0], [0, -1], [-1, 1], [0, 0]]))
    want = torch.zeros(4, 1, 8, 8)
    want[0, 0, 4, 4] = 1.0
    want[0, 0, 1, 0] = 0.5
    want[1, 0, 3, 3] = 1.0
    want[2, 0, 2, 5] = 1.0
    want[3] = x[3]
    assert torch.equal(y, want)


def test_random_translation_shifts_by_at_most_one_pixel_at_8x8():
    x = torch.zeros(900, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0
    y = rand_translation(x)
    assert torch.equal(y.sum((1, 2, 3)), torch.ones(900))  # moved, never lost or blurred
    pos = y[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 8 - 3, pos % 8 - 4
    assert dy.abs().max() == 1 and dx.abs().max() == 1
    shifts = set(zip(dy.tolist(), dx.tolist()))
    assert len(shifts) == 9  # every shift in [-1, 1]^2, no shift included


def test_cutout_zeroes_exactly_size_squared_pixels_inside():
    x = torch.ones(3, 2, 8, 8)
    y = cutout(x, torch.tensor([[0, 0], [3, 5], [6, 6]]), 2)
    assert (y == 0).sum((2, 3)).tolist() == [[4, 4]] * 3  # every channel, the same square
    assert y[1, :, 3:5, 5:7].eq(0).all() and y[1].sum() == 2 * (64 - 4)
    edge = cutout(x[:1], torch.tensor([[7, -1]]), 2)  # hangs over two edges: 1 pixel left
    assert (edge[0, 0] == 0).sum() == 1 and edge[0, 0, 7, 0] == 0
    # random: a 2x2 square (a quarter of the side), at most 4 pixels, 4 when inside
    torch.manual_seed(0)
    zeros = (rand_cutout(torch.ones(2000, 1, 8, 8)) == 0).sum((1, 2, 3))
    assert zeros.min() >= 1 and zeros.max() == 4
    # 7 x 7 of the 9 x 9 corner positions are inside: 49/81 = 0.605 (sd 0.011 at n = 2000)
    assert abs((zeros == 4).float().mean().item() - 49 / 81) < 0.04


def test_probability_zero_keeps_every_image_and_one_changes_every_image():
    x = _images(n=2000)
    for op in OPS:
        assert torch.equal(op(x, p=0.0), x)
    assert torch.equal(Augment("ada-translation+cutout")(x), x)  # adaptive: starts at p = 0
    changed = lambda y: (y != x).flatten(1).any(1)  # noqa: E731
    assert changed(rand_cutout(x, p=1.0)).all()
    # translation: each image shifted; 1 in 9 draws the zero shift, as in DiffAugment
    assert 0.84 < changed(rand_translation(x, p=1.0)).float().mean() < 0.94
    assert changed(_always("translation+cutout")(x)).all()
    half = changed(rand_cutout(x, p=torch.tensor(0.5))).float().mean()
    assert half == pytest.approx(0.5, abs=0.05)


def test_ada_p_moves_towards_the_target_and_is_clamped():
    step = 64 * 4 / (ADA_KIMG * 1000)
    p = torch.tensor(0.5)
    assert ada_step(p, ADA_TARGET + 0.2, 256).item() == pytest.approx(0.5 + step)  # overfitting
    assert ada_step(p, ADA_TARGET - 0.2, 256).item() == pytest.approx(0.5 - step)
    assert ada_step(torch.tensor(0.0), -1.0, 256).item() == 0.0
    assert ada_step(torch.tensor(1.0 - step / 2), 1.0, 256).item() == 1.0

    aug = Augment("ada-translation")
    aug.observe(torch.ones(64, 1))  # D sure of every real image: r_t = 1 > 0.6
    aug.update(images=64)
    assert aug.p == pytest.approx(64 / (ADA_KIMG * 1000))
    for _ in range(3):
        aug.observe(-torch.ones(64, 1))  # r_t = -1: p back down, not below 0
        aug.update(images=64)
    assert aug.p == 0.0
    fixed = Augment("translation")
    fixed.observe(torch.ones(64, 1))
    fixed.update(images=64)
    assert fixed.p == 1.0 and not fixed.adaptive


def test_checkpointed_state_restores_p_and_the_partial_sums():
    aug = Augment("ada-translation+cutout")
    aug._p.fill_(0.25)
    aug.observe(torch.tensor([1.0, 1.0, -1.0, 1.0]))
    state = aug.state_dict()
    assert state == {"policy": "ada-translation+cutout", "p": 0.25, "acc": [2.0, 4.0]}
    back = Augment("ada-translation+cutout")
    back.load_state_dict(state)
    assert back.p == 0.25 and back._acc.tolist() == [2.0, 4.0]
    other_rank = Augment("ada-translation+cutout")
    other_rank.load_state_dict(state, rank=1)  # the sums come back once, on rank 0
    assert other_rank.p == 0.25 and other_rank._acc.tolist() == [0.0, 0.0]


def test_policy_names():
    assert parse("none") == ((), False)
    assert parse("translation+cutout") == (("translation", "cutout"), False)
    assert parse("ada-translation+cutout") == (("translation", "cutout"), True)
    with pytest.raises(ValueError, match="unknown augment policy"):
        parse("color")
    assert load_config({}).train.augment == "none"
    assert load_config({}).ablation.augment == ["none"]
    with pytest.raises(ConfigError, match="train.augment: Input should be 'none'"):
        load_config({"train": {"augment": "cutout4"}})
    with pytest.raises(ConfigError, match="ablation.augment: each policy at most once"):
        load_config({"ablation": {"augment": ["none", "none"]}})


@pytest.mark.parametrize("policy", [p for p in POLICIES if p != "none"])
def test_fit_trains_with_every_policy(tiny_cfg, small, policy):
    cfg = replace(tiny_cfg, train={"augment": policy})
    reports = []
    state = fit(cfg, data_path=small,
                report=lambda m, s: reports.append(m))
    assert [m["epoch"] for m in reports] == [1, 2]
    assert all(np.isfinite([m["loss_d"], m["loss_g"]]).all() for m in reports)
    if policy.startswith("ada-"):
        assert all(0.0 <= m["augment_p"] <= 1.0 for m in reports)
        assert state["augment"]["p"] == reports[-1]["augment_p"]
    else:
        assert "augment_p" not in reports[-1] and "augment" not in state


def test_fit_with_augmentation_under_bf16(tiny_cfg, small):
    cfg = replace(tiny_cfg, train={"augment": "ada-translation+cutout", "epochs": 1,
                                   "mixed_precision": True, "loss": "wgan-gp"},
                  tune={"epochs": 1, "grace_period": 1})
    state = fit(cfg, data_path=small, report=lambda m, s: None)
    assert state["G"]["fc.weight"].dtype == torch.float32
    assert torch.isfinite(state["G"]["fc.weight"]).all()


def test_ada_resumes_with_the_same_p(tiny_cfg, small, tmp_path):
    """p and the sums since its last update come back from the checkpoint file: the resumed
    run ends with the p and the weights of the uninterrupted one."""
    # a high learning rate for D: it overfits at once, so p really moves
    cfg = replace(tiny_cfg, train={"augment": "ada-translation", "epochs": 3, "lr_d": 2e-3,
                                   "batch_size": 40})  # 9 D steps an epoch: updates straddle

    def keep(m, s):
        if s is not None:
            ckpt_io.save(tmp_path / f"e{m['epoch']}.pt", s)

    full_p = []
    full = fit(cfg, data_path=small,
               report=lambda m, s: (keep(m, s), full_p.append(m["augment_p"])))
    assert full_p[-1] > 0.0
    start = ckpt_io.load(tmp_path / "e1.pt")
    assert start["augment"]["p"] == full_p[0]
    resumed_p = []
    end = fit(cfg, data_path=small, from_state=start,
              report=lambda m, s: resumed_p.append(m["augment_p"]))
    assert resumed_p == full_p[1:]
    assert end["augment"] == full["augment"]
    for name, value in full["D"].items():
        assert torch.equal(end["D"][name], value), name
