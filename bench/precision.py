"""Benchmark (o): where a generator's missing precision is: truncation against the samples.

Precision (the share of samples inside the real images' k-NN manifold) below what held-out
real images score can mean two things: samples from the tails of the latent distribution
fall off the manifold (then truncation, sampling z * psi with psi < 1, trades recall for
precision, as in BigGAN), or the generator's typical samples are malformed (then precision
stays where it is at any psi). This scores one generator file as the evaluate stage does
(eval.* of params.yaml: extractor, sample count, eval.repeats sample seeds; FID also at
prepare's held-out count, as a ratio to the copier reference) for each psi, beside what
the held-out real images score.

Run after `dvc repro` (or on any generator file):
    .venv/bin/python bench/precision.py outputs/train/generator.pt --psi 1 0.8 0.6 0.4
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from resgan.machine import describe
from resgan.metrics.scoring import Scorer
from resgan.nets import sample
from resgan.stage import read_json, read_params
from resgan.training import checkpoint as ckpt_io


class Truncated(torch.nn.Module):
    """G with its latent scaled by psi (linear truncation toward the mean latent, 0)."""

    def __init__(self, G: torch.nn.Module, psi: float):
        super().__init__()
        self.G, self.psi, self.z_dim = G, psi, G.z_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z * self.psi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("generator", help="a generator file (as outputs/train/generator.pt)")
    ap.add_argument("--psi", type=float, nargs="+", default=[1.0, 0.8, 0.6, 0.4],
                    help="latent scales to score (default: %(default)s)")
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--out", help="also write the rows here as JSON")
    a = ap.parse_args()
    e = read_params().eval
    G = ckpt_io.generator_from(ckpt_io.load(a.generator)).eval()
    prep = read_json(f"{a.prepared}/metrics.json")
    scorer = Scorer.from_eval(a.prepared, e)
    at_floor = scorer.with_samples(prep["floor_samples"])
    real = scorer.real_baseline()
    print(f"{describe()}; {e.features} features, {e.num_samples} samples x {e.repeats} seeds; "
          f"held-out real images: precision {real['precision_real']:.3f}, "
          f"recall {real['recall_real']:.3f}", flush=True)
    # pixel statistics: a generator whose background or ink level is off would fail here
    x = torch.from_numpy(np.load(f"{a.prepared}/test.npz")["x"]).float()
    with torch.no_grad():
        g = sample(G, e.num_samples, seed=e.seed)
    pixels = {name: {"background": float((v < -0.99).float().mean()), "mean": float(v.mean())}
              for name, v in (("real", x), ("generated", g))}
    print("pixels below -0.99 (background) and mean pixel: " + "; ".join(
        f"{n} {p['background']:.3f}, {p['mean']:.3f}" for n, p in pixels.items()), flush=True)
    print("| psi | FID (SD over seeds) | x the copier | precision | recall |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for psi in a.psi:
        g = Truncated(G, psi).eval()
        s, f = scorer.score(g), at_floor.score(g, fid_only=True)
        rows.append({"psi": psi, "fid": s.fid, "fid_std": s.fid_std,
                     "x_copier": f.fid / prep["fid_copier"], "precision": s.precision,
                     "recall": s.recall})
        print(f"| {psi:g} | {s.fid:.2f} ({s.fid_std:.2f}) | {f.fid / prep['fid_copier']:.2f} | "
              f"{s.precision:.3f} | {s.recall:.3f} |", flush=True)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"generator": a.generator, "real": real, "pixels": pixels, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
