"""Benchmark (d): the evaluate stage's FID against writing PNGs and running pytorch-fid.

The same generator (outputs/train/generator.pt), the same N samples (seed eval.seed), the
same Inception weights and the same real statistics (.npz), side by side:
  evaluate: sample in memory -> pytorch-fid's InceptionV3 -> Fréchet distance;
  by hand:  write the N samples as PNG files, then `python -m pytorch_fid PNGS stats.npz`.
Prints both FIDs, their relative difference (PNG files quantise to 8 bits) and the wall
time ratio. Without the published Inception weights in the torch hub cache, pass
--inception-weights FILE, or --offline-weights to make a stand-in (random weights with
batch-norm statistics from the real images: FIDs not comparable with papers, timing real).
Run after `make run`:  .venv/bin/python bench/evaluate_vs_cli.py [--n 1000] [--dims 192]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from resgan.stage import read_params  # noqa: E402

from resgan.data import load_split  # noqa: E402
from resgan.machine import describe  # noqa: E402
from resgan.metrics.features import (INCEPTION_FILE, build_extractor, extract_all,  # noqa: E402
                                     save_offline_inception)
from resgan.metrics.fid import feature_stats, fid_of_generator, load_stats, save_stats  # noqa: E402
from resgan.nets import sample  # noqa: E402
from resgan.training import checkpoint as ckpt_io  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="samples (default: %(default)s)")
    ap.add_argument("--dims", type=int, default=192, choices=(64, 192, 768, 2048),
                    help="Inception feature dims, as pytorch-fid's --dims (default: %(default)s; "
                         "2048 needs more than 2048 real images and samples)")
    ap.add_argument("--prepared", default="outputs/prepare")
    ap.add_argument("--generator", default="outputs/train/generator.pt")
    ap.add_argument("--inception-weights", help="pt_inception-2015-12-05 weights file")
    ap.add_argument("--offline-weights", action="store_true", help="make a stand-in (see above)")
    args = ap.parse_args()
    e = read_params().eval
    tmp = Path(tempfile.mkdtemp(prefix="resgan-bench-"))
    x, _ = load_split(f"{args.prepared}/train.npz")
    weights = args.inception_weights
    if args.offline_weights:
        weights = str(save_offline_inception(tmp / "hub" / "checkpoints" / INCEPTION_FILE, x[:64]))
    bs = 50  # pytorch-fid's default batch size, for both
    extractor = build_extractor("inception", inception_weights=weights, dims=args.dims)
    save_stats(tmp / "real.npz", *feature_stats(extract_all(extractor, x.split(bs))))  # once, untimed
    G = ckpt_io.generator_from(ckpt_io.load(args.generator))

    t0 = time.perf_counter()
    ours = fid_of_generator(G, extractor, load_stats(tmp / "real.npz"), args.n, seed=e.seed, batch_size=bs)
    t_ours = time.perf_counter() - t0

    # the same samples rounded to 8 bits as a PNG stores them: isolates the quantisation
    class Rounded(torch.nn.Module):
        def __init__(self, G):
            super().__init__()
            self.G, self.z_dim = G, G.z_dim

        def forward(self, z):
            return torch.round((self.G(z).clamp(-1, 1) + 1) * 127.5) / 127.5 - 1

    rounded = fid_of_generator(Rounded(G), extractor, load_stats(tmp / "real.npz"), args.n,
                               seed=e.seed, batch_size=bs)

    t0 = time.perf_counter()
    from torchvision.utils import save_image

    pngs = tmp / "samples"
    pngs.mkdir()
    for i, img in enumerate(sample(G, args.n, seed=e.seed, batch_size=bs)):
        save_image(img, pngs / f"{i:05d}.png", normalize=True, value_range=(-1, 1))
    t_write = time.perf_counter() - t0
    env = None
    if weights:  # pytorch-fid reads the weights from the hub cache only
        import os

        home = tmp / "torch_home"
        (home / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
        link = home / "hub" / "checkpoints" / INCEPTION_FILE
        link.unlink(missing_ok=True)
        link.symlink_to(Path(weights).resolve())
        env = {**os.environ, "TORCH_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "pytorch_fid", "--device", "cpu", "--batch-size", str(bs),
                          "--num-workers", "0", "--dims", str(args.dims), str(pngs), str(tmp / "real.npz")],
                         capture_output=True, text=True, env=env, check=True)
    t_cli = time.perf_counter() - t0
    cli = float(out.stdout.split("FID:")[-1].split()[0])
    print(f"\n{describe()}; {args.n} samples of G_ema, Inception {args.dims}-d, batch {bs}"
          f"{', stand-in Inception weights' if args.offline_weights else ''}\n")
    print("| path | FID | wall time |")
    print("| --- | ---: | ---: |")
    print(f"| evaluate stage (in memory) | {ours:.4f} | {t_ours:.1f} s |")
    print(f"| PNG files + `python -m pytorch_fid` | {cli:.4f} | {t_cli:.1f} s "
          f"({t_write:.1f} s writing PNGs) |")
    print(f"| evaluate stage on the samples rounded to 8 bits | {rounded:.4f} | |")
    print(f"\nrelative FID difference evaluate vs by hand {abs(ours - cli) / cli:.2e}, "
          f"8-bit-rounded evaluate vs by hand {abs(rounded - cli) / cli:.2e}; "
          f"time ratio by hand / evaluate {t_cli / t_ours:.2f}")


if __name__ == "__main__":
    main()
