"""The ``resgan`` command: user-facing actions on trained generators."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _sample(args: argparse.Namespace) -> None:
    import torch
    from torchvision.utils import save_image

    from resgan.registry import load_generator

    G, z_dim = load_generator(args.source)
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.count, z_dim, generator=gen)
    with torch.no_grad():
        imgs = torch.cat([G(zb) for zb in z.split(256)])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_image(imgs, args.out, nrow=args.nrow or max(1, int(args.count ** 0.5)),
               normalize=True, value_range=(-1, 1))
    print(f"wrote {args.count} samples from {args.source} to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="resgan", description="Residual GAN pipeline tools (the pipeline itself runs with "
        "`dvc repro`; see README.md).")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="write an image grid from a generator",
                       description="Write a grid of generated images. SOURCE is a checkpoint "
                       "or generator file (outputs/train/generator.pt, a Ray checkpoint's "
                       "checkpoint.pt) or an MLflow model URI such as models:/resgan@champion. "
                       "MLflow URIs use MLFLOW_TRACKING_URI, else the embedded store "
                       "sqlite:///mlruns/mlflow.db in the current directory.")
    s.add_argument("source", help="checkpoint path or MLflow model URI")
    s.add_argument("-o", "--out", default="samples.png", help="PNG to write (default samples.png)")
    s.add_argument("-n", "--count", type=int, default=64, help="number of images (default 64)")
    s.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    s.add_argument("--nrow", type=int, default=None, help="images per grid row (default sqrt(count))")
    s.set_defaults(func=_sample)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if getattr(args, "count", 1) < 1:
        sys.exit("error: --count must be at least 1")
    try:
        args.func(args)
    except (FileNotFoundError, OSError) as exc:
        sys.exit(f"error: {exc}")
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            sys.exit(f"error: {exc.message}")
        raise


if __name__ == "__main__":
    main()
