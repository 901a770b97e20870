"""Benchmark (a): training throughput of the train stage's path against a plain PyTorch loop.

The same model (params.yaml's, with the values tune chose for its "tune" keys), data
(outputs/prepare) and global batch size, side by side in one script: the Ray-free loop in
this process (torch's default threads) alternating ``--rounds`` times with the train stage's
path for `train.num_workers: auto` on this machine (with no GPU and no RAY_ADDRESS: Ray
Train's local mode, the training function in this process with every core, no Ray started),
each compared with the plain runs on either side of it (the CPUs of a shared machine change
speed within minutes); then one Ray Train run with one worker holding every CPU (what
`auto` ran before local mode), the plain loop on one thread and Ray Train with 2 one-CPU
workers (DDP), each against the plain run after it. Images/s are the per-epoch figures the
loop measures itself (start-up excluded), mean over epochs 2..N.
Run after `make run`:  .venv/bin/python bench/throughput.py [--epochs 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from resgan.stage import read_params  # noqa: E402

from resgan.config import replace  # noqa: E402
from resgan.console import parse_epoch_line  # noqa: E402
from resgan.machine import describe  # noqa: E402
from resgan.training.job import with_choice  # noqa: E402
from resgan.training.loop import fit  # noqa: E402


def plain(cfg, data: str, threads: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    speeds = []
    t0 = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fit(cfg, data_path=data, report=lambda m, s: speeds.append(m["images_per_s"]), device=device)
    return statistics.fmean(speeds[1:]), time.perf_counter() - t0


class _Tee(io.StringIO):
    def write(self, s: str) -> int:
        sys.__stdout__.write(s)
        return super().write(s)


def ray_train(cfg, data: str, workers: int, cpus: float, storage: str) -> tuple[float, float]:
    """A TorchTrainer as the train stage makes it; ``workers`` 0: local mode."""
    from resgan.training.ray_train import make_trainer

    trainer = make_trainer(cfg, data_path=data, fid_ref=None, name=f"bench-{workers}w-{time.time():.0f}",
                           storage=storage, num_workers=workers, cpus_per_worker=cpus, use_gpu=False)
    out = _Tee()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        result = trainer.fit()
    wall = time.perf_counter() - t0
    if workers:
        speeds = list(result.metrics_dataframe["images_per_s"])  # every epoch checkpoints here
    else:  # local mode keeps only the last report: its epoch lines, as the stage's console reads them
        lines = (parse_epoch_line(line) for line in out.getvalue().splitlines())
        speeds = [p[2]["images_per_s"] for p in lines if p]
    return statistics.fmean(speeds[1:]), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternations of the plain loop and the train stage's path")
    ap.add_argument("--prepared", default="outputs/prepare")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--stage-only", action="store_true",
                    help="only the alternation of the plain loop and the train stage's path (no "
                         "Ray Train worker, one-thread or DDP rows)")
    args = ap.parse_args()
    cfg = read_params()
    cfg = with_choice(cfg)
    cfg = replace(cfg, train={"epochs": args.epochs, "checkpoint_every": 1, "sample_every": args.epochs,
                              "num_workers": "auto", "use_gpu": False})
    data = f"{args.prepared}/train.npz"
    default_threads = torch.get_num_threads()
    import ray

    from resgan.training.ray_train import place, resolve_workers
    from resgan.runtime.cluster import init_ray

    storage = str(Path(".ray_results").resolve())
    where = place(cfg.train)
    if where.workers:
        raise SystemExit(f"train.num_workers auto is not local mode here ({where}): unset "
                         f"RAY_ADDRESS, run on a machine of its own")
    # These CPUs change speed from minute to minute: the plain loop and the train stage's
    # path alternate, each compared with the plain runs just before and after it.
    plain_runs, auto_runs = [plain(cfg, data, default_threads)], []
    for _ in range(args.rounds):
        auto_runs.append(ray_train(cfg, data, 0, where.cpus, storage))
        plain_runs.append(plain(cfg, data, default_threads))
    ratios = [a[0] / statistics.fmean([plain_runs[i][0], plain_runs[i + 1][0]])
              for i, a in enumerate(auto_runs)]
    print(f"\n{describe()}; depth {cfg.model.depth}, {cfg.model.channels} channels, "
          f"{cfg.data.resolution}x{cfg.data.resolution}, batch {cfg.train.batch_size}, {args.epochs} epochs: "
          f"plain loop {statistics.fmean(r[0] for r in plain_runs):.0f} images/s, the train stage's path "
          f"{statistics.fmean(r[0] for r in auto_runs):.0f}; against the plain runs on either side: "
          + ", ".join(f"{x:.2f}" for x in ratios) + f" (median {statistics.median(ratios):.2f})")
    if args.stage_only:
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"plain": plain_runs, "local_mode": auto_runs, "local_mode_vs_neighbours": ratios}, indent=2))
        return
    # Ray is started for its runs and shut down after, so no plain run shares the cores
    # with an idle Ray.
    init_ray()
    n, cpus = resolve_workers("auto", False)
    one_worker = ray_train(cfg, data, n, cpus, storage)
    ray.shutdown()
    after_one = plain(cfg, data, default_threads)
    plain_runs.append(after_one)
    one_thread = plain(cfg, data, 1)
    torch.set_num_threads(default_threads)
    init_ray()
    ddp = ray_train(replace(cfg, train={"num_workers": 2}), data, 2, 1, storage)
    ray.shutdown()
    last = plain(cfg, data, default_threads)
    base = statistics.fmean(r[0] for r in plain_runs)
    rows = [("plain PyTorch loop, 1 process", f"{default_threads} threads", base,
             statistics.fmean(r[1] for r in plain_runs), f"{len(plain_runs)} runs"),
            ("Ray Train local mode, `num_workers: auto` (the train stage)",
             f"this process, {where.cpus:g} threads",
             statistics.fmean(r[0] for r in auto_runs), statistics.fmean(r[1] for r in auto_runs),
             f"{len(auto_runs)} runs; against the plain runs on either side: "
             + ", ".join(f"{x:.2f}" for x in ratios) + f" (median **{statistics.median(ratios):.2f}**)"),
            ("Ray Train, one worker with every CPU (`auto` before local mode)",
             f"{n} worker x {cpus:g} CPUs", one_worker[0], one_worker[1],
             f"1 run; against the plain run after it: {one_worker[0] / after_one[0]:.2f}"),
            ("plain PyTorch loop, 1 process", "1 thread", one_thread[0], one_thread[1],
             "1 run, against the mean plain run"),
            ("Ray Train (TorchTrainer, DDP)", "2 workers x 1 CPU", ddp[0], ddp[1],
             f"1 run; against the plain run after it: {ddp[0] / last[0]:.2f}")]
    print(f"\n{describe()}; depth {cfg.model.depth}, {cfg.model.channels} channels, "
          f"{cfg.data.resolution}x{cfg.data.resolution}, batch {cfg.train.batch_size}, {args.epochs} epochs\n")
    print("| path | set-up | images/s | × plain (mean) | wall time of a run | runs, × the plain runs beside them |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name, how, ips, wall, note in rows:
        print(f"| {name} | {how} | {ips:.0f} | {ips / base:.2f} | {wall:.1f} s | {note} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"plain": plain_runs, "local_mode": auto_runs, "local_mode_vs_neighbours": ratios,
             "one_worker": one_worker, "one_thread": one_thread, "ddp2": ddp}, indent=2))


if __name__ == "__main__":
    main()
