"""Tests for harness.report.stats: paired tests against hand-computed values and scipy, Holm, the crossed bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.report.stats import (
    bootstrap_mean_ci,
    cell_intervals,
    cell_rng,
    compare_to_reference,
    holm,
    paired_t,
    paired_tests,
    seed_case_grid,
    wilcoxon_signed_rank,
)

# d = x - y = [1, -2, 3, 4]: |d| ranks 1, 2, 3, 4; W+ = 1 + 3 + 4 = 8, W- = 2
X = [2.0, 0.0, 5.0, 8.0]
Y = [1.0, 2.0, 2.0, 4.0]


def t3_sf(t: float) -> float:
    """Upper tail of Student's t with 3 degrees of freedom, closed form: 1/2 - (u/(1+u²) + atan u)/π with u = t/√3."""
    u = t / math.sqrt(3.0)
    return 0.5 - (u / (1.0 + u * u) + math.atan(u)) / math.pi


# --------------------------------------------------------------------------------------------------- paired t
def test_paired_t_hand_values():
    t, p = paired_t(X, Y)
    # mean(d) = 1.5, sd(d) = sqrt(21/3) = sqrt(7): t = 1.5 / (sqrt(7) / 2) = 3 / sqrt(7)
    assert t == pytest.approx(3.0 / math.sqrt(7.0), rel=1e-12)
    assert p == pytest.approx(2.0 * t3_sf(3.0 / math.sqrt(7.0)), rel=1e-9)
    assert paired_t(X, Y, alternative="greater")[1] == pytest.approx(t3_sf(t), rel=1e-9)
    assert paired_t(X, Y, alternative="less")[1] == pytest.approx(1.0 - t3_sf(t), rel=1e-9)


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_paired_t_matches_scipy(alternative):
    rng = np.random.default_rng(3)
    x = rng.normal(0.8, 0.05, 20)
    y = x + rng.normal(-0.01, 0.02, 20)
    ref = sps.ttest_rel(x, y, alternative=alternative)
    t, p = paired_t(x, y, alternative=alternative)
    assert t == pytest.approx(ref.statistic, rel=1e-10)
    assert p == pytest.approx(ref.pvalue, rel=1e-8)


