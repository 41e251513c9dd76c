"""Statistics for the results tables: paired per-case tests against a reference method, Holm's correction and
bootstrap confidence intervals of a mean over test cases and seeds.

Conventions (protocol §4.8; SimCVD tests per-case Dice with a paired t-test):

* **Pairing unit = the test case.** Each method's per-case values are first averaged over its seeds, then the two
  methods are paired on the cases they share (n = number of common test cases). Seeds of different methods are not
  paired with each other: seed 1337 of one method has no special relation to seed 1337 of another.
* **Differences** are d = method − reference. ``alternative="less"`` tests "method below reference" (SimCVD's
  one-sided test of a baseline against SimCVD on Dice), ``"greater"`` the opposite.
* **Wilcoxon signed-rank**: ``scipy.stats.wilcoxon`` on d with its defaults (zero differences dropped, exact null
  distribution for small n without ties, else the normal approximation). **Paired t**: t = mean(d) / (sd(d) / √n)
  with sd of ddof = 1, p from Student's t with n − 1 degrees of freedom (the same as ``scipy.stats.ttest_rel``).
* **Holm's step-down correction** within one family of tests (all methods against the reference at one dataset and
  labeled count). NaN p-values are not counted in the family and stay NaN.
* **Bootstrap CI** of the mean over cases and seeds: cases and seeds are crossed factors (every seed is evaluated
  on the same test cases), so each resample draws seeds with replacement and, independently, cases with
  replacement, and takes the mean of the resampled seed × case grid (NaN entries skipped); the interval is the
  percentile interval of those means. With one seed this is the ordinary case bootstrap. The generator is seeded.
"""

from __future__ import annotations

import logging
import math
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

logger = logging.getLogger(__name__)

ALTERNATIVES = ("two-sided", "less", "greater")


@dataclass(frozen=True)
class PairedTest:
    """Result of the paired tests of one method against the reference on per-case values.

    Attributes:
        n: number of paired test cases.
        mean_diff: mean of d = method − reference (unit of the values).
        wilcoxon_statistic: scipy's signed-rank statistic (two-sided: min(W+, W−); one-sided: W+).
        wilcoxon_p: its p-value.
        t_statistic: paired t statistic.
        t_p: its p-value.
    """

    n: int
    mean_diff: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    t_statistic: float
    t_p: float


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative: expected one of {ALTERNATIVES}, got {alternative!r}")


