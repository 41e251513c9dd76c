"""The paper-style results tables, summary.json and `write_tables`, from the cells of `harness.report.aggregate`.

* `build_table`: one dataset and distance unit; methods × (Dice, Jaccard, 95HD, ASD) as mean ± std over seeds, with
  the numbers of seeds and of empty predictions;
* `dataset_tables`: every table of one dataset: the results in voxels and in mm, the published comparison and the
  statistics (`harness.report.comparison_tables`);
* `build_summary`: summary.json content (DVC metrics).

`write_tables` writes all of them (Markdown, CSV, LaTeX, HTML; `harness.report.table_model`) with `runs.csv` and
`summary.json`. The provenance page lives in `harness.report.provenance_page`, the cost table in
`harness.report.cost_table`.
Dice/Jaccard are in percent in every output written here.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import __version__
from harness.report.aggregate import (
    CELL_KEYS,
    METRICS,
    PERCENT_METRICS,
    REFERENCE_ZERO,
    RUN_COLUMNS,
    TABLE_HEADER,
    UNITS,
    load_per_case,
    per_cell,
    per_run,
)
from harness.report.comparison_tables import TableOptions, build_published_table, build_stats_table
from harness.report.stats import cell_intervals
from harness.report.table_model import (
    DISPLAY_METRICS,
    Entry,
    Table,
    dataset_cells,
    label_entries,
    mark_best,
    mean_std_entry,
    table_data,
    write_table,
    write_text_atomic,
)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ the main table
def _seeds_text(n_seeds: pd.Series) -> str:
    """Caption phrase for the number of seeds per cell."""
    low, high = int(n_seeds.min()), int(n_seeds.max())
    if low != high:
        return f"{low}–{high} seeds per cell (see Seeds)"
    return "1 seed per cell (std undefined, shown as –)" if low == 1 else f"{low} seeds per cell"


def _policy_text(cells: pd.DataFrame) -> str:
    """Caption sentences on the empty-prediction policies of `cells`."""
    policies = sorted({p for joined in cells["empty_pred_policy"] for p in joined.split(";")})
    parts = [
        f"Empty-prediction policy: {', '.join(policies)}; Empty preds = empty predictions summed over seeds and cases."
    ]
    if "nan" in policies:
        parts.append("Policy nan: distance means exclude the empty predictions.")
    if REFERENCE_ZERO in policies:
        parts.append("† reference_zero: empty predictions scored 0 on every metric (distances biased low).")
    return " ".join(parts)


def _caption(cells: pd.DataFrame, dataset: str, unit: str) -> str:
    """Plain-text caption: dataset, units, statistic, seeds, bold rule and empty-prediction policies."""
    unit_word = "voxels" if unit == "voxel" else "mm"
    parts = [
        f"{dataset} test set (n_train = {int(cells['n_train'].iloc[0])}): Dice and Jaccard in %, "
        f"95HD and ASD in {unit_word} ({unit}).",
        "Values are mean ± std over seeds (ddof=1) of the per-run means over test cases;",
        f"{_seeds_text(cells['n_seeds'])}.",
        "Bold: best mean of each column within a labeled count.",
        _policy_text(cells),
    ]
    return " ".join(parts)


def build_table(cells: pd.DataFrame, dataset: str, unit: str) -> Table:
    """The results table of one dataset in one distance unit.

    Args:
        cells: per-cell frame as returned by `per_cell` (already in paper row order).
        dataset: which dataset's rows to take.
        unit: 'voxel' (hd95/asd) or 'mm' (hd95_mm/asd_mm).

    Returns:
        The `Table` (name '<dataset>_<unit>'); render it with any renderer.
    """
    if unit not in UNITS:
        raise ValueError(f"unit: expected one of {sorted(UNITS)}, got {unit!r}")
    subset = dataset_cells(cells, dataset)
    data = table_data(subset, unit)
    groups = tuple(int(n) for n in data["n_labeled"])
    rows = []
    for _, row in data.iterrows():
        stats = [mean_std_entry(row[f"{m}_mean"], row[f"{m}_std"]) for m, _ in DISPLAY_METRICS]
        rows.append(
            [*label_entries(row), *stats, Entry(str(int(row["n_seeds"]))), Entry(str(int(row["n_empty_pred"])))]
        )
    for i, (_, higher) in enumerate(DISPLAY_METRICS):
        mark_best(rows, groups, 2 + i, higher)
    commits = sorted({c for joined in data["git_commit"] for c in joined.split(";")})
    return Table(
        name=f"{dataset}_{unit}",
        title=f"Table ({dataset}, {unit})",
        caption=_caption(subset, dataset, unit),
        header=tuple(h.format(unit=unit) for h in TABLE_HEADER),
        rows=tuple(tuple(r) for r in rows),
        groups=groups,
        data=data,
        footer=f"Source runs: git commit(s) {', '.join(commits)}; config hashes in {dataset}_{unit}.csv.",
    )


# ------------------------------------------------------------------------------------------ summary + write_tables
def _json_value(value: Any) -> Any:
    """Plain JSON value: numpy scalars to Python, non-finite floats to None (null)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _percent_record(row: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Record of `names` from `row`; Dice/Jaccard entries (prefix dice/jaccard) scaled to percent."""
    record = {}
    for name in names:
        value = _json_value(row[name])
        if value is not None and name.split("_")[0] in PERCENT_METRICS:
            value = 100.0 * value
        record[name] = value
    return record


def build_summary(
    runs: pd.DataFrame,
    cells: pd.DataFrame,
    provenance: Mapping[str, Any] | None = None,
    intervals: pd.DataFrame | None = None,
) -> dict:
    """summary.json content (DVC metrics): flat numeric leaves, Dice/Jaccard in percent, NaN as None.

    Layout: {"generated_by", "units", "provenance", "cells": {dataset: {"<method>@labeled~<n>": {...}}}, "runs": [...]}.
    With `intervals` (`harness.report.stats.cell_intervals` of Dice, fractions), each cell also gets `dice_ci_low/high`.
    """
    cell_fields = ["n_labeled", "n_train", "labeled_pct", "setting", "n_seeds", "n_cases", "n_empty_pred"]
    stat_fields = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    if intervals is not None:
        cells = cells.merge(intervals, on=list(CELL_KEYS), how="left", validate="one_to_one")
        stat_fields += ["dice_ci_low", "dice_ci_high"]
    tree: dict[str, dict[str, Any]] = {}
    for _, row in cells.iterrows():
        record = _percent_record(row, [*cell_fields[:4], *stat_fields, *cell_fields[4:], "empty_pred_policy"])
        tree.setdefault(row["dataset"], {})[f"{row['method']}@labeled~{row['n_labeled']}"] = record
    run_records = [_percent_record(row, RUN_COLUMNS) for _, row in runs.iterrows()]
    units = {"dice": "percent", "jaccard": "percent", "hd95": "voxel", "asd": "voxel", "hd95_mm": "mm", "asd_mm": "mm"}
    return {
        "generated_by": f"harness.report.tables.write_tables (harness {__version__})",
        "units": units,
        "statistic": "cells: mean and sample std (ddof=1) over seeds of per-run means over test cases",
        "provenance": dict(provenance or {}),
        "cells": tree,
        "runs": run_records,
    }


def _check_provenance(provenance: Mapping[str, Any] | None) -> None:
    """ValueError unless `provenance` is None or a mapping that serialises to strict JSON (no NaN)."""
    if provenance is None:
        return
    if not isinstance(provenance, Mapping):
        raise ValueError(f"provenance: expected a mapping or None, got {type(provenance).__name__}")
    try:
        json.dumps(dict(provenance), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"provenance: expected JSON-serialisable values without NaN ({err})") from err


def dataset_tables(cells: pd.DataFrame, per_case: pd.DataFrame, dataset: str, options: TableOptions) -> list[Table]:
    """Every table of one dataset: voxel and mm results, the published comparison, the statistics."""
    return [
        *(build_table(cells, dataset, unit) for unit in UNITS),
        build_published_table(cells, per_case, dataset, options),
        build_stats_table(cells, per_case, dataset, options),
    ]


def write_tables(
    per_case_paths: str | os.PathLike | Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    provenance: Mapping[str, Any] | None = None,
    options: TableOptions | None = None,
) -> dict[str, Path]:
    """Aggregate per-case files and write every table, runs.csv and summary.json under `out_dir`.

    Writes `tables/{dataset}_{kind}.{md,csv,tex,html}` for kind in ('voxel', 'mm', 'published', 'stats'),
    `runs.csv` (per-run means, Dice and Jaccard as fractions) and `summary.json` (see `build_summary`), atomically.

    Args:
        per_case_paths: `metrics_per_case.csv` file(s), one per training run.
        out_dir: results folder (e.g. `results/<name>/`).
        provenance: optional JSON-serialisable mapping copied to summary.json["provenance"].
        options: published source, reference method and bootstrap settings (defaults: `TableOptions()`).

    Returns:
        Mapping from the path relative to `out_dir` (e.g. 'tables/LA_voxel.md', 'summary.json') to the path written.
    """
    _check_provenance(provenance)
    options = options or TableOptions()
    out = Path(out_dir)
    per_case = load_per_case(per_case_paths)
    runs = per_run(per_case)
    cells = per_cell(runs)
    written: dict[str, Path] = {}
    for dataset in cells["dataset"].unique():
        for table in dataset_tables(cells, per_case, dataset, options):
            for ext, path in write_table(table, out / "tables").items():
                written[f"tables/{table.name}.{ext}"] = path
    intervals = cell_intervals(
        per_case, ["dice"], n_resamples=options.n_resamples, seed=options.bootstrap_seed, confidence=options.confidence
    )
    summary_text = json.dumps(build_summary(runs, cells, provenance, intervals), indent=2, allow_nan=False)
    written["runs.csv"] = write_text_atomic(out / "runs.csv", runs.to_csv(index=False, lineterminator="\n"))
    written["summary.json"] = write_text_atomic(out / "summary.json", summary_text + "\n")
    logger.info("wrote %d aggregate files under %s", len(written), out)
    return written
