"""The depth x shortcut ablation: summarise FID per cell and write the report.

``pipeline/ablation.py`` trains every cell of ``model.depth`` x ``model.residual`` x seed
through ``resgan.tuning.run_trials`` (the same Ray Train loop as the pipeline) and hands
the measured cells here. This module is pure: numbers in, Markdown, JSON and PNG out.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Cell:
    """One trained network of the grid."""

    depth: int
    residual: bool
    seed: int
    fid: float  # FID of the final G_ema (eval extractor, eval.num_samples samples)
    images_per_s: float  # training speed of the trial
    status: str  # finished or failed


@dataclass
class Summary:
    """All seeds of one (depth, residual) cell."""

    depth: int
    residual: bool
    n: int  # seeds that finished
    fid_mean: float
    fid_std: float  # sample standard deviation over seeds (NaN for one seed)
    ips_mean: float
    ips_std: float
    failed: int


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def summarise(cells: list[Cell]) -> list[Summary]:
    """Mean and standard deviation over seeds, per (depth, residual), sorted by depth."""
    keys = sorted({(c.depth, c.residual) for c in cells}, key=lambda k: (k[0], not k[1]))
    out = []
    for depth, residual in keys:
        group = [c for c in cells if (c.depth, c.residual) == (depth, residual)]
        ok = [c for c in group if c.status == "finished" and math.isfinite(c.fid)]
        fm, fs = _mean_std([c.fid for c in ok])
        im, is_ = _mean_std([c.images_per_s for c in ok])
        out.append(Summary(depth, residual, len(ok), fm, fs, im, is_, len(group) - len(ok)))
    return out


def _pm(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def comparison(cells: list[Cell]) -> list[dict[str, Any]]:
    """Per depth measured with and without shortcuts: the mean FID difference plain -
    residual, and in how many (residual seed, plain seed) pairs the residual network has the
    lower FID (the Mann-Whitney count). With three seeds a side no test is significant at
    5 %, so the reading says only whether the seeds separate completely."""
    rows = []
    for depth in sorted({c.depth for c in cells}):
        ok = [c for c in cells if c.depth == depth and c.status == "finished" and math.isfinite(c.fid)]
        r = [c.fid for c in ok if c.residual]
        p = [c.fid for c in ok if not c.residual]
        if not r or not p:
            continue
        wins = sum(a < b for a in r for b in p) + 0.5 * sum(a == b for a in r for b in p)
        pairs = len(r) * len(p)
        verdict = ("residual better in every seed" if wins == pairs else
                   "plain better in every seed" if wins == 0 else "seeds overlap")
        rows.append({"depth": depth, "fid_residual": statistics.fmean(r),
                     "fid_plain": statistics.fmean(p),
                     "plain_minus_residual": statistics.fmean(p) - statistics.fmean(r),
                     "residual_wins": wins, "pairs": pairs, "verdict": verdict})
    return rows


def write_report(out: str | Path, cells: list[Cell], settings: dict[str, Any]) -> dict[str, Path]:
    """Write ablation.md (table), ablation.png (FID against depth) and ablation.json.

    Args:
        out: the report folder (docs/ by default).
        cells: every trained network.
        settings: what was held fixed and how it ran (printed in the report as given).
    Returns:
        The paths written, by kind (md, png, json).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarise(cells)
    comp = comparison(cells)
    fid_key = settings["fid_name"]
    lines = [
        "# Do residual blocks, and how many, make GANs better?",
        "",
        "Written by `make ablation` (`pipeline/ablation.py`); the numbers below are as measured.",
        "",
        "## Set-up",
        "",
        *[f"- {k}: {v}" for k, v in settings.items()],
        "",
        "## FID per cell",
        "",
        f"FID (`{fid_key}`) of the final G_ema, mean ± standard deviation over seeds; lower is "
        "better. Images/s: training speed of one cell (Ray Train, "
        f"{settings['workers per cell']} worker(s), {settings['cells at once']} cells at once).",
        "",
        "| depth | shortcuts | FID | images/s | seeds |",
        "| ---: | :--- | ---: | ---: | ---: |",
    ]
    for s in summaries:
        seeds = f"{s.n}" + (f" ({s.failed} failed)" if s.failed else "")
        lines.append(f"| {s.depth} | {'residual' if s.residual else 'plain'} | "
                     f"{_pm(s.fid_mean, s.fid_std, 2)} | {_pm(s.ips_mean, s.ips_std, 0)} | {seeds} |")
    if comp:
        lines += ["", "## Residual against plain, per depth", "",
                  "| depth | FID residual | FID plain | plain − residual | residual lower in | reading |",
                  "| ---: | ---: | ---: | ---: | ---: | :--- |"]
        for c in comp:
            lines.append(f"| {c['depth']} | {c['fid_residual']:.2f} | {c['fid_plain']:.2f} | "
                         f"{c['plain_minus_residual']:+.2f} | {c['residual_wins']:g} of "
                         f"{c['pairs']} seed pairs | {c['verdict']} |")
        lines += ["", "\"Residual lower in\": of all (residual seed, plain seed) pairs at that "
                  "depth, how many have the lower FID with shortcuts. With three seeds a side "
                  "no test reaches 5 % significance; only a complete separation of the seeds "
                  "is read as an effect."]
    lines += ["", "![FID against depth](ablation.png)", "", "## Every run", "",
              "| depth | shortcuts | seed | FID | images/s | status |",
              "| ---: | :--- | ---: | ---: | ---: | :--- |"]
    for c in sorted(cells, key=lambda c: (c.depth, not c.residual, c.seed)):
        lines.append(f"| {c.depth} | {'residual' if c.residual else 'plain'} | {c.seed} | "
                     f"{c.fid:.3f} | {c.images_per_s:.0f} | {c.status} |")
    paths = {"md": out / "ablation.md", "png": out / "ablation.png", "json": out / "ablation.json"}
    paths["md"].write_text("\n".join(lines) + "\n")
    paths["json"].write_text(json.dumps(
        {"settings": settings, "cells": [asdict(c) for c in cells],
         "summary": [asdict(s) for s in summaries], "comparison": comp},
        indent=2, sort_keys=True, default=float) + "\n")
    _plot(paths["png"], cells, summaries, fid_key)
    return paths


