"""The depth x shortcut ablation: summarise FID per cell and write the report.

``pipeline/ablation.py`` trains every cell of ``model.depth`` x ``model.residual`` x seed
(x ``train.augment`` policy, when ``ablation.augment`` lists more than ``none``) through ``resgan.tuning.run_trials`` (the same Ray Train loop as the pipeline) and hands
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
    augment: str = "none"  # train.augment of the cell (older reports: none)
    fid_sd: float = math.nan  # SD of this network's FID over eval.repeats sample seeds (NaN: not kept)


@dataclass
class Summary:
    """All seeds of one (depth, residual, augment) cell."""

    depth: int
    residual: bool
    n: int  # seeds that finished
    fid_mean: float
    fid_std: float  # sample standard deviation over seeds (NaN for one seed)
    ips_mean: float
    ips_std: float
    failed: int
    augment: str = "none"


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _policy_key(policy: str) -> tuple[bool, str]:
    return policy != "none", policy  # none first, then by name


def _augmented(cells: list[Cell]) -> bool:
    """Whether the grid has an augment axis (anything but none): the report shows it."""
    return any(c.augment != "none" for c in cells)


def summarise(cells: list[Cell]) -> list[Summary]:
    """Mean and standard deviation over seeds, per (depth, residual, augment), sorted by
    depth, residual first, then policy (none first)."""
    keys = sorted({(c.depth, c.residual, c.augment) for c in cells},
                  key=lambda k: (k[0], not k[1], _policy_key(k[2])))
    out = []
    for depth, residual, augment in keys:
        group = [c for c in cells if (c.depth, c.residual, c.augment) == (depth, residual, augment)]
        ok = [c for c in group if c.status == "finished" and math.isfinite(c.fid)]
        fm, fs = _mean_std([c.fid for c in ok])
        im, is_ = _mean_std([c.images_per_s for c in ok])
        out.append(Summary(depth, residual, len(ok), fm, fs, im, is_, len(group) - len(ok),
                           augment))
    return out


def _pm(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def comparison(cells: list[Cell]) -> list[dict[str, Any]]:
    """Per depth measured with and without shortcuts: the mean FID difference plain -
    residual, and in how many (residual seed, plain seed) pairs the residual network has the
    lower FID (the Mann-Whitney count). With three seeds a side no test is significant at
    5 %, so the reading says only whether the seeds separate completely. Per augment policy
    too, when the grid has several."""
    rows = []
    for depth, augment in sorted({(c.depth, c.augment) for c in cells},
                                 key=lambda k: (k[0], _policy_key(k[1]))):
        ok = [c for c in cells if (c.depth, c.augment) == (depth, augment)
              and c.status == "finished" and math.isfinite(c.fid)]
        r = [c.fid for c in ok if c.residual]
        p = [c.fid for c in ok if not c.residual]
        if not r or not p:
            continue
        wins, pairs = _wins(r, p)
        verdict = ("residual better in every seed" if wins == pairs else
                   "plain better in every seed" if wins == 0 else "seeds overlap")
        rows.append({"depth": depth, "augment": augment, "fid_residual": statistics.fmean(r),
                     "fid_plain": statistics.fmean(p),
                     "plain_minus_residual": statistics.fmean(p) - statistics.fmean(r),
                     "residual_wins": wins, "pairs": pairs, "verdict": verdict})
    return rows


def _wins(a: list[float], b: list[float]) -> tuple[float, int]:
    """In how many (a, b) pairs a has the lower FID (ties count half), and the pairs."""
    return (sum(x < y for x in a for y in b) + 0.5 * sum(x == y for x in a for y in b),
            len(a) * len(b))


def augment_comparison(cells: list[Cell]) -> list[dict[str, Any]]:
    """Every augment policy against ``none`` in the same (depth, residual) cell: the ratio of
    mean FIDs (policy / none; below 1: the augmentation helps) and in how many (policy seed,
    none seed) pairs the augmented network has the lower FID."""
    ok = [c for c in cells if c.status == "finished" and math.isfinite(c.fid)]
    rows = []
    for depth, residual, augment in sorted({(c.depth, c.residual, c.augment) for c in ok},
                                           key=lambda k: (k[0], not k[1], _policy_key(k[2]))):
        if augment == "none":
            continue
        a = [c.fid for c in ok if (c.depth, c.residual, c.augment) == (depth, residual, augment)]
        b = [c.fid for c in ok if (c.depth, c.residual, c.augment) == (depth, residual, "none")]
        if not b:
            continue
        wins, pairs = _wins(a, b)
        verdict = ("augmented better in every seed" if wins == pairs else
                   "none better in every seed" if wins == 0 else "seeds overlap")
        rows.append({"depth": depth, "residual": residual, "augment": augment,
                     "fid_augment": statistics.fmean(a), "fid_none": statistics.fmean(b),
                     "ratio": statistics.fmean(a) / statistics.fmean(b),
                     "augment_wins": wins, "pairs": pairs, "verdict": verdict})
    return rows


def write_report(out: str | Path, cells: list[Cell], settings: dict[str, Any],
                 config: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ablation.md (table), ablation.png (FID against depth) and ablation.json.

    Args:
        out: the report folder (docs/ by default).
        cells: every trained network.
        settings: what was held fixed and how it ran (printed in the report as given).
        config: the configuration every cell started from (ablation.json only), so that a
            cell can be trained again as the ablation trained it (``make quality``).
    Returns:
        The paths written, by kind (md, png, json).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarise(cells)
    comp = comparison(cells)
    fid_key = settings["fid_name"]
    aug = _augmented(cells)  # an augment column and section only when the grid has the axis
    col, sep = ("augment | ", ":--- | ") if aug else ("", "")
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
        f"| depth | shortcuts | {col}FID | images/s | seeds |",
        f"| ---: | :--- | {sep}---: | ---: | ---: |",
    ]
    for s in summaries:
        seeds = f"{s.n}" + (f" ({s.failed} failed)" if s.failed else "")
        policy = f"{s.augment} | " if aug else ""
        lines.append(f"| {s.depth} | {'residual' if s.residual else 'plain'} | {policy}"
                     f"{_pm(s.fid_mean, s.fid_std, 2)} | {_pm(s.ips_mean, s.ips_std, 0)} | {seeds} |")
    if comp:
        lines += ["", "## Residual against plain, per depth", "",
                  f"| depth | {col}FID residual | FID plain | plain − residual | residual lower in | reading |",
                  f"| ---: | {sep}---: | ---: | ---: | ---: | :--- |"]
        for c in comp:
            policy = f"{c['augment']} | " if aug else ""
            lines.append(f"| {c['depth']} | {policy}{c['fid_residual']:.2f} | {c['fid_plain']:.2f} | "
                         f"{c['plain_minus_residual']:+.2f} | {c['residual_wins']:g} of "
                         f"{c['pairs']} seed pairs | {c['verdict']} |")
        lines += ["", "\"Residual lower in\": of all (residual seed, plain seed) pairs at that "
                  "depth, how many have the lower FID with shortcuts. With three seeds a side "
                  "no test reaches 5 % significance; only a complete separation of the seeds "
                  "is read as an effect."]
    aug_comp = augment_comparison(cells) if aug else []
    if aug_comp:
        lines += ["", "## Augmentation against none, per cell", "",
                  "Differentiable augmentation of D's inputs (`train.augment`, see "
                  "`resgan.augment`): the same depth and shortcuts, with and without it.", "",
                  "| depth | shortcuts | augment | FID | FID none | × none | augmented lower in | reading |",
                  "| ---: | :--- | :--- | ---: | ---: | ---: | ---: | :--- |"]
        for c in aug_comp:
            lines.append(f"| {c['depth']} | {'residual' if c['residual'] else 'plain'} | "
                         f"{c['augment']} | {c['fid_augment']:.2f} | {c['fid_none']:.2f} | "
                         f"{c['ratio']:.2f} | {c['augment_wins']:g} of {c['pairs']} seed pairs | "
                         f"{c['verdict']} |")
    lines += ["", "![FID against depth](ablation.png)", "", "## Every run", "",
              f"| depth | shortcuts | {col}seed | FID | images/s | status |",
              f"| ---: | :--- | {sep}---: | ---: | ---: | :--- |"]
    for c in sorted(cells, key=lambda c: (c.depth, not c.residual, _policy_key(c.augment), c.seed)):
        policy = f"{c.augment} | " if aug else ""
        lines.append(f"| {c.depth} | {'residual' if c.residual else 'plain'} | {policy}{c.seed} | "
                     f"{c.fid:.3f} | {c.images_per_s:.0f} | {c.status} |")
    paths = {"md": out / "ablation.md", "png": out / "ablation.png", "json": out / "ablation.json"}
    paths["md"].write_text("\n".join(lines) + "\n")
    paths["json"].write_text(json.dumps(
        {"settings": settings, "cells": [asdict(c) for c in cells],
         "summary": [asdict(s) for s in summaries], "comparison": comp,
         **({"augment_comparison": aug_comp} if aug else {}),
         **({"config": config} if config is not None else {})},
        indent=2, sort_keys=True, default=float) + "\n")
    _plot(paths["png"], cells, summaries, fid_key)
    return paths


def _plot(path: Path, cells: list[Cell], summaries: list[Summary], fid_key: str) -> None:
    """Mean FID per depth (lines) and every seed (dots), log scale: FIDs span decades."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    policies = sorted({c.augment for c in cells}, key=_policy_key)
    aug = _augmented(cells)  # with an augment axis: one colour per policy, style per shortcut
    groups = [(r, a) for a in policies for r in (True, False)]
    for i, (residual, augment) in enumerate(groups):
        label = "residual" if residual else "plain"
        style = "o-" if residual else "s--"
        if aug:
            shift = 0.25 * (i / max(len(groups) - 1, 1) - 0.5)
            color, label = f"C{policies.index(augment)}", f"{label}, {augment}"
        else:
            shift, color = (-0.06, "C0") if residual else (0.06, "C1")
        ss = [s for s in summaries if (s.residual, s.augment) == (residual, augment)
              and not math.isnan(s.fid_mean)]
        if ss:
            ax.plot([s.depth + shift for s in ss], [s.fid_mean for s in ss], style, color=color,
                    label=label if aug else f"{label}, mean over seeds")
        dots = [c for c in cells if (c.residual, c.augment) == (residual, augment)
                and math.isfinite(c.fid)]
        ax.scatter([c.depth + shift for c in dots], [c.fid for c in dots], s=14, color=color,
                   alpha=0.45, label=None if aug else f"{label}, each seed")
    ax.set_yscale("log")
    ax.set_xlabel("blocks per resolution stage (model.depth)")
    ax.set_ylabel(f"FID ({fid_key}), lower is better")
    ax.set_xticks(sorted({s.depth for s in summaries}))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def best_cell(path: str | Path, *, plain_only: bool = False, augment: str | None = None) -> Summary:
    """The cell (depth, shortcuts, augment policy) with the lowest mean FID in ablation.json;
    ``plain_only``: among the cells without shortcuts; ``augment``: among those trained with
    that augment policy."""
    rows = [Summary(**s) for s in json.loads(Path(path).read_text())["summary"]
            if s["fid_mean"] is not None and math.isfinite(s["fid_mean"])
            and not (plain_only and s["residual"])
            and (augment is None or s.get("augment", "none") == augment)]
    if not rows:
        raise ValueError(f"{path}: no {'plain ' if plain_only else ''}cell"
                         f"{f' with augment {augment}' if augment else ''} finished")
    return min(rows, key=lambda s: s.fid_mean)


def best_plain(path: str | Path, augment: str = "none") -> int:
    """The depth of the best plain (no-shortcut) cell trained with the policy ``augment``."""
    return best_cell(path, plain_only=True, augment=augment).depth