def _paired_differences(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """d = x − y as float64 (n,); ValueError unless x and y are 1D, of equal length and finite."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"x, y: expected two 1D arrays of equal length, got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("x, y: expected finite values (drop unpaired or NaN cases first)")
    return a - b


def paired_t(x: Sequence[float], y: Sequence[float], *, alternative: str = "two-sided") -> tuple[float, float]:
    """Paired t-test of x against y.

    Args:
        x: values of the method, shape (n,).
        y: values of the reference on the same cases, shape (n,).
        alternative: "two-sided", "less" (mean of x − y below 0) or "greater".

    Returns:
        (t, p). With n < 2 both are NaN. With zero spread of the differences: t = ±inf and p = 0 (or 1 for the
        opposite one-sided alternative) when their mean is non-zero, else NaN (as ``scipy.stats.ttest_rel``).
    """
    _check_alternative(alternative)
    d = _paired_differences(x, y)
    n = d.size
    if n < 2:
        return math.nan, math.nan
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        if mean == 0.0:
            return math.nan, math.nan
        t = math.copysign(math.inf, mean)
    else:
        t = mean / (sd / math.sqrt(n))
    dist = sps.t(df=n - 1)
    if alternative == "less":
        return t, float(dist.cdf(t))
    if alternative == "greater":
        return t, float(dist.sf(t))
    return t, float(min(1.0, 2.0 * dist.sf(abs(t))))


def wilcoxon_signed_rank(
    x: Sequence[float], y: Sequence[float], *, alternative: str = "two-sided"
) -> tuple[float, float]:
    """Wilcoxon signed-rank test of x against y (``scipy.stats.wilcoxon`` on x − y with its defaults).

    Args:
        x: values of the method, shape (n,).
        y: values of the reference on the same cases, shape (n,).
        alternative: "two-sided", "less" or "greater" (for the differences x − y).

    Returns:
        (statistic, p); NaN for n = 0. All-zero differences give scipy's (0, 1).
    """
    _check_alternative(alternative)
    d = _paired_differences(x, y)
    if d.size == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():  # all-zero or tiny samples: scipy warns about its normal approximation
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        res = sps.wilcoxon(d, alternative=alternative)
    return float(res.statistic), float(res.pvalue)


def paired_tests(x: Sequence[float], y: Sequence[float], *, alternative: str = "two-sided") -> PairedTest:
    """Both paired tests of x (method) against y (reference) on the same cases; see the module docstring."""
    d = _paired_differences(x, y)
    w_stat, w_p = wilcoxon_signed_rank(x, y, alternative=alternative)
    t_stat, t_p = paired_t(x, y, alternative=alternative)
    mean_diff = float(d.mean()) if d.size else math.nan
    return PairedTest(int(d.size), mean_diff, w_stat, w_p, t_stat, t_p)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family of tests.

    Sorted ascending, p_(i) becomes max_{j ≤ i} min(1, (m − j + 1) · p_(j)) with m the number of non-NaN p-values.

    Args:
        pvalues: raw p-values in [0, 1] or NaN, shape (m_total,).

    Returns:
        Adjusted p-values in the input order, float64 (m_total,); NaN where the input is NaN.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues: expected a 1D sequence, got shape {p.shape}")
    valid = ~np.isnan(p)
    if ((p[valid] < 0) | (p[valid] > 1)).any():
        raise ValueError("pvalues: expected values in [0, 1] or NaN")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(valid)
    m = idx.size
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def bootstrap_mean_ci(
    values: np.ndarray, *, n_resamples: int, rng: np.random.Generator, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of a seed × case grid, resampling seeds and cases independently.

    Args:
        values: per-case values, shape (n_seeds, n_cases); NaN entries are skipped in each resampled mean.
        n_resamples: number of bootstrap resamples B (≥ 1).
        rng: the seeded generator (draws B·(n_seeds + n_cases) integers).
        confidence: coverage of the interval in (0, 1).

    Returns:
        (low, high) in the unit of `values`; (NaN, NaN) when every resample is all-NaN.
    """
    grid = np.asarray(values, dtype=np.float64)
    if grid.ndim != 2 or 0 in grid.shape:
        raise ValueError(f"values: expected a non-empty 2D array (n_seeds, n_cases), got shape {grid.shape}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples: expected a positive integer, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence}")
    n_seeds, n_cases = grid.shape
    seeds = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    cases = rng.integers(0, n_cases, size=(n_resamples, n_cases))
    resampled = grid[seeds[:, :, None], cases[:, None, :]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples
        means = np.nanmean(resampled, axis=(1, 2))
    means = means[np.isfinite(means)]
    if means.size == 0:
        return math.nan, math.nan
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [alpha, 100.0 - alpha])
    return float(low), float(high)


def cell_rng(seed: int, *names: object) -> np.random.Generator:
    """Generator for one table cell: seeded by `seed` and a CRC32 of `names`, so it does not depend on cell order."""
    tag = zlib.crc32("/".join(str(n) for n in names).encode())
    return np.random.default_rng([int(seed), tag])


def seed_case_grid(per_case: pd.DataFrame, metric: str) -> np.ndarray:
    """The (n_seeds, n_cases) grid of `metric` for one cell's per-case rows (seeds and cases sorted; holes NaN)."""
    grid = per_case.pivot(index="seed", columns="case", values=metric)
    return grid.sort_index().sort_index(axis=1).to_numpy(dtype=np.float64)


# ------------------------------------------------------------------------------------------------ per-cell tables
CELL_KEYS = ("dataset", "method", "n_labeled")


def cell_intervals(
    per_case: pd.DataFrame, metrics: Sequence[str], *, n_resamples: int, seed: int, confidence: float = 0.95
) -> pd.DataFrame:
    """Bootstrap CI of the mean of each metric for every (dataset, method, n_labeled) cell.

    Args:
        per_case: per-case frame (`harness.report.aggregate.load_per_case`), values in their file units.
        metrics: columns to bootstrap, e.g. ("dice", "hd95").
        n_resamples: bootstrap resamples per cell and metric.
        seed: base seed; each cell and metric gets `cell_rng(seed, dataset, method, n_labeled, metric)`.
        confidence: interval coverage.

    Returns:
        One row per cell: the cell keys and `{metric}_ci_low`, `{metric}_ci_high` (same units as `per_case`).
    """
    rows = []
    for key, group in per_case.groupby(list(CELL_KEYS), sort=True):
        row = dict(zip(CELL_KEYS, key, strict=True))
        for metric in metrics:
            rng = cell_rng(seed, *key, metric)
            low, high = bootstrap_mean_ci(
                seed_case_grid(group, metric), n_resamples=n_resamples, rng=rng, confidence=confidence
            )
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = low, high
        rows.append(row)
    columns = [*CELL_KEYS, *(f"{m}_ci_{s}" for m in metrics for s in ("low", "high"))]
    return pd.DataFrame(rows, columns=columns)


def case_means(per_case: pd.DataFrame, metric: str) -> pd.Series:
    """Per-case mean over seeds of `metric` for the rows of one cell, indexed by case ID (NaN values skipped)."""
    return per_case.groupby("case")[metric].mean()


def _no_test(note: str, n_pairs: int = 0) -> dict:
    """Test columns of a row without a test: NaN statistics and the reason."""
    return {
        "n_pairs": n_pairs,
        "mean_diff": math.nan,
        "wilcoxon_statistic": math.nan,
        "wilcoxon_p": math.nan,
        "t_statistic": math.nan,
        "t_p": math.nan,
        "note": note,
    }


def _test_row(method_cases: pd.Series, reference_cases: pd.Series | None, alternative: str) -> dict:
    """Paired-test columns of one method against the reference (NaN and a note when no test is possible)."""
    if reference_cases is None:
        return _no_test("no reference at this labeled count")
    both = pd.concat([method_cases.rename("x"), reference_cases.rename("y")], axis=1, join="inner").dropna()
    if len(both) < 2:
        return _no_test("fewer than 2 paired cases", len(both))
    res = paired_tests(both["x"].to_numpy(), both["y"].to_numpy(), alternative=alternative)
    return {
        "n_pairs": res.n,
        "mean_diff": res.mean_diff,
        "wilcoxon_statistic": res.wilcoxon_statistic,
        "wilcoxon_p": res.wilcoxon_p,
        "t_statistic": res.t_statistic,
        "t_p": res.t_p,
        "note": "",
    }


def compare_to_reference(
    per_case: pd.DataFrame, *, reference: str, metric: str = "dice", alternative: str = "two-sided"
) -> pd.DataFrame:
    """Per-case paired tests of every method against `reference` within each (dataset, n_labeled), Holm-corrected.

    Args:
        per_case: per-case frame (`harness.report.aggregate.load_per_case`).
        reference: the reference method key (e.g. "simcvd").
        metric: per-case column tested (Dice by default, as SimCVD).
        alternative: "two-sided", "less" or "greater" for d = method − reference.

    Returns:
        One row per cell (dataset, method, n_labeled) with `n_pairs`, `mean_diff`, the Wilcoxon and t statistics and
        p-values, `wilcoxon_p_holm`, `t_p_holm` (Holm within dataset × n_labeled over the non-reference methods),
        `is_reference` and `note` ("reference", "no reference at this labeled count", ...). When `reference` is absent
        from `per_case` altogether every test column is NaN and the note says so.
    """
    _check_alternative(alternative)
    rows = []
    for (dataset, n_labeled), group in per_case.groupby(["dataset", "n_labeled"], sort=True):
        ref_rows = group[group["method"] == reference]
        ref_cases = case_means(ref_rows, metric) if not ref_rows.empty else None
        for method, rows_m in group.groupby("method", sort=True):
            row = {
                "dataset": dataset,
                "method": method,
                "n_labeled": int(n_labeled),
                "is_reference": method == reference,
            }
            if method == reference:
                row.update(_no_test("reference"))
            else:
                row.update(_test_row(case_means(rows_m, metric), ref_cases, alternative))
            rows.append(row)
    out = pd.DataFrame(rows)
    if not (per_case["method"] == reference).any():
        out["note"] = f"reference method {reference!r} not in the results: no tests"
    out["wilcoxon_p_holm"] = math.nan
    out["t_p_holm"] = math.nan
    for _, family in out.groupby(["dataset", "n_labeled"]):
        out.loc[family.index, "wilcoxon_p_holm"] = holm(family["wilcoxon_p"].to_numpy())
        out.loc[family.index, "t_p_holm"] = holm(family["t_p"].to_numpy())
    return out
