"""Ray Train's local mode: `train.num_workers: auto` on one machine without GPUs trains in the
stage's own process (no Ray started), keeping and resuming its checkpoints itself."""

from __future__ import annotations

import torch

from resgan.config import replace
from resgan.training import checkpoint as ckpt_io


def _weights_equal(a, b):
    for key in ("G", "D", "G_ema"):
        for name, w in a[key].items():
            assert torch.equal(b[key][name], w), (key, name)


def test_auto_on_a_machine_of_its_own_is_local_mode(tiny_cfg, monkeypatch):
    from resgan.runtime.cpu_share import machine_cores
    from resgan.training.ray_train import place

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    where = place(replace(tiny_cfg, train={"num_workers": "auto", "use_gpu": False}).train)
    assert (where.workers, where.cpus, where.use_gpu) == (0, machine_cores(), False)
    assert str(where) == f"Ray Train local mode: this process, {machine_cores()} thread(s)"
    if not torch.cuda.is_available():  # use_gpu auto: no GPU here, so local mode too
        assert place(replace(tiny_cfg, train={"num_workers": "auto"}).train).workers == 0


def test_keep_and_newest(tmp_path):
    root = str(tmp_path / "run")
    assert ckpt_io.newest(root) is None  # no folder yet
    for epoch in (2, 10, 4):
        path = ckpt_io.keep(root, {"epoch": epoch, "w": torch.full((2,), float(epoch))})
        assert path == f"{root}/checkpoint_{epoch:06d}"
    assert ckpt_io.newest(root) == f"{root}/checkpoint_000010"  # by epoch, not by write order
    assert ckpt_io.load(ckpt_io.newest(root))["w"].tolist() == [10.0, 10.0]
    # a checkpoint whose file never landed (killed mid-write) is passed over
    (tmp_path / "run" / "checkpoint_000012").mkdir()
    (tmp_path / "run" / "checkpoint_000012" / "checkpoint.pt.part").write_bytes(b"half")
    assert ckpt_io.newest(root) == f"{root}/checkpoint_000010"
    assert [p.name for p in (tmp_path / "run").rglob("*.part")] == ["checkpoint.pt.part"]  # that one only


def test_local_mode_trains_here_and_resumes_as_if_never_stopped(tiny_cfg, prepared, tmp_path):
    """A local-mode run stopped after epoch 2 and started again under the same name resumes
    from its own checkpoint and ends bit for bit where an uninterrupted run ends; no Ray
    runtime is started for either."""
    import ray

    from resgan.training.ray_train import make_trainer
    from resgan.training.loop import fit

    cfg = replace(tiny_cfg, train={"epochs": 4, "checkpoint_every": 2, "num_workers": "auto"})
    data = str(prepared / "train.npz")
    storage = str(tmp_path / "ray")
    started = ray.is_initialized()
    threads = torch.get_num_threads()

    def run(name, stop=None):
        trainer = make_trainer(cfg, data_path=data, fid_ref=None, name=name, storage=storage,
                               num_workers=0, cpus_per_worker=1, use_gpu=False, stop_epoch=stop)
        with trainer.fit().checkpoint.as_directory() as d:
            return ckpt_io.load(d)

    first = run("again", stop=2)
    assert first["epoch"] == 2
    assert sorted(p.name for p in (tmp_path / "ray" / "again").iterdir()) == ["checkpoint_000002"]
    resumed = run("again")
    assert resumed["epoch"] == 4 and resumed["resumed_from"] == [2]
    assert sorted(p.name for p in (tmp_path / "ray" / "again").iterdir()) == [
        "checkpoint_000002", "checkpoint_000004"]
    before = torch.get_num_threads()
    assert before == threads  # local mode gave the caller's threads back
    torch.set_num_threads(1)
    try:
        whole = fit(cfg, data_path=data, report=lambda m, s: None)
    finally:
        torch.set_num_threads(before)
    _weights_equal(whole, resumed)
    assert ray.is_initialized() == started  # local mode started no Ray

