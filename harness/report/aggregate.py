"""Aggregate per-case metrics into per-run means, per-cell mean ± std over seeds, paper-style tables and summary.json.

Pipeline (`docs/protocol.md` §4.8):

1. `load_per_case`: read and validate the `metrics_per_case.csv` files (one per training run, one row per test case).
2. `per_run`: mean over the test cases of each run (NaN distances skipped, empty predictions counted).
3. `per_cell`: mean and sample std (ddof = 1) over seeds for each (dataset, method, n_labeled) cell, with the
   upper/lower-bound labels and the row order papers use.
4. `harness.report.tables.write_tables` renders the cells as Markdown, CSV, LaTeX and HTML tables (the results table
   of `harness.report.tables`; the published comparison and the statistics of `harness.report.stats` from
   `harness.report.comparison_tables`; the table model and renderers of `harness.report.table_model`) and writes
   them with `runs.csv` and `summary.json`.

Units: per-case files and `runs.csv` keep Dice/Jaccard as fractions in [0, 1]; every aggregated output (tables, their
CSV files and `summary.json`) gives Dice/Jaccard in percent. HD95/ASD are in voxels, `*_mm` in millimetres. Column
order is always Dice, Jaccard, HD95, ASD (protocol §4.5).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from harness.evaluate.score import PER_CASE_COLUMNS

logger = logging.getLogger(__name__)

RUN_KEYS = ("dataset", "method", "n_labeled", "n_train", "seed")
CELL_KEYS = ("dataset", "method", "n_labeled")
METRICS = ("dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm")
PERCENT_METRICS = ("dice", "jaccard")
DISTANCE_METRICS = ("hd95", "asd", "hd95_mm", "asd_mm")
PROVENANCE_COLUMNS = (
    "config_sha256",
    "method_version",
    "git_commit",
    "empty_pred_policy",
    "stride",
    "windows_per_batch",
    "code_sha256",
    "data_sha256",
    "model_sha256",
)
#: Settings every run of one dataset must share: one table never mixes data versions or evaluation protocols.
SHARED_PER_DATASET = ("data_sha256", "stride", "windows_per_batch", "empty_pred_policy")
RUN_COLUMNS = (*RUN_KEYS, *METRICS, "n_cases", "n_empty_pred", *PROVENANCE_COLUMNS)
INT_COLUMNS = ("n_labeled", "n_train", "seed", "empty_pred")
METHOD_ORDER = ("supervised", "mean_teacher", "ua_mt", "dtc", "cvrl", "sup_local_contrast", "simcvd")
UNITS = MappingProxyType({"voxel": ("hd95", "asd"), "mm": ("hd95_mm", "asd_mm")})
UPPER_BOUND = "upper bound"
LOWER_BOUND = "lower bound"
REFERENCE_ZERO = "reference_zero"
MISSING = "–"
TABLE_HEADER = ("Method", "Labeled", "Dice (%)", "Jaccard (%)", "95HD ({unit})", "ASD ({unit})", "Seeds", "Empty preds")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=@-]*$")  # `@` and `=`: method variants (simcvd@head_pool=64)


# ----------------------------------------------------------------------------------------------------------- loading
def require_columns(df: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    """Raise ValueError naming `where` and the first of `columns` missing from `df`."""
    for column in columns:
        if column not in df.columns:
            raise ValueError(f"{where}: missing column {column!r} (expected columns: {', '.join(columns)})")


def _as_path_list(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Normalise one path or an iterable of paths to a non-empty list of Paths."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    path_list = [Path(p) for p in paths]
    if not path_list:
        raise ValueError("paths: expected at least one metrics_per_case.csv path, got none")
    return path_list


def _coerce_numeric(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Convert the metric and integer columns of a string-typed frame to floats / ints; ValueError on bad values."""
    out = df.copy()
    for column in (*METRICS, *INT_COLUMNS):
        text = out[column].str.strip().replace({"": "nan"})
        values = pd.to_numeric(text, errors="coerce")
        bad = values.isna() & ~text.str.lower().isin(["nan", "na", "null", "none"])
        if bad.any():
            raise ValueError(f"{where}: column {column!r} has non-numeric value {text[bad].iloc[0]!r}")
        out[column] = values.astype(float)
    for column in INT_COLUMNS:
        values = out[column]
        if values.isna().any() or not np.all(np.mod(values, 1) == 0):
            raise ValueError(f"{where}: column {column!r} must hold integers without gaps")
        out[column] = values.astype(np.int64)
    return out


