"""The per-worker loop in a plain process (world size 1), as a GPU machine without Ray runs it."""

import numpy as np
import pytest
import torch

from resgan.config import replace
from resgan.data import load_split, save_split
from resgan.training import checkpoint as ckpt_io
from resgan.metrics.scoring import FidRef
from resgan.training.loop import DivergedError, fit, make_ema


def _run(cfg, data, **kw):
    reports = []
    state = fit(cfg, data_path=str(data), report=lambda m, s: reports.append((m, s)), **kw)
    return reports, state


def test_fit_reports_every_epoch_and_checkpoints(tiny_cfg, prepared, tmp_path):
    ref = FidRef(str(prepared / "stats.npz"), "classifier", str(prepared / "classifier.pt"))
    reports, state = _run(tiny_cfg, prepared / "train.npz", fid_ref=ref)
    assert [m["epoch"] for m, _ in reports] == [1, 2]
    for m, s in reports:
        assert np.isfinite([m["loss_d"], m["loss_g"], m["fid"]]).all()
        assert m["images_per_s"] > 0 and m["fid"] > 0
        assert s is not None  # checkpoint_every: 1
    # self-describing and loadable with weights_only=True
    ckpt_io.save(tmp_path / "c.pt", state)
    loaded = ckpt_io.load(tmp_path / "c.pt")
    assert loaded["epoch"] == 2 and loaded["config"]["model"]["channels"] == 8
    G = ckpt_io.generator_from(loaded)
    assert G(torch.randn(2, 16)).shape == (2, 1, 8, 8)


def test_resume_continues_exactly_as_an_uninterrupted_run(tiny_cfg, prepared, tmp_path):
    """Weights, optimizers, EMA, step and the RNG state come back from the checkpoint file:
    epochs 2-3 after a resume are bit-identical to epochs 2-3 of one uninterrupted run."""
    cfg = replace(tiny_cfg, train={"epochs": 3})
    saved = []

    def keep(m, s):  # as the Ray wrapper does: the state goes to a file when reported
        if s is not None:
            ckpt_io.save(tmp_path / f"e{m['epoch']}.pt", s)
            saved.append(m["epoch"])

    full = fit(cfg, data_path=str(prepared / "train.npz"), report=keep)
    assert saved == [1, 2, 3] and full["resumed_from"] == []
    start = ckpt_io.load(tmp_path / "e1.pt")
    reports, end = _run(cfg, prepared / "train.npz", from_state=start)
    assert [m["epoch"] for m, _ in reports] == [2, 3]
    assert end["step"] == full["step"] and end["resumed_from"] == [1]
    for key in ("G", "D", "G_ema"):
        for name, value in full[key].items():
            assert torch.equal(end[key][name], value), (key, name)
    assert end["opt_G"]["state"][0]["exp_avg"].equal(full["opt_G"]["state"][0]["exp_avg"])
    # without the RNG state (an older checkpoint) the run goes on, with other noise
    start.pop("rng")
    _, other = _run(cfg, prepared / "train.npz", from_state=start)
    assert not torch.equal(other["G"]["fc.weight"], full["G"]["fc.weight"])


def test_non_finite_losses_raise(tiny_cfg, prepared, tmp_path):
    x, y = load_split(prepared / "train.npz")
    x = x.clone()
    x[::3] = float("nan")  # corrupted data: a real way for the losses to turn NaN
    save_split(tmp_path / "bad.npz", x.numpy(), y.numpy())
    with pytest.raises(DivergedError, match="non-finite at epoch 1"):
        _run(tiny_cfg, tmp_path / "bad.npz")


def test_ema_half_life_and_ramp_up():
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    ema = make_ema(lin, halflife_kimg=1.0, rampup=None, batch_size=100)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update_parameters(lin)  # the first update copies: the initial weights drop out
    assert ema.module.weight.item() == pytest.approx(1.0)
    with torch.no_grad():
        lin.weight.fill_(2.0)
    ema.update_parameters(lin)
    beta = 0.5 ** (100 / 1000)  # half-life 1,000 images, 100 per step
    assert ema.module.weight.item() == pytest.approx(beta * 1.0 + (1 - beta) * 2.0, rel=1e-6)
    for _ in range(9):  # ten steps of 100 = one half-life: the distance to 2.0 halves
        ema.update_parameters(lin)
    assert ema.module.weight.item() == pytest.approx(2.0 - 0.5 * 1.0, rel=1e-5)

    # ramp-up: after one step of 100 images the half-life is at most 0.05 x 100 = 5 images
    ramped = make_ema(lin, halflife_kimg=10.0, rampup=0.05, batch_size=100)
    ramped.update_parameters(lin)
    with torch.no_grad():
        lin.weight.fill_(3.0)
    ramped.update_parameters(lin)
    assert ramped.module.weight.item() == pytest.approx(3.0 - 0.5 ** 20, rel=1e-6)


@pytest.mark.parametrize("loss", ["hinge", "wgan-gp"])
def test_other_losses_and_linear_lr_decay(tiny_cfg, prepared, loss):
    cfg = replace(tiny_cfg, train={"loss": loss, "lr_decay": "linear", "n_dis": 2, "epochs": 2})
    reports, state = _run(cfg, prepared / "train.npz")
    assert all(np.isfinite([m["loss_d"], m["loss_g"]]).all() for m, _ in reports)
    # epoch 2 of 2 trains at half the base rate
    assert state["opt_G"]["param_groups"][0]["lr"] == pytest.approx(cfg.train.lr_g / 2)
    assert state["opt_D"]["param_groups"][0]["lr"] == pytest.approx(cfg.train.lr_d / 2)
    # n_dis = 2: G took half as many steps as D
    assert state["opt_G"]["state"][0]["step"].item() * 2 == state["step"]


@pytest.mark.parametrize("setting, device, batch, expected", [
    ("auto", "cuda", 256, True), ("auto", "cuda", 255, False), ("auto", "cpu", 1024, False),
    (True, "cpu", 8, True), (False, "cuda", 1024, False)])
def test_mixed_precision_auto_rule(setting, device, batch, expected):
    """auto: bf16 on CUDA only from 256 images per worker (slower below, bench/gpu.py)."""
    from resgan.training.loop import use_mixed_precision

    assert use_mixed_precision(setting, device, batch) is expected


@pytest.mark.parametrize("loss", ["bce", "wgan-gp"])
def test_mixed_precision_path(tiny_cfg, prepared, loss):
    """The GPU path (bf16 autocast, channels-last), forced on the CPU: it trains, the
    weights stay float32, and it differs from the float32 run only by rounding."""
    cfg = replace(tiny_cfg, train={"epochs": 1, "loss": loss})
    _, ref = _run(cfg, prepared / "train.npz")
    reports, fast = _run(replace(cfg, train={"mixed_precision": True}), prepared / "train.npz")
    assert np.isfinite([reports[0][0]["loss_d"], reports[0][0]["loss_g"]]).all()
    w, w_ref = fast["G"]["fc.weight"], ref["G"]["fc.weight"]
    assert w.dtype == torch.float32
    assert not torch.equal(w, w_ref)  # bf16 arithmetic really ran
    assert (w - w_ref).abs().max() < 0.05 * w_ref.abs().max()  # and stayed close