def test_paired_t_degenerate_cases():
    assert all(math.isnan(v) for v in paired_t([1.0], [0.5]))  # n < 2
    assert all(math.isnan(v) for v in paired_t([1.0, 2.0], [1.0, 2.0]))  # all differences 0
    t, p = paired_t([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])  # constant non-zero difference: as scipy
    assert t == math.inf and p == 0.0
    with pytest.raises(ValueError, match="x, y"):
        paired_t([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_t([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="alternative"):
        paired_t(X, Y, alternative="smaller")


# --------------------------------------------------------------------------------------------------- Wilcoxon
def test_wilcoxon_exact_hand_values():
    # exact null of W+ over the 16 sign patterns of ranks {1, 2, 3, 4}: P(min(W+, W-) <= 2) = #{0, 1, 2} = 3/16
    assert wilcoxon_signed_rank(X, Y) == pytest.approx((2.0, 2 * 3 / 16))
    # one-sided: P(W+ >= 8) = #{8: {1,3,4}, 9: {2,3,4}, 10: {1,2,3,4}} / 16
    assert wilcoxon_signed_rank(X, Y, alternative="greater") == pytest.approx((8.0, 3 / 16))
    assert wilcoxon_signed_rank(X, Y, alternative="less") == pytest.approx((8.0, 1 - 2 / 16))


def test_wilcoxon_zero_differences_dropped_and_matches_scipy():
    # one zero difference is dropped (zero_method "wilcox"): n = 3 ranks {1, 2, 3}, W+ = 6, two-sided p = 2/8
    assert wilcoxon_signed_rank([1.0, 1.0, 3.0, 4.0], [0.0, 1.0, 1.0, 1.0]) == pytest.approx((0.0, 0.25))
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert wilcoxon_signed_rank(x, y) == pytest.approx(tuple(sps.wilcoxon(x - y)), rel=1e-12)


def test_paired_tests_bundle():
    res = paired_tests(X, Y, alternative="two-sided")
    assert (res.n, res.mean_diff) == (4, pytest.approx(1.5))
    assert (res.wilcoxon_statistic, res.wilcoxon_p) == pytest.approx((2.0, 0.375))
    assert res.t_statistic == pytest.approx(3.0 / math.sqrt(7.0))


# ------------------------------------------------------------------------------------------------------- Holm
def test_holm_hand_values():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # 2 * 0.4 = 0.8, then max(0.8, 0.5)
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([np.nan, 0.02, 0.04])  # NaN is not part of the family: m = 2
    assert math.isnan(out[0]) and out[1:] == pytest.approx([0.04, 0.04])
    assert holm([]).size == 0
    with pytest.raises(ValueError, match="pvalues"):
        holm([1.5])


# ---------------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_constant_grid_is_exact():
    low, high = bootstrap_mean_ci(np.full((3, 5), 0.8), n_resamples=500, rng=np.random.default_rng(0))
    assert (low, high) == (pytest.approx(0.8), pytest.approx(0.8))


def test_bootstrap_two_values_hand_distribution():
    # one seed, cases {0, 1}: resampled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4 -> 2.5% = 0, 97.5% = 1
    assert bootstrap_mean_ci(np.array([[0.0, 1.0]]), n_resamples=4000, rng=np.random.default_rng(1)) == (0.0, 1.0)
    # two seeds, one case: the seeds are resampled the same way
    assert bootstrap_mean_ci(np.array([[0.0], [1.0]]), n_resamples=4000, rng=np.random.default_rng(1)) == (0.0, 1.0)


def test_bootstrap_one_seed_matches_scipy_percentile():
    values = np.random.default_rng(7).uniform(0.6, 0.95, 20)
    low, high = bootstrap_mean_ci(values[None, :], n_resamples=20000, rng=np.random.default_rng(2))
    ref = sps.bootstrap((values,), np.mean, n_resamples=20000, method="percentile", rng=np.random.default_rng(3))
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.03 * width)
    assert high == pytest.approx(ref.confidence_interval.high, abs=0.03 * width)


def test_bootstrap_crossed_seeds_widen_the_interval_and_skip_nan():
    rng = np.random.default_rng(4)
    cases = rng.uniform(0.7, 0.9, 10)
    same = np.vstack([cases, cases, cases])
    shifted = np.vstack([cases - 0.05, cases, cases + 0.05])  # seed effect on top of the case effect
    a = bootstrap_mean_ci(same, n_resamples=3000, rng=np.random.default_rng(0))
    b = bootstrap_mean_ci(shifted, n_resamples=3000, rng=np.random.default_rng(0))
    assert b[1] - b[0] > a[1] - a[0]
    with_nan = shifted.copy()
    with_nan[0, 0] = np.nan
    low, high = bootstrap_mean_ci(with_nan, n_resamples=500, rng=np.random.default_rng(0))
    assert math.isfinite(low) and low < np.nanmean(with_nan) < high
    assert all(math.isnan(v) for v in bootstrap_mean_ci(np.full((2, 2), np.nan), n_resamples=100, rng=rng))
    with pytest.raises(ValueError, match="values"):
        bootstrap_mean_ci(np.ones(3), n_resamples=10, rng=rng)


def test_bootstrap_is_seeded():
    grid = np.random.default_rng(9).uniform(size=(3, 8))
    first = bootstrap_mean_ci(grid, n_resamples=300, rng=cell_rng(0, "LA", "dtc", 8, "dice"))
    again = bootstrap_mean_ci(grid, n_resamples=300, rng=cell_rng(0, "LA", "dtc", 8, "dice"))
    other = bootstrap_mean_ci(grid, n_resamples=300, rng=cell_rng(1, "LA", "dtc", 8, "dice"))
    assert first == again and first != other


# ------------------------------------------------------------------------------------------- per-case frames
def per_case(specs: dict[tuple[str, int, int], list[float]], dataset: str = "LA") -> pd.DataFrame:
    """Per-case rows from {(method, n_labeled, seed): [dice per case c0, c1, ...]}."""
    rows = []
    for (method, n_labeled, seed), dice in specs.items():
        rows += [
            {
                "dataset": dataset,
                "method": method,
                "n_labeled": n_labeled,
                "seed": seed,
                "case": f"c{i}",
                "dice": d,
                "hd95": 10 * (1 - d),
            }
            for i, d in enumerate(dice)
        ]
    return pd.DataFrame(rows)


def test_seed_case_grid_and_cell_intervals():
    df = per_case({("a", 8, 2): [0.1, 0.2], ("a", 8, 1): [0.3, np.nan]})
    grid = seed_case_grid(df, "dice")
    np.testing.assert_array_equal(grid, [[0.3, np.nan], [0.1, 0.2]])  # seeds sorted: 1, 2
    ci = cell_intervals(df, ["dice", "hd95"], n_resamples=200, seed=0)
    assert list(ci.columns) == [
        "dataset",
        "method",
        "n_labeled",
        "dice_ci_low",
        "dice_ci_high",
        "hd95_ci_low",
        "hd95_ci_high",
    ]
    row = ci.iloc[0]
    assert 0.1 <= row["dice_ci_low"] <= row["dice_ci_high"] <= 0.3
    # order-independent seeding: the same cell gives the same interval when other cells are added
    more = pd.concat([df, per_case({("b", 8, 1): [0.5, 0.6]})])
    again = cell_intervals(more, ["dice"], n_resamples=200, seed=0)
    assert again.iloc[0]["dice_ci_low"] == row["dice_ci_low"]


def test_compare_to_reference_pairs_case_means_over_seeds():
    df = per_case(
        {
            ("simcvd", 8, 1): [0.9, 0.8, 0.85, 0.7, 0.95],
            ("simcvd", 8, 2): [0.8, 0.8, 0.75, 0.9, 0.85],
            ("ua_mt", 8, 1): [0.7, 0.8, 0.6, 0.6, 0.8],
            ("ua_mt", 8, 2): [0.8, 0.6, 0.7, 0.65, 0.9],
            ("dtc", 8, 1): [0.9, 0.7, 0.8, 0.8, 0.9],
            ("dtc", 16, 1): [0.9, 0.9, 0.9, 0.9, 0.9],  # no reference at 16
        }
    )
    out = compare_to_reference(df, reference="simcvd").set_index(["method", "n_labeled"])
    ref = np.array([0.85, 0.8, 0.8, 0.8, 0.9])  # per-case mean over the two simcvd seeds
    ua = np.array([0.75, 0.7, 0.65, 0.625, 0.85])
    dtc = np.array([0.9, 0.7, 0.8, 0.8, 0.9])
    for method, values in (("ua_mt", ua), ("dtc", dtc)):
        row = out.loc[(method, 8)]
        assert row["n_pairs"] == 5 and row["mean_diff"] == pytest.approx(np.mean(values - ref))
        assert row["t_p"] == pytest.approx(sps.ttest_rel(values, ref).pvalue, rel=1e-8)
        assert row["wilcoxon_p"] == pytest.approx(sps.wilcoxon(values - ref).pvalue, rel=1e-12)
    family = out.loc[[("ua_mt", 8), ("dtc", 8)]]
    np.testing.assert_allclose(family["t_p_holm"], holm(family["t_p"].to_numpy()))
    assert out.loc[("simcvd", 8), "is_reference"] and out.loc[("simcvd", 8), "note"] == "reference"
    assert math.isnan(out.loc[("simcvd", 8), "t_p"])
    assert out.loc[("dtc", 16), "note"] == "no reference at this labeled count"
    assert math.isnan(out.loc[("dtc", 16), "wilcoxon_p_holm"])


def test_compare_to_reference_absent_reference_runs_no_test():
    df = per_case({("ua_mt", 8, 1): [0.7, 0.8, 0.6], ("dtc", 8, 1): [0.9, 0.7, 0.8]})
    out = compare_to_reference(df, reference="simcvd")
    assert out["t_p"].isna().all() and out["wilcoxon_p"].isna().all() and out["t_p_holm"].isna().all()
    assert set(out["note"]) == {"reference method 'simcvd' not in the results: no tests"}
    assert not out["is_reference"].any()
