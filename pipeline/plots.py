"""plots: the last run's plots as PNGs and one HTML page that renders with no network.

Reads the train stage's history.csv, the tune stage's trials.csv and the evaluate stage's
samples.png; writes --out/index.html and its PNGs (losses, FID per epoch and the tune
trials' FID against depth on log scales, the sample grid). `make plots` runs it; open the
page in any browser, offline too. `dvc plots show` draws the same data with Vega (its page
loads Vega from the internet) and can compare experiments (`dvc plots diff`).
"""

from __future__ import annotations

import argparse

from resgan.plots import write_page
from resgan.stage import run


def main() -> str:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--history", default="outputs/train/history.csv")
    ap.add_argument("--trials", default="outputs/tune/trials.csv")
    ap.add_argument("--samples", default="outputs/eval/samples.png")
    ap.add_argument("--out", default="dvc_plots/offline", help="page folder (default: %(default)s)")
    args = ap.parse_args()
    page = write_page(args.out, history=args.history, trials=args.trials, samples=args.samples)
    return f"{page} (no network needed)"


if __name__ == "__main__":
    run(main)
