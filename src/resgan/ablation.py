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

import numpy as np


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
    fid_std: float  # sample standard deviation over training seeds (NaN for one seed)
    ips_mean: float
    ips_std: float
    failed: int
    augment: str = "none"
    fid_se: float = math.nan  # standard error of fid_mean: fid_std / sqrt(n)
    fid_sample_sd: float = math.nan  # mean over seeds of one network's SD over sample seeds


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
        sample_sds = [c.fid_sd for c in ok if math.isfinite(c.fid_sd)]
        out.append(Summary(depth, residual, len(ok), fm, fs, im, is_, len(group) - len(ok),
                           augment, fs / math.sqrt(len(ok)) if len(ok) > 1 else math.nan,
                           statistics.fmean(sample_sds) if sample_sds else math.nan))
    return out


def _pm(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


ALPHA = 0.05  # the family-wise error rate of the report's readings (Holm over its comparisons)


def _test(a: list[float], b: list[float]) -> dict[str, Any]:
    """Welch's t-test of log FID, two-sided: ``ratio`` = geometric mean of b / that of a (above
    1: a is better), its 95 % interval and the p-value. FIDs of networks trained on different
    seeds spread multiplicatively (one collapsed run scores ten times the others), so the test
    is on their logarithms."""
    from scipy import stats

    from resgan.metrics.significance import t_test

    la, lb = np.log(a), np.log(b)
    if min(len(la), len(lb)) < 2:
        return {"ratio": math.exp(lb.mean() - la.mean()), "ratio_low": math.nan,
                "ratio_high": math.nan, "p_value": math.nan}
    r = t_test(lb, la, paired=False)  # improvement = mean log b - mean log a
    d, se, df = float(r["improvement"]), float(r["se"]), float(r["df"])
    p_one = float(r["p_value"])
    half = float(stats.t.ppf(0.975, df)) * se if se > 0 else 0.0
    return {"ratio": math.exp(d), "ratio_low": math.exp(d - half), "ratio_high": math.exp(d + half),
            "p_value": min(1.0, 2 * min(p_one, 1 - p_one)) if se > 0 else (1.0 if d == 0 else 0.0)}


def holm(p_values: list[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down rule: which of the p-values are significant with a family-wise error
    rate of at most ``alpha`` (NaN: never)."""
    order = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    out = [False] * len(p_values)
    for k, (p, i) in enumerate(order):
        if p > alpha / (len(order) - k):
            break
        out[i] = True
    return out


def _finished(cells: list[Cell]) -> list[Cell]:
    return [c for c in cells if c.status == "finished" and math.isfinite(c.fid) and c.fid > 0]


def _num(x: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def _p(p: float) -> str:
    return "< 0.001" if 0 <= p < 0.001 else _num(p, 3)


def comparisons(cells: list[Cell]) -> list[dict[str, Any]]:
    """Every comparison the report reads, each a Welch test of log FID over training seeds:

    - *shortcuts*: per depth (and augment policy), plain against residual; ``ratio`` = FID
      plain / FID residual (geometric means; above 1: shortcuts help);
    - *depth*: per shortcut setting (and policy), every depth against the shallowest; ``ratio``
      = FID shallowest / FID deeper (above 1: depth helps).

    Each has ``wins`` (of all seed pairs, how many have the lower FID on the helped side; ties
    count half), ``p_value`` and ``real``: significant under Holm's rule over all the rows at a
    family-wise error rate of ALPHA (tests/test_ablation.py measures it by simulation).
    """
    ok = _finished(cells)
    rows = []

    def add(kind, depth, residual, augment, against, helped, hurt):
        if not helped or not hurt:
            return
        wins, pairs = _wins(helped, hurt)
        rows.append({"kind": kind, "depth": depth, "residual": residual, "augment": augment,
                     "against": against, "fid": statistics.fmean(helped),
                     "fid_against": statistics.fmean(hurt), "wins": wins, "pairs": pairs,
                     **_test(helped, hurt)})

    for depth, augment in sorted({(c.depth, c.augment) for c in ok},
                                 key=lambda k: (k[0], _policy_key(k[1]))):
        group = [c for c in ok if (c.depth, c.augment) == (depth, augment)]
        add("shortcuts", depth, True, augment, "plain",
            [c.fid for c in group if c.residual], [c.fid for c in group if not c.residual])
    for residual, augment in sorted({(c.residual, c.augment) for c in ok},
                                    key=lambda k: (not k[0], _policy_key(k[1]))):
        group = [c for c in ok if (c.residual, c.augment) == (residual, augment)]
        depths = sorted({c.depth for c in group})
        for depth in depths[1:]:
            add("depth", depth, residual, augment, f"depth {depths[0]}",
                [c.fid for c in group if c.depth == depth],
                [c.fid for c in group if c.depth == depths[0]])
    for row, real in zip(rows, holm([r["p_value"] for r in rows])):
        row["real"] = real
    return rows


def _reading(row: dict[str, Any]) -> str:
    if row["real"]:
        return "better: real" if row["ratio"] > 1 else "worse: real"
    return "within the noise"


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


def _cell_table(summaries: list, settings: dict[str, Any], aug: bool) -> list[str]:
    """The report's "FID per cell" section."""
    col, sep = ("augment | ", ":--- | ") if aug else ("", "")
    lines = [
        "## FID per cell",
        "",
        f"FID (`{settings['fid_name']}`) of the final G_ema; lower is better. **FID**: mean over the training "
        "seeds ± its standard error (SE = SD / √seeds). **SD seeds**: the standard deviation "
        "between networks trained on different seeds. **SD sampling**: the noise of scoring one "
        "network (its SD over the evaluate stage's sample seeds, the mean over the cell's "
        "networks): the part of the seed-to-seed spread that is measurement, not training. "
        f"Images/s: training speed of one cell (Ray Train, {settings['workers per cell']} "
        f"worker(s), {settings['cells at once']} cells at once).",
        "",
        f"| depth | shortcuts | {col}FID ± SE | SD seeds | SD sampling | images/s | seeds |",
        f"| ---: | :--- | {sep}---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        seeds = f"{s.n}" + (f" ({s.failed} failed)" if s.failed else "")
        policy = f"{s.augment} | " if aug else ""
        lines.append(f"| {s.depth} | {'residual' if s.residual else 'plain'} | {policy}"
                     f"{_pm(s.fid_mean, s.fid_se, 2)} | {_num(s.fid_std)} | "
                     f"{_num(s.fid_sample_sd)} | {_pm(s.ips_mean, s.ips_std, 0)} | {seeds} |")
    return lines


def _comparison_table(comp: list[dict], aug: bool) -> list[str]:
    """The report's "Which differences are real" section (none without comparisons)."""
    if not comp:
        return []
    col, sep = ("augment | ", ":--- | ") if aug else ("", "")
    lines = ["", "## Which differences are real", "",
             "Each row compares two cells over their training seeds: the ratio of their "
             "geometric-mean FIDs (above 1: the first is better) with its 95 % interval and "
             "the two-sided p-value of Welch's t-test on log FID (FIDs of seeds spread by "
             "factors, not by points). **Reading**: *real* when the difference survives "
             f"Holm's correction over all {len(comp)} rows at a family-wise error rate of "
             f"{ALPHA:.0%} (simulated with normal noise on log FID: at most that, see "
             "tests/test_ablation.py), else *within the noise*. Wins: of all seed pairs, "
             "how many have the lower FID on the first side. With 3 seeds a side only a "
             "large, consistent effect can be read as real.", "",
             f"| compared | {col}FID | against | FID | ratio (95 % CI) | p | wins | reading |",
             f"| :--- | {sep}---: | :--- | ---: | ---: | ---: | ---: | :--- |"]
    for c in comp:
        policy = f"{c['augment']} | " if aug else ""
        what = (f"depth {c['depth']}, residual" if c["kind"] == "shortcuts" else
                f"depth {c['depth']}, {'residual' if c['residual'] else 'plain'}")
        against = (f"depth {c['depth']}, plain" if c["kind"] == "shortcuts" else
                   f"{c['against']}, {'residual' if c['residual'] else 'plain'}")
        lines.append(f"| {what} | {policy}{c['fid']:.2f} | {against} | {c['fid_against']:.2f} | "
                     f"{c['ratio']:.2f} ({_num(c['ratio_low'])}–{_num(c['ratio_high'])}) | "
                     f"{_p(c['p_value'])} | {c['wins']:g} of {c['pairs']} | "
                     f"{_reading(c)} |")
    return lines


def _augment_table(aug_comp: list[dict]) -> list[str]:
    """The report's "Augmentation against none" section (none without that axis)."""
    if not aug_comp:
        return []
    lines = ["", "## Augmentation against none, per cell", "",
             "Differentiable augmentation of D's inputs (`train.augment`, see "
             "`resgan.augment`): the same depth and shortcuts, with and without it.", "",
             "| depth | shortcuts | augment | FID | FID none | × none | augmented lower in | reading |",
             "| ---: | :--- | :--- | ---: | ---: | ---: | ---: | :--- |"]
    for c in aug_comp:
        lines.append(f"| {c['depth']} | {'residual' if c['residual'] else 'plain'} | "
                     f"{c['augment']} | {c['fid_augment']:.2f} | {c['fid_none']:.2f} | "
                     f"{c['ratio']:.2f} | {c['augment_wins']:g} of {c['pairs']} seed pairs | "
                     f"{c['verdict']} |")
    return lines


def _run_table(cells: list[Cell], aug: bool) -> list[str]:
    """The report's "Every run" section, with the plot above it."""
    col, sep = ("augment | ", ":--- | ") if aug else ("", "")
    lines = ["", "![FID against depth](ablation.png)", "", "## Every run", "",
             f"| depth | shortcuts | {col}seed | FID | SD sampling | images/s | status |",
             f"| ---: | :--- | {sep}---: | ---: | ---: | ---: | :--- |"]
    for c in sorted(cells, key=lambda c: (c.depth, not c.residual, _policy_key(c.augment), c.seed)):
        policy = f"{c.augment} | " if aug else ""
        lines.append(f"| {c.depth} | {'residual' if c.residual else 'plain'} | {policy}{c.seed} | "
                     f"{c.fid:.3f} | {_num(c.fid_sd, 3)} | {c.images_per_s:.0f} | {c.status} |")
    return lines


def write_report(out: str | Path, cells: list[Cell], settings: dict[str, Any],
                 config: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ablation.md (table), ablation.png (FID against depth), ablation.json (everything)
    and fid.json (one mean FID per cell, flat: the study's metrics for `dvc exp show`).

    Args:
        out: the report folder.
        cells: every trained network.
        settings: what was held fixed and how it ran (printed in the report as given).
        config: the configuration every cell started from (ablation.json only), so that a
            cell can be trained again as the ablation trained it (``make quality``).
    Returns:
        The paths written, by kind (md, png, json, metrics).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarise(cells)
    comp = comparisons(cells)
    aug = _augmented(cells)  # an augment column and section only when the grid has the axis
    aug_comp = augment_comparison(cells) if aug else []
    lines = [
        "# Do residual blocks, and how many, make GANs better?",
        "",
        "Written by `pipeline/ablation.py` (the command is in the set-up); the numbers below are as measured.",
        "",
        "## Set-up",
        "",
        *[f"- {k}: {v}" for k, v in settings.items()],
        "",
        *_cell_table(summaries, settings, aug),
        *_comparison_table(comp, aug),
        *_augment_table(aug_comp),
        *_run_table(cells, aug),
    ]
    paths = {"md": out / "ablation.md", "png": out / "ablation.png", "json": out / "ablation.json",
             "metrics": out / "fid.json"}
    paths["md"].write_text("\n".join(lines) + "\n")
    paths["metrics"].write_text(json.dumps(cell_metrics(summaries), indent=2) + "\n")
    paths["json"].write_text(json.dumps(
        {"settings": settings, "cells": [asdict(c) for c in cells],
         "summary": [asdict(s) for s in summaries], "comparisons": comp,
         **({"augment_comparison": aug_comp} if aug else {}),
         **({"config": config} if config is not None else {})},
        indent=2, sort_keys=True, default=float) + "\n")
    _plot(paths["png"], cells, summaries, settings["fid_name"])
    return paths


def cell_metrics(summaries: list[Summary]) -> dict[str, float]:
    """One mean FID per cell, keyed ``d<depth>_residual`` / ``d<depth>_plain`` (``_<policy>``
    after it for an augmented cell): few flat columns, so that `dvc exp show` keeps the
    pipeline's scores in view (the seeds, SDs and comparisons are in ablation.json)."""
    out = {}
    for s in summaries:
        key = f"d{s.depth}_{'residual' if s.residual else 'plain'}"
        out[key if s.augment == "none" else f"{key}_{s.augment}"] = round(s.fid_mean, 3)
    return out


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
