"""Benchmark (l): how far a training step is from the machine's limit, and the CPU levers.

Measures, side by side in one process:
1. the machine's fp32 matmul peak (``torch.mm`` of square matrices, every thread torch
   uses; the best of several repetitions): the most FLOP/s these cores give a dense kernel;
2. the FLOPs of one training step of G and D as the train stage's loop takes it (a D step on
   a real and a generated batch in one, then a G step on new noise, BCE), counted by ``torch.utils.flop_counter.FlopCounterMode``
   (convolutions and matrix products, forward and backward);
3. a plain PyTorch loop of those steps (Adam, no EMA, no data loading), timed with each
   lever: channels-last memory format, one thread against all, a batch of 128 against 64,
   and ``torch.compile`` (``--compile``): images/s and achieved FLOP/s as a share of the peak.
The train stage's own images/s (printed by `dvc repro`, e.g. 499 for configs/mnist16.yaml
on a 2-core machine) times the FLOPs per image gives its share of the peak too.

    .venv/bin/python bench/flops.py --resolution 16 --depth 1 --channels 32
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from resgan.losses import bce_d, bce_g
from resgan.machine import describe
from resgan.nets.models import Discriminator, Generator


def matmul_peak(n: int, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def models(a, channels_last: bool = False):
    torch.manual_seed(0)
    G = Generator(z_dim=a.z_dim, channels=a.channels, depth=a.depth, resolution=a.resolution)
    D = Discriminator(channels=a.channels, depth=a.depth, resolution=a.resolution)
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    return G, D


def make_step(G, D, batch: int, z_dim: int, resolution: int, channels_last: bool):
    opt_g = torch.optim.Adam(G.parameters(), 1e-3, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), 1e-3, betas=(0.0, 0.9))
    real = torch.rand(batch, 1, resolution, resolution) * 2 - 1
    if channels_last:
        real = real.contiguous(memory_format=torch.channels_last)

    def step():  # as resgan.training.loop does it: D on real and fake in one batch, then G
        with torch.no_grad():
            fake = G(torch.randn(batch, z_dim))
        logits = D(torch.cat([real, fake]))
        loss_d = bce_d(logits[:batch], logits[batch:])
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = bce_g(D(G(torch.randn(batch, z_dim))))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    return step


def step_flops(a, batch: int) -> int:
    G, D = models(a)
    step = make_step(G, D, batch, a.z_dim, a.resolution, False)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def images_per_s(a, *, batch: int, threads: int, channels_last: bool, compile_: bool) -> float:
    torch.set_num_threads(threads)
    G, D = models(a, channels_last)
    if compile_:
        G, D = torch.compile(G), torch.compile(D)
    step = make_step(G, D, batch, a.z_dim, a.resolution, channels_last)
    for _ in range(3):  # warm-up (and compilation)
        step()
    n = max(5, a.images // batch)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--z-dim", type=int, default=64)
    ap.add_argument("--images", type=int, default=6400, help="images timed per setting (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="repetitions of the baseline/lever alternation")
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile'd G and D (contiguous and channels-last)")
    ap.add_argument("--levers", default="channels-last,one thread,batch 128",
                    help="the other levers to time, comma-separated (default: %(default)s)")
    ap.add_argument("--stage-ips", type=float, help="the train stage's images/s, to place it too")
    a = ap.parse_args()
    threads = torch.get_num_threads()
    peak = max(matmul_peak(1024), matmul_peak(2048))
    flops64 = step_flops(a, 64) / 64
    print(f"{describe()}; {threads} threads")
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s; a training step (D then G, depth "
          f"{a.depth}, {a.channels} channels, {a.resolution} px): {flops64 / 1e6:.1f} MFLOP per image",
          flush=True)
    settings = [("baseline: batch 64, all threads", dict(batch=64, threads=threads, channels_last=False, compile_=False)),
                ("channels-last", dict(batch=64, threads=threads, channels_last=True, compile_=False)),
                ("one thread", dict(batch=64, threads=1, channels_last=False, compile_=False)),
                ("batch 128", dict(batch=128, threads=threads, channels_last=False, compile_=False))]
    wanted = {x.strip() for x in a.levers.split(",") if x.strip()}
    settings = settings[:1] + [s for s in settings[1:] if s[0] in wanted]
    if a.compile:
        settings.append(("torch.compile", dict(batch=64, threads=threads, channels_last=False, compile_=True)))
        settings.append(("torch.compile, channels-last",
                         dict(batch=64, threads=threads, channels_last=True, compile_=True)))
    rows = []
    for name, kw in settings[1:]:
        base, lever = [], []
        for _ in range(a.rounds):  # alternate, so a change of the CPUs' speed hits both
            base.append(images_per_s(a, **settings[0][1]))
            lever.append(images_per_s(a, **kw))
        rows.append((name, sum(lever) / len(lever), sum(base) / len(base)))
        print(f"  {name}: {rows[-1][1]:.0f} images/s against {rows[-1][2]:.0f}", flush=True)
    base = sum(r[2] for r in rows) / len(rows)
    print("\n| setting | images/s | × baseline (same rounds) | GFLOP/s | share of the matmul peak |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| baseline: batch 64, {threads} threads, plain loop | {base:.0f} | 1.00 | "
          f"{base * flops64 / 1e9:.2f} | {base * flops64 / peak:.1%} |")
    for name, ips, b in rows:
        print(f"| {name} | {ips:.0f} | {ips / b:.2f} | {ips * flops64 / 1e9:.2f} | {ips * flops64 / peak:.1%} |")
    if a.stage_ips:
        print(f"| the train stage (as printed) | {a.stage_ips:.0f} | {a.stage_ips / base:.2f} | "
              f"{a.stage_ips * flops64 / 1e9:.2f} | {a.stage_ips * flops64 / peak:.1%} |")


if __name__ == "__main__":
    main()
