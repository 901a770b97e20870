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


def _fid(args: argparse.Namespace) -> None:
    from resgan.metrics.fid import calculate_frechet_distance, save_stats
    from resgan.metrics.paths import features_of_path, stats_of_features, stats_of_path

    device = args.device or ("cuda" if _cuda() else "cpu")
    kw = dict(features=args.features, dims=args.dims, batch_size=args.batch_size, device=device,
              num_workers=args.num_workers, classifier=args.classifier,
              inception_weights=args.inception_weights)
    if args.save_stats:
        if args.kid or args.prc:
            sys.exit("error: --save-stats writes statistics only: drop --kid and --prc")
        if args.paths[0].endswith(".npz"):
            sys.exit("error: --save-stats: the first path must be a folder of images")
        mu, sigma, n = stats_of_path(args.paths[0], **kw)
        save_stats(args.paths[1], mu, sigma)
        print(f"saved statistics of {n} images ({args.features} features) to {args.paths[1]}",
              file=sys.stderr)
        return
    if args.kid or args.prc:  # these need the features themselves, not only their statistics
        f1, f2 = (features_of_path(p, **kw) for p in args.paths)
        (m1, s1), (m2, s2) = (stats_of_features(f, args.features) for f in (f1, f2))
        n1, n2 = len(f1), len(f2)
    else:
        (m1, s1, n1), (m2, s2, n2) = (stats_of_path(p, **kw) for p in args.paths)
    if m1.shape != m2.shape:
        sys.exit(f"error: feature dims differ: {m1.shape[0]} vs {m2.shape[0]} "
                 "(statistics from another extractor or --dims?)")
    fid = calculate_frechet_distance(m1, s1, m2, s2)
    counts = ", ".join("npz" if n is None else f"{n} images" for n in (n1, n2))
    print(f"{args.features} features, {m1.shape[0]} dims, {counts}", file=sys.stderr)
    print(f"FID:  {fid}")  # the line pytorch-fid prints
    if args.kid:
        from resgan.metrics.extra import kid

        mean, std = kid(f1, f2, device=device)
        print(f"KID:  {mean} ± {std}")
    if args.prc:
        from resgan.metrics.extra import precision_recall

        precision, recall = precision_recall(f1, f2, device=device)  # the first PATH is real
        print(f"Precision:  {precision}")
        print(f"Recall:  {recall}")


def _require_store() -> None:
    """Refuse to act on an embedded store that does not exist (MLflow would create one)."""
    from resgan import tracking

    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        sys.exit(f"error: no MLflow store at {uri}: run the pipeline first (`make run`), run "
                 "this in its workspace, or set MLFLOW_TRACKING_URI")


def _promote(args: argparse.Namespace) -> None:
    from resgan import registry

    _require_store()

    d = registry.promote(args.name, args.version, reason=args.reason)
    before = d.champion_version_before or "none"
    print(f"{args.name}: champion is now version {d.version} (was {before}); "
          f"{registry.PREVIOUS} = {before if before != d.version else 'unchanged'}")