def _validate_values(df: pd.DataFrame, where: str) -> None:
    """Check ranges: fractions in [0, 1], distances >= 0 or NaN, 0/1 flags, 1 <= n_labeled <= n_train, safe names."""
    for column in PERCENT_METRICS:
        values = df[column]
        if values.isna().any() or ((values < 0) | (values > 1)).any():
            raise ValueError(f"{where}: column {column!r} must be a fraction in [0, 1] (not percent, not NaN)")
    for column in DISTANCE_METRICS:
        if (df[column] < 0).any() or np.isinf(df[column]).any():
            raise ValueError(f"{where}: column {column!r} must be finite and >= 0, or NaN")
    if not df["empty_pred"].isin([0, 1]).all():
        raise ValueError(f"{where}: column 'empty_pred' must be 0 or 1")
    if ((df["n_labeled"] < 1) | (df["n_labeled"] > df["n_train"])).any():
        raise ValueError(f"{where}: expected 1 <= n_labeled <= n_train")
    for column in ("dataset", "method"):
        bad = ~df[column].map(lambda s: bool(_SAFE_NAME.match(s)))
        if bad.any():
            raise ValueError(f"{where}: column {column!r} has unusable name {df[column][bad].iloc[0]!r}")
    for column in ("case", "empty_pred_policy"):
        if (df[column].str.strip() == "").any():
            raise ValueError(f"{where}: column {column!r} has an empty value")


def _read_one(path: Path) -> pd.DataFrame:
    """Read and validate one metrics_per_case.csv (all columns read as text first so IDs and hashes stay strings)."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    older = [c for c in PER_CASE_COLUMNS if c not in df.columns and c in PROVENANCE_COLUMNS]
    if older:
        raise ValueError(
            f"{path}: no column {older[0]!r}: written by an older version of the harness, without its evaluation "
            "settings and hashes; evaluate it again (`snakemake --forcerun evaluate` plus your usual options)"
        )
    require_columns(df, PER_CASE_COLUMNS, str(path))
    if df.empty:
        raise ValueError(f"{path}: no rows (expected one row per test case)")
    df = _coerce_numeric(df[list(PER_CASE_COLUMNS)], str(path))
    _validate_values(df, str(path))
    return df


def load_per_case(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read, validate and concatenate per-case metric files.

    Args:
        paths: one path or an iterable of paths to `metrics_per_case.csv` files (columns `PER_CASE_COLUMNS`; extra
            columns are ignored).

    Returns:
        DataFrame with exactly `PER_CASE_COLUMNS`, one row per (run, case): Dice/Jaccard as fractions, distances in
        voxels (`hd95`, `asd`) and mm (`*_mm`, NaN allowed), integer counts, text provenance.

    Raises:
        ValueError: a file lacks a column (message names the file and the column), holds bad values, or the same
            (run, case) appears twice.
    """
    path_list = _as_path_list(paths)
    df = pd.concat([_read_one(p) for p in path_list], ignore_index=True)
    duplicated = df.duplicated(subset=[*RUN_KEYS, "case"])
    if duplicated.any():
        row = df[duplicated].iloc[0]
        raise ValueError(f"paths: case {row['case']!r} of run {_run_name(row)} appears more than once")
    logger.info("loaded %d per-case rows from %d file(s)", len(df), len(path_list))
    return df


def _run_name(row: Mapping[str, Any]) -> str:
    """Human-readable run identifier, e.g. 'LA/supervised/labeled~8/seed~0'."""
    return f"{row['dataset']}/{row['method']}/labeled~{row['n_labeled']}/seed~{row['seed']}"


