"""The per-worker loop in a plain process (world size 1), as a GPU machine without Ray runs it."""

import numpy as np
import pytest
import torch

from resgan.config import replace
from resgan.data import load_split, save_split
from resgan.training import checkpoint as ckpt_io
from resgan.training.loop import DivergedError, FidRef, fit, make_ema


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


def test_resume_continues_from_the_checkpoint(tiny_cfg, prepared):
    cfg = replace(tiny_cfg, train={"epochs": 3})
    reports, full = _run(cfg, prepared / "train.npz")
    first = reports[0][1]  # the state after epoch 1
    resumed, end = _run(cfg, prepared / "train.npz", start=first)
    assert [m["epoch"] for m, _ in resumed] == [2, 3]
    assert end["step"] == full["step"]
    assert end["opt_G"]["state"][0]["step"].item() == full["opt_G"]["state"][0]["step"].item()


def test_non_finite_losses_raise(tiny_cfg, prepared, tmp_path):
    x, y = load_split(prepared / "train.npz")
    x = x.clone()
    x[::3] = float("nan")  # corrupted data: a real way for the losses to turn NaN
    save_split(tmp_path / "bad.npz", x.numpy(), y.numpy())
    with pytest.raises(DivergedError, match="non-finite at epoch 1"):
        _run(tiny_cfg, tmp_path / "bad.npz")


def test_ema_ramp_up():
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    ema = make_ema(lin, decay=0.999)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update_parameters(lin)  # the first update copies: the initial weights drop out
    assert ema.module.weight.item() == pytest.approx(1.0)
    with torch.no_grad():
        lin.weight.fill_(2.0)
    ema.update_parameters(lin)  # n=1: decay = min(0.999, 2/11)
    d = 2 / 11
    assert ema.module.weight.item() == pytest.approx(d * 1.0 + (1 - d) * 2.0, rel=1e-6)