def _rollback(args: argparse.Namespace) -> None:
    from resgan import registry

    _require_store()

    d = registry.rollback(args.name)
    print(f"{args.name}: rolled back: champion is now version {d.version}, "
          f"{registry.PREVIOUS} = {d.champion_version_before or 'none'} "
          f"(`resgan rollback {args.name}` again undoes this)")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _versions() -> str:
    """resgan's version and those of the libraries a bug report needs (read from the installed
    packages' metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from resgan import __version__

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libs = ", ".join(f"{n} {v(n)}" for n in ("torch", "ray", "mlflow", "dvc", "pytorch-fid"))
    return f"resgan {__version__} ({libs}; Python {sys.version.split()[0]})"


class _Version(argparse.Action):
    """--version on one line (argparse's own action wraps it at the terminal's width)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_versions())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="resgan", description="Residual GAN pipeline tools (the pipeline itself runs with "
        "`dvc repro`; see README.md).")
    ap.add_argument("--version", action=_Version, help="print the versions of resgan and its "
                    "libraries and exit")
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

    f = sub.add_parser("fid", help="FID (and KID, precision/recall) between two sets of images",
                       description="FID between two inputs, each a folder of images, an .npz "
                       "file of statistics (mu, sigma) in pytorch-fid's format, or a .npy of "
                       "features (prepare writes <stats>.features.npy next to its statistics). "
                       "With the default Inception features this runs pytorch-fid's own code "
                       "and prints the same FID as `python -m pytorch_fid`. --kid and --prc "
                       "need the features: "
                       "folders or .npy, not .npz.")
    f.add_argument("paths", nargs=2, metavar="PATH",
                   help="folder of images, .npz statistics or .npy features; with --prc the "
                   "first is the real set, the second the generated one")
    f.add_argument("--features", choices=["inception", "classifier"], default="inception",
                   help="feature extractor (default inception)")
    f.add_argument("--classifier", default=None,
                   help="classifier file for --features classifier (outputs/prepare/features/classifier.pt)")
    f.add_argument("--inception-weights", default=None,
                   help="pt_inception-2015-12-05-6726825d.pth (default: the torch hub cache)")
    f.add_argument("--dims", type=int, default=2048, choices=[64, 192, 768, 2048],
                   help="Inception feature dims (default 2048, pool3)")
    f.add_argument("--batch-size", type=int, default=50, help="batch size (default 50)")
    f.add_argument("--device", default=None, help="cpu, cuda, cuda:0 (default: cuda if available)")
    f.add_argument("--num-workers", type=int, default=0, help="image loading processes (default 0)")
    f.add_argument("--save-stats", action="store_true",
                   help="write the statistics of the first path (a folder) to the second (.npz)")
    f.add_argument("--kid", action="store_true",
                   help="also print KID: the unbiased MMD^2 with the cubic polynomial kernel, "
                   "mean ± std over 100 random subsets of min(1000, N) features")
    f.add_argument("--prc", action="store_true",
                   help="also print precision (share of the second PATH inside the first's "
                   "k-NN manifold, k=3: quality) and recall (share of the first PATH inside "
                   "the second's: coverage); the first PATH is the real set")
    f.set_defaults(func=_fid)

    store = ("The registry is MLFLOW_TRACKING_URI's, else the embedded store "
             "sqlite:///mlruns/mlflow.db of the current DVC workspace.")
    p = sub.add_parser("promote", help="make a registered version the champion by hand",
                       description="Move alias 'champion' of model NAME to VERSION; the version "
                       "it replaces keeps alias 'previous-champion'. Recorded on the version as a "
                       "manual decision (who, when, why). " + store)
    p.add_argument("name", help="registered model name (register.model_name, e.g. resgan)")
    p.add_argument("version", help="model version number")
    p.add_argument("--reason", default="", help="why, recorded on the version")
    p.set_defaults(func=_promote)
    r = sub.add_parser("rollback", help="give 'champion' back to 'previous-champion'",
                       description="Move alias 'champion' of model NAME back to the version "
                       "holding 'previous-champion'; the demoted version then holds "
                       "'previous-champion', so a second rollback undoes the first. " + store)
    r.add_argument("name", help="registered model name")
    r.set_defaults(func=_rollback)
    return ap


def main(argv: list[str] | None = None) -> None:
    from resgan.errors import ResganError
    from resgan.tracking import move_credentials

    args = build_parser().parse_args(argv)
    try:
        move_credentials()  # before anything can print the tracking URI
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    if getattr(args, "count", 1) < 1:
        sys.exit("error: --count must be at least 1")
    try:
        args.func(args)
    except (ResganError, OSError) as exc:  # OSError: a file not found or not readable
        sys.exit(f"error: {exc}")
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            sys.exit(f"error: {exc.message}")
        raise


if __name__ == "__main__":
    main()
