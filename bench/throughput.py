"""Benchmark (a): training throughput of the Ray Train path against a plain PyTorch loop.

The same model (params.yaml's, with the values tune chose for its "tune" keys), data
(outputs/prepare) and global batch size, side by side in one script: the Ray-free loop in
this process (torch's default threads, and one thread), then Ray Train as the train stage
runs it with `train.num_workers: auto` (here one worker with every CPU), and with 2 one-CPU
workers (DDP). Images/s are the per-epoch figures the loop measures itself (start-up
excluded), mean over epochs 2..N.
Run after `make run`:  .venv/bin/python bench/throughput.py [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from resgan.stage import read_json, read_params  # noqa: E402

from resgan.config import replace  # noqa: E402
from resgan.machine import describe  # noqa: E402
from resgan.training.loop import fit  # noqa: E402


def plain(cfg, data: str, threads: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    speeds = []
    t0 = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fit(cfg, data_path=data, report=lambda m, s: speeds.append(m["images_per_s"]), device=device)
    return statistics.fmean(speeds[1:]), time.perf_counter() - t0


def ray_train(cfg, data: str, workers: int | str, storage: str) -> tuple[float, float]:
    from resgan.training.ray_train import make_trainer, resolve_use_gpu, resolve_workers

    use_gpu = resolve_use_gpu(cfg.train.use_gpu)
    n, cpus = resolve_workers(workers, use_gpu)
    trainer = make_trainer(cfg, data_path=data, fid_ref=None, name=f"bench-{workers}w-{time.time():.0f}",
                           storage=storage, num_workers=n, cpus_per_worker=cpus, use_gpu=use_gpu)
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    speeds = list(result.metrics_dataframe["images_per_s"])  # every epoch checkpoints here
    return statistics.fmean(speeds[1:]), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--prepared", default="outputs/prepare")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    cfg = read_params()
    cfg = cfg.with_tuned(read_json("outputs/tune/best.json")) if cfg.searched() else cfg
    cfg = replace(cfg, train={"epochs": args.epochs, "checkpoint_every": 1, "sample_every": args.epochs})
    data = f"{args.prepared}/train.npz"
    default_threads = torch.get_num_threads()
    rows = [("plain PyTorch loop, 1 process", f"{default_threads} threads", *plain(cfg, data, default_threads)),
            ("plain PyTorch loop, 1 process", "1 thread", *plain(cfg, data, 1))]
    torch.set_num_threads(default_threads)
    from resgan.training.ray_train import init_ray

    init_ray()
    storage = str(Path(".ray_results").resolve())
    from resgan.training.ray_train import resolve_workers

    n, cpus = resolve_workers("auto", False)
    rows.append(("Ray Train, `num_workers: auto`", f"{n} worker x {cpus:g} CPUs",
                 *ray_train(cfg, data, "auto", storage)))
    rows.append(("Ray Train (TorchTrainer, DDP)", "2 workers x 1 CPU",
                 *ray_train(replace(cfg, train={"num_workers": 2}), data, 2, storage)))
    base = rows[0][2]
    print(f"\n{describe()}; depth {cfg.model.depth}, {cfg.model.channels} channels, "
          f"{cfg.data.resolution}x{cfg.data.resolution}, batch {cfg.train.batch_size}, {args.epochs} epochs\n")
    print("| path | set-up | images/s | × plain | wall time of the run |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, how, ips, wall in rows:
        print(f"| {name} | {how} | {ips:.0f} | {ips / base:.2f} | {wall:.1f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps([dict(zip(("path", "setup", "images_per_s", "wall_s"), r))
                                               for r in rows], indent=2))


if __name__ == "__main__":
    main()