def _plot(path: Path, cells: list[Cell], summaries: list[Summary], fid_key: str) -> None:
    """Mean FID per depth (lines) and every seed (dots), log scale: FIDs span decades."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for residual, style, shift, color in ((True, "o-", -0.06, "C0"), (False, "s--", 0.06, "C1")):
        label = "residual" if residual else "plain"
        ss = [s for s in summaries if s.residual == residual and not math.isnan(s.fid_mean)]
        if ss:
            ax.plot([s.depth + shift for s in ss], [s.fid_mean for s in ss], style, color=color,
                    label=f"{label}, mean over seeds")
        dots = [c for c in cells if c.residual == residual and math.isfinite(c.fid)]
        ax.scatter([c.depth + shift for c in dots], [c.fid for c in dots], s=14, color=color,
                   alpha=0.45, label=f"{label}, each seed")
    ax.set_yscale("log")
    ax.set_xlabel("blocks per resolution stage (model.depth)")
    ax.set_ylabel(f"FID ({fid_key}), lower is better")
    ax.set_xticks(sorted({s.depth for s in summaries}))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def best_plain(path: str | Path) -> int:
    """The depth of the plain (no-shortcut) cell with the lowest mean FID in ablation.json."""
    rows = [s for s in json.loads(Path(path).read_text())["summary"]
            if not s["residual"] and s["fid_mean"] is not None and math.isfinite(s["fid_mean"])]
    if not rows:
        raise ValueError(f"{path}: no plain cell finished")
    return int(min(rows, key=lambda s: s["fid_mean"])["depth"])
