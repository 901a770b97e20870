"""Benchmark (h): two trainings on one machine at once, with and without core sharing.

Two pipelines at once (`dvc queue start -j 2`, two checkouts) run their train stages side by
side, each asking for every core. This runs the Ray-free loop (the train stage's model, data
and batch; params.yaml with tune's values) in two processes started together, each with
torch's default threads (every core): with resgan's core sharing (resgan.runtime.cpu_share,
the default) and with ``RESGAN_CPU_SHARE=off``; and one process alone before and after, the
baseline. Images/s are the loop's own per-epoch figures, mean over epochs 2..N.
Run after `make run`:  .venv/bin/python bench/two_at_once.py [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

from resgan.config import replace
from resgan.machine import describe
from resgan.stage import read_params
from resgan.training.job import with_choice


def child(epochs: int, data: str) -> None:
    from throughput import plain  # bench/ is on sys.path when run as a script

    cfg = read_params()
    cfg = with_choice(cfg)
    cfg = replace(cfg, train={"epochs": epochs, "checkpoint_every": epochs, "sample_every": epochs})
    ips, wall = plain(cfg, data, torch.get_num_threads())
    print(json.dumps({"images_per_s": ips, "wall_s": wall}), flush=True)


def together(n: int, epochs: int, data: str, share: bool) -> list[dict]:
    env = {**os.environ, "RESGAN_CPU_SHARE": "on" if share else "off"}
    procs = [subprocess.Popen([sys.executable, __file__, "--child", "--epochs", str(epochs),
                               "--prepared", data], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"a training process failed (exit {p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--prepared", default="outputs/prepare")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    data = args.prepared if args.prepared.endswith(".npz") else f"{args.prepared}/train.npz"
    if args.child:
        child(args.epochs, data)
        return
    alone = together(1, args.epochs, data, share=True)
    shared = together(2, args.epochs, data, share=True)
    unshared = together(2, args.epochs, data, share=False)
    alone += together(1, args.epochs, data, share=True)
    base = sum(r["images_per_s"] for r in alone) / len(alone)
    print(f"\n{describe()}; {args.epochs} epochs per run, torch's default {torch.get_num_threads()} threads asked by each\n")
    print("| set-up | images/s of each | together | × one alone | wall time of each |")
    print("| --- | --- | ---: | ---: | --- |")
    print(f"| one training alone (2 runs, mean) | {base:.0f} | {base:.0f} | 1.00 | "
          + ", ".join(f"{r['wall_s']:.1f} s" for r in alone) + " |")
    for name, rows in (("two at once, cores shared (the default)", shared),
                       ("two at once, `RESGAN_CPU_SHARE=off`", unshared)):
        tot = sum(r["images_per_s"] for r in rows)
        print(f"| {name} | " + ", ".join(f"{r['images_per_s']:.0f}" for r in rows)
              + f" | {tot:.0f} | {tot / base:.2f} | " + ", ".join(f"{r['wall_s']:.1f} s" for r in rows) + " |")


if __name__ == "__main__":
    main()
