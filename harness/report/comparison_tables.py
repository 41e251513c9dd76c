"""The published-comparison table and the statistics table of one dataset, and their settings (`TableOptions`).

* `build_published_table`: the voxel results beside one published source table, the difference and a flag where the
  published value lies outside the reproduced 95% bootstrap interval (`harness.report.published`,
  `harness.report.stats`);
* `build_stats_table`: per-case paired Wilcoxon and t-tests against a reference method with Holm's correction, and
  the 95% bootstrap CI of the mean Dice (`harness.report.stats`).

Both return a `harness.report.table_model.Table`; `harness.report.tables.write_tables` writes them beside the results
tables.
Dice/Jaccard are in percent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.report.aggregate import CELL_KEYS, MISSING, PERCENT_METRICS
from harness.report.published import SOURCES, check_source, join_published, load_published, published_rows
from harness.report.stats import ALTERNATIVES, cell_intervals, compare_to_reference
from harness.report.table_model import (
    DISPLAY_METRICS,
    Entry,
    Table,
    dataset_cells,
    format_number,
    format_p,
    is_finite,
    label_entries,
    mark_best,
    mean_std_entry,
    table_data,
)

OUTSIDE_CI_MARK = "*"


@dataclass(frozen=True)
class TableOptions:
    """Settings of the published comparison and the statistics (config `report.*`).

    Attributes:
        published_source: key of `harness.report.published.SOURCES`, or 'none'.
        reference_method: method every other method is tested against (absent → no tests, said in the caption).
        n_resamples: bootstrap resamples per cell and metric.
        bootstrap_seed: base seed of the bootstrap generators.
        alternative: 'two-sided', 'less' or 'greater' for d = method − reference.
        confidence: coverage of the bootstrap intervals.
    """

    published_source: str = "simcvd"
    reference_method: str = "simcvd"
    n_resamples: int = 2000
    bootstrap_seed: int = 0
    alternative: str = "two-sided"
    confidence: float = 0.95

    def __post_init__(self) -> None:
        check_source(self.published_source)
        if self.alternative not in ALTERNATIVES:
            raise ValueError(f"alternative: expected one of {ALTERNATIVES}, got {self.alternative!r}")
        if self.n_resamples < 100:
            raise ValueError(f"n_resamples: expected at least 100 bootstrap resamples, got {self.n_resamples}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence: expected a value in (0, 1), got {self.confidence}")


# ------------------------------------------------------------------------------------------ published comparison
def _published_caption(dataset: str, joined: pd.DataFrame, options: TableOptions, has_rows: bool) -> str:
    """Caption of the comparison table: which source each published column uses, Δ, the flag and caveats."""
    if options.published_source == "none":
        head = "No published source selected (report.published_source: none): the published columns are empty."
    else:
        label = SOURCES[options.published_source].label
        tables = sorted({t for t in joined["published_table"] if t})
        if has_rows:
            head = f"Published columns (pub.): {label}; rows from {'; '.join(tables) or 'none of its rows'}."
        else:
            head = f"{label} has no values for dataset {dataset}: the published columns are empty."
    units = sorted({u for u in joined["published_unit"] if u})
    unit_text = f"published distances in {', '.join(units)}" if units else "published distance unit not confirmed"
    unit_text = f"; {unit_text}" if has_rows else ""
    parts = [
        f"{dataset}: reproduced mean ± std over seeds (Dice/Jaccard in %, 95HD/ASD in voxels) beside one published",
        f"source table. {head} Δ = reproduced − published (percentage points for Dice/Jaccard).",
        f"{OUTSIDE_CI_MARK} = the published value lies outside the {100 * options.confidence:.0f}% bootstrap interval",
        f"of the reproduced mean (seeds and test cases resampled, B = {options.n_resamples}, seed",
        f"{options.bootstrap_seed}). – = no published value. Published numbers are single runs whose code scores an",
        f"empty prediction 0 on every metric{unit_text}. Pub. selection = how the published checkpoint was chosen",
        "(last, best-on-test: selected on the test cases, or not stated; harness/report/published.csv says where).",
    ]
    return " ".join(parts)


def _flag(published: float, low: float, high: float) -> Any:
    """True if `published` lies outside [low, high], False inside, pd.NA when either is undefined."""
    if not (is_finite(published) and is_finite(low) and is_finite(high)):
        return pd.NA
    return bool(published < low or published > high)


def _published_data(cells: pd.DataFrame, per_case: pd.DataFrame, options: TableOptions) -> pd.DataFrame:
    """Voxel table data + published values, differences, bootstrap CIs (display units) and outside-CI flags."""
    data = table_data(cells, "voxel")
    joined = join_published(data, load_published(), options.published_source)
    ci = cell_intervals(
        per_case,
        [m for m, _ in DISPLAY_METRICS],
        n_resamples=options.n_resamples,
        seed=options.bootstrap_seed,
        confidence=options.confidence,
    )
    joined = joined.merge(ci, on=list(CELL_KEYS), how="left", validate="one_to_one")
    for metric, _ in DISPLAY_METRICS:
        scale = 100.0 if metric in PERCENT_METRICS else 1.0
        joined[f"{metric}_ci_low"] *= scale
        joined[f"{metric}_ci_high"] *= scale
        joined[f"{metric}_diff"] = joined[f"{metric}_mean"] - joined[f"{metric}_published"]
        flags = [
            _flag(p, lo, hi)
            for p, lo, hi in zip(
                joined[f"{metric}_published"], joined[f"{metric}_ci_low"], joined[f"{metric}_ci_high"], strict=True
            )
        ]
        joined[f"{metric}_outside_ci"] = pd.array(flags, dtype="boolean")
    joined["published_source"] = options.published_source
    return joined


def _published_row(row: pd.Series) -> list[Entry]:
    """Entries of one comparison row: labels, then per metric reproduced mean ± std, published value, Δ (+ flag)."""
    entries = label_entries(row)
    for metric, _ in DISPLAY_METRICS:
        flag = row[f"{metric}_outside_ci"]
        mark = OUTSIDE_CI_MARK if flag is not pd.NA and bool(flag) else ""
        diff = format_number(row[f"{metric}_diff"], signed=True)
        entries += [
            mean_std_entry(row[f"{metric}_mean"], row[f"{metric}_std"]),
            Entry(format_number(row[f"{metric}_published"])),
            Entry(diff + mark if diff != MISSING else diff),
        ]
    return [*entries, Entry(str(int(row["n_seeds"]))), Entry(row["published_selection"] or MISSING)]


def build_published_table(
    cells: pd.DataFrame, per_case: pd.DataFrame, dataset: str, options: TableOptions | None = None
) -> Table:
    """Voxel results of one dataset beside one published source table.

    Args:
        cells: per-cell frame (`per_cell`).
        per_case: per-case frame (`load_per_case`), for the bootstrap intervals.
        dataset: which dataset's rows to take.
        options: published source and bootstrap settings (defaults: SimCVD Table I/II, B = 2000, seed 0).

    Returns:
        Table '<dataset>_published': per metric the reproduced mean ± std (best bold), the published value and
        Δ = reproduced − published, with '*' after Δ where the published value lies outside the bootstrap interval.
        Its data holds `{metric}_{mean,std,ci_low,ci_high,published,diff,outside_ci}` and the source columns.
    """
    options = options or TableOptions()
    subset = dataset_cells(cells, dataset)
    data = _published_data(subset, per_case[per_case["dataset"] == dataset], options)
    has_rows = (
        options.published_source != "none"
        and not published_rows(load_published(), options.published_source, dataset).empty
    )
    groups = tuple(int(n) for n in data["n_labeled"])
    rows = [_published_row(row) for _, row in data.iterrows()]
    for i, (_, higher) in enumerate(DISPLAY_METRICS):
        mark_best(rows, groups, 2 + 3 * i, higher)
    header = ["Method", "Labeled"]
    for title in ("Dice (%)", "Jaccard (%)", "95HD (voxel)", "ASD (voxel)"):
        short = title.split(" ")[0]
        header += [title, f"{short} pub.", f"{short} Δ"]
    header += ["Seeds", "Pub. selection"]
    return Table(
        name=f"{dataset}_published",
        title=f"Published comparison ({dataset}, voxel)",
        caption=_published_caption(dataset, data, options, has_rows),
        header=tuple(header),
        rows=tuple(tuple(r) for r in rows),
        groups=groups,
        data=data,
    )


# ------------------------------------------------------------------------------------------------------ statistics
def _stats_caption(dataset: str, tests: pd.DataFrame, options: TableOptions) -> str:
    """Caption of the statistics table; says so when the reference method is absent."""
    ref = options.reference_method
    if not tests["is_reference"].any():
        methods = ", ".join(sorted(tests["method"].unique()))
        ref_text = (
            f"The reference method {ref!r} is not in the results, so no tests were run (p-value columns empty); "
            f"set report.reference_method to one of: {methods}."
        )
    else:
        ref_text = (
            f"Reference method: {ref}. Paired tests per test case ({options.alternative}) on d = method − {ref} of "
            "the per-case Dice averaged over each method's seeds: Wilcoxon signed-rank (scipy, zero differences "
            "dropped) and paired t; Holm = Holm-corrected over the methods tested at the same labeled count."
        )
    return " ".join(
        [
            f"{dataset}: mean Dice (%) over test cases and seeds with its {100 * options.confidence:.0f}% bootstrap",
            f"confidence interval (seeds and cases resampled independently, B = {options.n_resamples}, seed",
            f"{options.bootstrap_seed}); Δ = mean paired difference in percentage points.",
            ref_text,
            "– = no test (the method is the reference, or no reference run at that labeled count; reasons in the CSV).",
        ]
    )


def _stats_data(cells: pd.DataFrame, per_case: pd.DataFrame, options: TableOptions) -> pd.DataFrame:
    """Cell keys + mean Dice (%), its CI, and the test columns (Δ in percentage points)."""
    data = cells[[*CELL_KEYS, "setting", "n_train", "n_seeds", "n_cases", "empty_pred_policy"]].copy()
    data["dice_mean"] = cells["dice_mean"] * 100.0
    ci = cell_intervals(
        per_case,
        ["dice"],
        n_resamples=options.n_resamples,
        seed=options.bootstrap_seed,
        confidence=options.confidence,
    )
    tests = compare_to_reference(per_case, reference=options.reference_method, alternative=options.alternative)
    data = data.merge(ci, on=list(CELL_KEYS), how="left").merge(tests, on=list(CELL_KEYS), how="left")
    for column in ("dice_ci_low", "dice_ci_high", "mean_diff"):
        data[column] *= 100.0
    data["reference_method"] = options.reference_method
    data["alternative"] = options.alternative
    return data.reset_index(drop=True)


def build_stats_table(
    cells: pd.DataFrame, per_case: pd.DataFrame, dataset: str, options: TableOptions | None = None
) -> Table:
    """Mean Dice with its bootstrap CI and paired tests against the reference method, for one dataset.

    Args:
        cells: per-cell frame (`per_cell`).
        per_case: per-case frame (`load_per_case`).
        dataset: which dataset's rows to take.
        options: reference method, alternative and bootstrap settings.

    Returns:
        Table '<dataset>_stats'; its data holds `dice_ci_low/high`, `mean_diff`, `wilcoxon_*`, `t_*`, `*_holm`.
    """
    options = options or TableOptions()
    subset = dataset_cells(cells, dataset)
    data = _stats_data(subset, per_case[per_case["dataset"] == dataset], options)
    rows = []
    for _, row in data.iterrows():
        ci = f"[{format_number(row['dice_ci_low'])}, {format_number(row['dice_ci_high'])}]"
        rows.append(
            [
                *label_entries(row),
                Entry(str(int(row["n_pairs"]) if row["n_pairs"] else MISSING)),
                Entry(format_number(row["dice_mean"])),
                Entry(ci if is_finite(row["dice_ci_low"]) else MISSING),
                Entry("reference" if row["is_reference"] else format_number(row["mean_diff"], signed=True)),
                *(Entry(format_p(row[c])) for c in ("wilcoxon_p", "wilcoxon_p_holm", "t_p", "t_p_holm")),
            ]
        )
    ref = options.reference_method
    header = (
        "Method",
        "Labeled",
        "Paired cases",
        "Dice (%)",
        "95% CI",
        f"Δ vs {ref}",
        "Wilcoxon p",
        "Holm p",
        "t-test p",
        "Holm p",
    )
    return Table(
        name=f"{dataset}_stats",
        title=f"Statistics ({dataset}, Dice)",
        caption=_stats_caption(dataset, data, options),
        header=header,
        rows=tuple(tuple(r) for r in rows),
        groups=tuple(int(n) for n in data["n_labeled"]),
        data=data,
    )
