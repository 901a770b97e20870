"""Benchmark (e): GPU throughput of the Ray-free training loop against a plain PyTorch loop.

Side by side in one process, on one GPU, for two model sizes: the digits' default (8x8,
32 channels) and the CIFAR-10 config's (32x32, 256 channels, configs/cifar10.yaml):

  plain loop     the same G, D, loss, Adam and batch in the loop one writes first: fp32,
                 NCHW, a DataLoader over a CPU tensor, no EMA.
  resgan fp32    resgan.training.loop.fit with train.mixed_precision: false.
  resgan bf16    fit with train.mixed_precision: true (bf16 autocast + channels-last), what
                 `auto` picks on CUDA.

Needs only torch, pydantic and ruamel.yaml (no Ray, MLflow or DVC); the images are random
(throughput does not depend on their content). Images/s are per epoch, mean of epochs 2..N.
Run:  python bench/gpu.py [--epochs 4] [--images 10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from resgan.config import load_config, replace  # noqa: E402
from resgan.data import save_split  # noqa: E402
from resgan.losses import LOSSES  # noqa: E402
from resgan.training.loop import build_models, fit  # noqa: E402


def setups(images: int, epochs: int, batch: int) -> list[tuple[str, object, int]]:
    """(name, config, image channels) for the two sizes."""
    digits = load_config(YAML(typ="safe").load((ROOT / "params.yaml").read_text()))
    cifar = load_config(YAML(typ="safe").load((ROOT / "configs/cifar10.yaml").read_text()))
    common = {"epochs": epochs, "checkpoint_every": epochs, "sample_every": epochs, "lr_g": 2e-4, "lr_d": 2e-4,
              "num_workers": 1, "batch_size": batch}
    return [
        (f"digits 8x8, 32 ch, depth 2, batch {batch}, n_dis 1", replace(digits, model={"depth": 2}, train=common), 1),
        (f"CIFAR 32x32, 256 ch, depth 1, batch {batch}, n_dis 5", replace(cifar, model={"depth": 1}, train=common), 3),
    ]


def plain(cfg, x: torch.Tensor, device: str) -> float:
    """The loop one writes first: fp32, NCHW, DataLoader over a CPU tensor, no EMA."""
    t, dev = cfg.train, torch.device(device)
    torch.manual_seed(t.seed)
    G, D = (m.to(dev) for m in build_models(cfg, x.shape[1]))
    opt_G = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
    opt_D = torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
    loss_d_fn, loss_g_fn = LOSSES[t.loss]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=t.batch_size,
                                         shuffle=True, drop_last=True)
    speeds, step = [], 0
    for _ in range(t.epochs):
        t0, seen = time.perf_counter(), 0
        for (xb,) in loader:
            xb = xb.to(dev)
            z = torch.randn(len(xb), cfg.model.z_dim, device=dev)
            with torch.no_grad():
                fake = G(z)
            logits = D(torch.cat([xb, fake]))
            loss_d = loss_d_fn(logits[: len(xb)], logits[len(xb):])
            opt_D.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_D.step()
            step += 1
            seen += len(xb)
            if step % t.n_dis == 0:
                loss_g = loss_g_fn(D(G(torch.randn(len(xb), cfg.model.z_dim, device=dev))))
                opt_G.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_G.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        speeds.append(seen / (time.perf_counter() - t0))
    return statistics.fmean(speeds[1:])


def resgan(cfg, data: str, mixed: bool, device: str) -> float:
    speeds: list[float] = []
    cfg = replace(cfg, train={"mixed_precision": mixed})
    fit(cfg, data_path=data, report=lambda m, s: speeds.append(m["images_per_s"]), device=device)
    return statistics.fmean(speeds[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--images", type=int, default=10_000, help="random training images per size")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--batch", type=int, nargs="+", default=[64], help="global batch sizes to run")
    ap.add_argument("--only", choices=["digits", "CIFAR"], help="run one of the two sizes")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run of the script itself")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: no CUDA device visible to torch (--device cpu for a smoke run)")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {args.images} images, "
          f"{args.epochs} epochs (mean of 2..{args.epochs})", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        todo = [s for b in args.batch for s in setups(args.images, args.epochs, b)]
        for name, cfg, ch in (s for s in todo if args.only is None or s[0].startswith(args.only)):
            r = cfg.data.resolution
            x = np.random.default_rng(0).uniform(-1, 1, (args.images, ch, r, r)).astype(np.float32)
            data = f"{tmp}/train-{r}.npz"
            save_split(data, x, np.zeros(args.images))
            base = plain(cfg, torch.from_numpy(x), args.device)
            print(f"{name}: plain {base:.0f} img/s", flush=True)
            for how, mixed in (("resgan fp32", False), ("resgan bf16 + channels-last", True)):
                ips = resgan(cfg, data, mixed, args.device)
                print(f"{name}: {how} {ips:.0f} img/s", flush=True)
                rows.append({"setup": name, "path": how, "images_per_s": ips, "x_plain": ips / base})
            rows.append({"setup": name, "path": "plain loop (fp32, NCHW)", "images_per_s": base, "x_plain": 1.0})
    print("\n| size | path | images/s | × plain |\n| --- | --- | ---: | ---: |")
    for row in sorted(rows, key=lambda r: (r["setup"], r["x_plain"] != 1.0)):
        print(f"| {row['setup']} | {row['path']} | {row['images_per_s']:.0f} | {row['x_plain']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