# ------------------------------------------------------------------------------------------------ runs and cells
def per_run(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over test cases for each training run.

    Args:
        df: per-case frame as returned by `load_per_case`.

    Returns:
        One row per (dataset, method, n_labeled, n_train, seed) with columns `RUN_COLUMNS`: the case means of each
        metric (NaN distances skipped), `n_cases`, `n_empty_pred` (sum of the 0/1 flags) and the provenance columns.

    Raises:
        ValueError: a column is missing or a provenance column is not unique within a run.
    """
    require_columns(df, PER_CASE_COLUMNS, "df")
    grouped = df.groupby(list(RUN_KEYS), sort=True)
    n_distinct = grouped[list(PROVENANCE_COLUMNS)].nunique(dropna=False)
    for key, row in n_distinct.iterrows():
        for column in PROVENANCE_COLUMNS:
            if row[column] > 1:
                name = _run_name(dict(zip(RUN_KEYS, key, strict=True)))
                raise ValueError(f"df: column {column!r} must be unique within run {name}, got {row[column]} values")
    runs = pd.concat(
        [
            grouped[list(METRICS)].mean(),
            grouped.agg(n_cases=("case", "size"), n_empty_pred=("empty_pred", "sum")),
            grouped[list(PROVENANCE_COLUMNS)].first(),
        ],
        axis=1,
    ).reset_index()
    return runs[list(RUN_COLUMNS)]


def method_rank(method: str) -> int:
    """Position of `method` in the paper row order (a variant `<method>@<name>`: its method's, then by name);
    unknown methods share the last rank (then sort by name)."""
    base = method.split("@", 1)[0]
    return METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)


def setting_label(method: str, n_labeled: int, n_train: int) -> str:
    """'upper bound' (supervised, all labeled), 'lower bound' (supervised, fewer labeled) or '' (other methods)."""
    if method != "supervised":
        return ""
    return UPPER_BOUND if n_labeled == n_train else LOWER_BOUND


def _join_unique(values: pd.Series) -> str:
    """Sorted distinct values joined by ';' (numbers sorted numerically)."""
    return ";".join(str(v) for v in sorted(set(values.tolist())))


def _check_runs(runs: pd.DataFrame) -> None:
    """One n_train per dataset, n_labeled within range, and a warning if test-set sizes differ within a dataset."""
    if runs.empty:
        raise ValueError("runs: no rows")
    for dataset, group in runs.groupby("dataset"):
        if group["n_train"].nunique() != 1:
            raise ValueError(
                f"runs: dataset {dataset!r} has several n_train values {sorted(group['n_train'].unique())}"
            )
        for column in SHARED_PER_DATASET:
            values = sorted(group[column].unique())
            if len(values) > 1:
                raise ValueError(
                    f"runs: dataset {dataset!r} mixes {column} values {values} (one table must not mix data versions "
                    "or evaluation settings): some runs are stale; rerun the workflow so that they are recomputed"
                )
        if group["n_cases"].nunique() != 1:
            logger.warning(
                "dataset %s: runs have different numbers of test cases %s", dataset, group["n_cases"].unique()
            )
    if ((runs["n_labeled"] < 1) | (runs["n_labeled"] > runs["n_train"])).any():
        raise ValueError("runs: expected 1 <= n_labeled <= n_train")


def _order_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Paper row order: per dataset, by n_labeled then method order; the upper-bound row last."""
    key = pd.DataFrame(
        {
            "dataset": cells["dataset"],
            "upper": cells["setting"] == UPPER_BOUND,
            "n_labeled": cells["n_labeled"],
            "rank": cells["method"].map(method_rank),
            "method": cells["method"],
        }
    )
    order = key.sort_values(list(key.columns), kind="stable").index
    return cells.loc[order].reset_index(drop=True)


def per_cell(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof = 1) over seeds of the per-run means, per (dataset, method, n_labeled).

    Args:
        runs: per-run frame as returned by `per_run` (Dice/Jaccard fractions, distances in voxels and mm).

    Returns:
        One row per cell in paper order with: the cell keys, `setting`, `n_train`, `labeled_pct`
        (100 · n_labeled / n_train), `{metric}_mean` and `{metric}_std` for every metric in `METRICS` (same units as
        `runs`; std NaN with one seed), `n_seeds`, `seeds` ('0;1;2'), `n_cases` and `n_empty_pred` (sums over seeds)
        and the provenance columns as sorted distinct values joined by ';'.
    """
    require_columns(runs, RUN_COLUMNS, "runs")
    _check_runs(runs)
    grouped = runs.groupby(list(CELL_KEYS), sort=False)
    means = grouped[list(METRICS)].mean().add_suffix("_mean")
    stds = grouped[list(METRICS)].std(ddof=1).add_suffix("_std")
    counts = grouped.agg(
        n_train=("n_train", "first"),
        n_seeds=("seed", "nunique"),
        seeds=("seed", _join_unique),
        n_cases=("n_cases", "sum"),
        n_empty_pred=("n_empty_pred", "sum"),
    )
    provenance = grouped[list(PROVENANCE_COLUMNS)].agg(_join_unique)
    cells = pd.concat([counts, means, stds, provenance], axis=1).reset_index()
    cells["setting"] = [setting_label(*row) for row in cells[["method", "n_labeled", "n_train"]].itertuples(False)]
    cells["labeled_pct"] = 100.0 * cells["n_labeled"] / cells["n_train"]
    stat_columns = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    columns = [*CELL_KEYS, "setting", "n_train", "labeled_pct", *stat_columns, "n_seeds", "seeds", "n_cases"]
    return _order_cells(cells[[*columns, "n_empty_pred", *PROVENANCE_COLUMNS]])


# ---------------------------------------------------------------------------------------------------- formatting
