"""Statistics behind the report: mean, std and t confidence intervals over seeds, and the paired
comparison pretrained minus random (scipy.stats.ttest_rel; Wilcoxon signed-rank from n >= 6), with
Holm-Bonferroni adjusted p-values over the label budgets of a report (several budgets, several tests).

`summarize(values)` -> Summary; `compare_arms(run, budget)` -> Paired; `verdict(paired)` -> str.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 0.95
WILCOXON_MIN_N = 6
RELATIVE_TIE = 1e-9         # paired differences within this fraction of the values count as equal (rounding)
NAN = float("nan")


@dataclass(frozen=True)
class Summary:
    """n values: mean, sample std (ddof=1) and the t interval for the mean (nan when n < 2)."""
    n: int
    mean: float
    std: float
    lo: float
    hi: float


@dataclass(frozen=True)
class Paired:
    """Per-seed differences a - b over the seeds where both arms finished."""
    seeds: tuple[int, ...]
    diff: Summary
    t: float
    p: float            # two-sided paired t-test
    p_wilcoxon: float   # two-sided Wilcoxon signed-rank; nan when n < WILCOXON_MIN_N

    @property
    def n(self) -> int:
        return len(self.seeds)


def summarize(values) -> Summary:
    """Mean, std and 95% t interval of `values` (seeds are the sample)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0:
        return Summary(0, NAN, NAN, NAN, NAN)
    mean = float(v.mean())
    if n == 1:
        return Summary(1, mean, NAN, NAN, NAN)
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def per_seed(ok: pd.DataFrame, budget: str, arm: str, metric: str) -> pd.Series:
    """The metric of one budget and arm, indexed by seed (finished rows only)."""
    rows = ok[(ok["budget"] == budget) & (ok["arm"] == arm)]
    return rows.set_index("seed")[metric].astype(float).sort_index()


def _constant(diff: np.ndarray, x: np.ndarray, y: np.ndarray) -> bool:
    """Whether the paired differences are all equal up to floating-point rounding.

    Error rates are multiples of 1/n_test, so equal differences are common; subtracting them leaves a spread of
    about 1e-17, not 0, and a t-test on that spread returns t near 1e14 and a meaningless tiny p."""
    scale = max(float(np.max(np.abs(x))), float(np.max(np.abs(y))), np.finfo(float).tiny)
    return float(np.ptp(diff)) <= RELATIVE_TIE * scale


def paired_test(a: pd.Series, b: pd.Series) -> Paired:
    """Pair a and b on their seed index and test whether the mean difference a - b is zero."""
    seeds = sorted(set(a.index) & set(b.index))
    x, y = a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy()
    d = x - y
    diff = summarize(d)
    t = p = p_w = NAN
    if diff.n >= 2 and not _constant(d, x, y):
        t, p = (float(v) for v in stats.ttest_rel(x, y))
    if diff.n >= WILCOXON_MIN_N and np.any(x != y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # exact-distribution and zero-handling notices
            p_w = float(stats.wilcoxon(x, y).pvalue)
    return Paired(tuple(int(s) for s in seeds), diff, t, p, p_w)


def compare_arms(ok: pd.DataFrame, budget: str, metric: str, a: str = "pretrained",
                 b: str = "random") -> Paired:
    return paired_test(per_seed(ok, budget, a, metric), per_seed(ok, budget, b, metric))


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni adjusted p-values of m tests (Holm 1979): the i-th smallest p times (m - i + 1),
    made monotone and capped at 1. nan entries (no test) stay nan and do not count in m."""
    ps = [float(p) for p in pvalues]
    order = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    adjusted, running = [NAN] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def verdict(paired: Paired, alpha: float = ALPHA, p_adjusted: float | None = None) -> str:
    """One line: did pretraining help (lower metric), hurt, or make no significant difference.

    With `p_adjusted` (Holm over the budgets of a report), the decision uses the adjusted p-value."""
    if paired.n == 0:
        return "no paired comparison (no seed has both arms)"
    if paired.n == 1:
        return "no test (a single paired seed)"
    if math.isnan(paired.p):
        return "no test: the paired differences have zero variance"
    p = paired.p if p_adjusted is None else p_adjusted
    shown = f"p = {fmt_p(paired.p)}" if p_adjusted is None else f"adjusted p = {fmt_p(p_adjusted)}"
    if p < alpha:
        word = "helped" if paired.diff.mean < 0 else "hurt"
        return f"pretraining {word} ({shown} < alpha = {alpha:g})"
    return f"no significant difference at alpha = {alpha:g} ({shown})"


def fmt_p(p: float) -> str:
    """Fixed p-value format: four decimals, scientific below 1e-4."""
    if p is None or math.isnan(p):
        return "—"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.2e}"
