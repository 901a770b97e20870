"""Is one generator better than another? A one-sided t-test on per-seed FIDs.

A FID measured on a few thousand samples is noisy: scoring the same generator on another
sample seed moves it by about its per-seed standard deviation (SD). The registry's gate
therefore decides on the per-seed scores of both models, not on two means:

- *paired*: both models scored on the same sample seeds (the gate's fresh seeds): the test
  is on the per-seed differences ``champion - candidate``; with ``n`` seeds, ``n - 1``
  degrees of freedom. Equal models give differences symmetric about zero, whatever the
  skew of the FIDs themselves, which is where the t-test is at its best.
- *unpaired* (Welch's t-test): two sets of per-seed scores on different seeds, each with its
  own spread.

The null hypothesis is "the candidate is better by at most ``min_improvement`` FID points";
it is rejected, and the candidate promoted, when the one-sided p-value is below ``alpha``.
So a candidate that is no better is promoted with probability at most about ``alpha``
(bench/gate.py measures it, and the power, under the per-seed noise this project measures).

Every function here works on arrays with the seeds on the last axis (so the bench simulates
many comparisons at once with the same code the gate runs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

POWER = 0.8  # the power at which the detectable improvement is reported


def t_test(champion: np.ndarray, candidate: np.ndarray, *, paired: bool,
           min_improvement: float = 0.0) -> dict[str, np.ndarray]:
    """One-sided t-test of "candidate better than champion by more than min_improvement".

    Args:
        champion, candidate: per-seed FIDs, seeds on the last axis (same seeds in the same
            order when ``paired``).
        paired: test the per-seed differences (same seeds) rather than two samples (Welch).
        min_improvement: FID points of improvement under the null hypothesis.
    Returns:
        Arrays (the leading axes of the inputs): ``improvement`` (champion mean - candidate
        mean, FID points: positive = candidate better), ``se`` (its standard error), ``t``,
        ``df`` and ``p_value`` (one-sided). Where the standard error is 0 (equal scores),
        p is 0 if the improvement exceeds min_improvement and 1 otherwise.
    """
    a = np.asarray(champion, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"a paired test needs scores on the same seeds, got shapes "
                             f"{a.shape} and {b.shape}")
        d = a - b
        n = d.shape[-1]
        if n < 2:
            raise ValueError("a paired t-test needs at least 2 seeds")
        improvement = d.mean(-1)
        se = d.std(-1, ddof=1) / np.sqrt(n)
        df = np.full(improvement.shape, n - 1.0)
    else:
        n1, n2 = a.shape[-1], b.shape[-1]
        if min(n1, n2) < 2:
            raise ValueError("Welch's t-test needs at least 2 seeds per model")
        v1, v2 = a.var(-1, ddof=1) / n1, b.var(-1, ddof=1) / n2
        improvement = a.mean(-1) - b.mean(-1)
        se = np.sqrt(v1 + v2)
        with np.errstate(divide="ignore", invalid="ignore"):
            df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
        df = np.where(np.isfinite(df), df, n1 + n2 - 2.0)
    excess = improvement - min_improvement
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, excess / se, np.sign(excess) * np.inf)
        t = np.where((se > 0) | (excess != 0), t, 0.0)  # equal on every seed: t = 0
    p = np.where((se > 0) | (excess > 0), stats.t.sf(t, df), 1.0)
    return {"improvement": improvement, "se": se, "t": t, "df": df, "p_value": p}


def promotes(champion: np.ndarray, candidate: np.ndarray, *, paired: bool, alpha: float,
             min_improvement: float = 0.0) -> np.ndarray:
    """The gate's rule: the test rejects at level ``alpha`` (boolean array)."""
    r = t_test(champion, candidate, paired=paired, min_improvement=min_improvement)
    return np.asarray(r["p_value"] < alpha)


@dataclass(frozen=True)
class Comparison:
    """One comparison of two models' per-seed FIDs, as the gate records it."""

    test: str  # "paired t-test" (same seeds) or "Welch's t-test"
    seeds: int  # seeds per model (the candidate's when unpaired)
    champion_fid: float  # mean over the compared seeds
    champion_sd: float  # SD over the compared seeds (not a standard error)
    candidate_fid: float
    candidate_sd: float
    improvement: float  # champion_fid - candidate_fid (positive: the candidate is better)
    se: float  # standard error of the improvement
    t: float
    df: float
    p_value: float  # one-sided, against "better by at most min_improvement"
    lower_bound: float  # one-sided (1 - alpha) confidence bound of the improvement
    detectable: float  # the improvement this comparison detects with 80 % power
    alpha: float
    min_improvement: float
    promote: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One sentence: the verdict, the test, the figures it decided on."""
        verdict = "better" if self.promote else "not shown better"
        return (f"{verdict}: improvement {self.improvement:+.4f} FID ± {self.se:.4f} (standard "
                f"error), {self.test} over {self.seeds} seeds, t = {self.t:.2f}, one-sided "
                f"p = {self.p_value:.3g} {'<' if self.promote else '>='} alpha {self.alpha:g}"
                + (f" (null: improvement <= {self.min_improvement:g})"
                   if self.min_improvement else "")
                + f"; champion {self.champion_fid:.4f} (SD {self.champion_sd:.4f}), candidate "
                  f"{self.candidate_fid:.4f} (SD {self.candidate_sd:.4f}); detects "
                  f"{self.detectable:.3f} with 80 % power")


def compare(champion, candidate, *, paired: bool, alpha: float = 0.05,
            min_improvement: float = 0.0) -> Comparison:
    """Compare two models' per-seed FIDs (1-d sequences) with the gate's test."""
    a = np.asarray(champion, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError("compare() takes two 1-d sequences of per-seed FIDs")
    r = {k: float(v) for k, v in t_test(a, b, paired=paired,
                                         min_improvement=min_improvement).items()}
    crit = float(stats.t.ppf(1 - alpha, r["df"]))
    return Comparison(
        test="paired t-test" if paired else "Welch's t-test", seeds=len(b),
        champion_fid=float(a.mean()), champion_sd=float(a.std(ddof=1)),
        candidate_fid=float(b.mean()), candidate_sd=float(b.std(ddof=1)),
        improvement=r["improvement"], se=r["se"], t=r["t"], df=r["df"], p_value=r["p_value"],
        lower_bound=r["improvement"] - crit * r["se"],
        detectable=(crit + float(stats.t.ppf(POWER, r["df"]))) * r["se"],
        alpha=alpha, min_improvement=min_improvement, promote=bool(r["p_value"] < alpha))
