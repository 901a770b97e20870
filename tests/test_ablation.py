"""The ablation report's statistics: checked by hand, against scipy, and by simulation."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from resgan.ablation import ALPHA, Cell, comparisons, holm, summarise, write_report


def _grid(fids: dict[tuple[int, bool], list[float]], sd: float = 0.5) -> list[Cell]:
    return [Cell(depth=d, residual=r, seed=s, fid=f, images_per_s=100.0, status="finished",
                 fid_sd=sd)
            for (d, r), fs in fids.items() for s, f in enumerate(fs)]


def test_summary_by_hand():
    cells = _grid({(1, True): [10.0, 12.0, 14.0]}, sd=0.3)
    cells.append(Cell(1, True, 3, math.nan, 0.0, "failed"))
    (s,) = summarise(cells)
    assert (s.n, s.failed) == (3, 1)
    assert s.fid_mean == pytest.approx(12.0) and s.fid_std == pytest.approx(2.0)
    assert s.fid_se == pytest.approx(2.0 / math.sqrt(3))
    assert s.fid_sample_sd == pytest.approx(0.3)


def test_welch_on_log_fid_against_scipy():
    r, p = [10.0, 12.0, 11.0], [30.0, 45.0, 28.0]
    (row,) = [c for c in comparisons(_grid({(2, True): r, (2, False): p})) if c["kind"] == "shortcuts"]
    ref = stats.ttest_ind(np.log(p), np.log(r), equal_var=False)
    assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert row["ratio"] == pytest.approx(stats.gmean(p) / stats.gmean(r), rel=1e-12)
    assert row["ratio_low"] < row["ratio"] < row["ratio_high"]
    assert row["wins"] == 9 and row["pairs"] == 9
    # the interval is Welch's: it excludes 1 exactly when p < 0.05
    assert (row["ratio_low"] > 1) == (row["p_value"] < 0.05)


def test_holm_by_hand():
    # sorted: 0.01 <= 0.05/4 and 0.015 <= 0.05/3, then 0.03 > 0.05/2: stop (0.04 not tried)
    assert holm([0.03, 0.01, 0.04, 0.015]) == [False, True, False, True]
    assert holm([0.03, 0.01, 0.04, 0.02]) == [False, True, False, False]  # 0.02 > 0.05/3
    assert holm([0.001, math.nan]) == [True, False]
    assert holm([0.06]) == [False] and holm([]) == []


def test_depth_rows_compare_with_the_shallowest():
    g = _grid({(1, True): [40, 42, 44], (2, True): [20, 21, 22], (4, True): [10, 10.5, 11]})
    rows = [c for c in comparisons(g) if c["kind"] == "depth"]
    assert [(c["depth"], c["against"]) for c in rows] == [(2, "depth 1"), (4, "depth 1")]
    assert rows[1]["ratio"] == pytest.approx(stats.gmean([40, 42, 44]) / stats.gmean([10, 10.5, 11]))
    assert all(c["real"] for c in rows)  # 2x and 4x with a 5 % spread: far outside the noise


def _null_grid(rng, sds):
    """The study's grid (depths 1, 2, 4 x shortcuts x 3 seeds) where nothing matters: every
    cell's log FID has the same mean, with the cell's own spread."""
    return {(d, r): list(np.exp(3.0 + sds[(d, r)] * rng.standard_normal(3)))
            for d in (1, 2, 4) for r in (True, False)}


@pytest.mark.parametrize("unequal", [False, True])
def test_family_wise_error_rate_by_simulation(unequal):
    """With no effect anywhere, the report calls at least one of its 7 differences real in at
    most about ALPHA of the grids (Holm), even when the cells' spreads differ 4-fold."""
    rng = np.random.default_rng(0)
    n = 2000
    sds = {(d, r): (0.1 * (1 + 3 * (d == 4 and not r)) if unequal else 0.2)
           for d in (1, 2, 4) for r in (True, False)}
    false = sum(any(c["real"] for c in comparisons(_grid(_null_grid(rng, sds))))
                for _ in range(n))
    rate = false / n
    se = math.sqrt(ALPHA * (1 - ALPHA) / n)
    assert 0.0 <= rate <= ALPHA + 3 * se, rate


def test_power_by_simulation():
    """A 3x difference with a 20 % spread between seeds (as deep plain networks collapse) is
    read as real in most grids: the rule can see what it is meant to see."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(300):
        g = _null_grid(rng, {(d, r): 0.2 for d in (1, 2, 4) for r in (True, False)})
        g[(4, False)] = [3 * f for f in g[(4, False)]]
        rows = comparisons(_grid(g))
        hits += next(c for c in rows if c["kind"] == "shortcuts" and c["depth"] == 4)["real"]
    assert 0.5 < hits / 300 <= 1.0


def test_report_renders_old_cells_without_sampling_sd(tmp_path):
    cells = [Cell(d, r, s, 10.0 + d + s + (not r), 50.0, "finished")
             for d in (1, 2) for r in (True, False) for s in range(3)]
    settings = {"fid_name": "fid_classifier_n1000", "workers per cell": 1, "cells at once": 2}
    paths = write_report(tmp_path, cells, settings)
    md = paths["md"].read_text()
    assert "| 1 | residual | 12.00 ± 0.58 | 1.00 | n/a | 50 ± 0 | 3 |" in md
    assert "## Which differences are real" in md and "within the noise" in md
    res = json.loads(paths["json"].read_text())
    assert len(res["comparisons"]) == 2 + 2  # shortcuts at 2 depths, depth 2 vs 1 twice
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
