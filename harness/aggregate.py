"""Aggregate per-case metrics into per-run means, per-cell mean ± std over seeds, paper-style tables and summary.json.

Pipeline (`shared/spec/protocol.md` §4.8):

1. `load_per_case`: read and validate the `metrics_per_case.csv` files (one per training run, one row per test case).
2. `per_run`: mean over the test cases of each run (NaN distances skipped, empty predictions counted).
3. `per_cell`: mean and sample std (ddof = 1) over seeds for each (dataset, method, n_labeled) cell, with the
   upper/lower-bound labels and the row order papers use.
4. `build_table` turns the cells of one dataset and one distance unit into a `Table`, which `render_markdown`,
   `render_csv` and `render_latex` print; `write_tables` writes all tables, `runs.csv` and `summary.json`.

Units: per-case files and `runs.csv` keep Dice/Jaccard as fractions in [0, 1]; every aggregated output (tables, their
CSV files and `summary.json`) gives Dice/Jaccard in percent. HD95/ASD are in voxels, `*_mm` in millimetres. Column
order is always Dice, Jaccard, HD95, ASD (protocol §4.5).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from harness import __version__

logger = logging.getLogger(__name__)

PER_CASE_COLUMNS = (
    "dataset",
    "method",
    "n_labeled",
    "n_train",
    "seed",
    "case",
    "dice",
    "jaccard",
    "hd95",
    "asd",
    "hd95_mm",
    "asd_mm",
    "empty_pred",
    "empty_pred_policy",
    "config_sha256",
    "method_version",
    "git_commit",
)
RUN_KEYS = ("dataset", "method", "n_labeled", "n_train", "seed")
CELL_KEYS = ("dataset", "method", "n_labeled")
METRICS = ("dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm")
PERCENT_METRICS = ("dice", "jaccard")
DISTANCE_METRICS = ("hd95", "asd", "hd95_mm", "asd_mm")
PROVENANCE_COLUMNS = ("config_sha256", "method_version", "git_commit", "empty_pred_policy")
RUN_COLUMNS = (*RUN_KEYS, *METRICS, "n_cases", "n_empty_pred", *PROVENANCE_COLUMNS)
INT_COLUMNS = ("n_labeled", "n_train", "seed", "empty_pred")
STR_COLUMNS = ("dataset", "method", "case", *PROVENANCE_COLUMNS)
METHOD_ORDER = ("supervised", "mean_teacher", "ua_mt", "dtc", "cvrl", "sup_local_contrast", "simcvd")
UNITS = MappingProxyType({"voxel": ("hd95", "asd"), "mm": ("hd95_mm", "asd_mm")})
UPPER_BOUND = "upper bound"
LOWER_BOUND = "lower bound"
REFERENCE_ZERO = "reference_zero"
MISSING = "–"
TABLE_HEADER = ("Method", "Labeled", "Dice (%)", "Jaccard (%)", "95HD ({unit})", "ASD ({unit})", "Seeds", "Empty preds")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


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
    """Position of `method` in the paper row order; unknown methods share the last rank (then sort by name)."""
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


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
def round_half_up(value: float) -> int:
    """Round to the nearest integer, halves away from zero for positives (12.5 → 13, unlike Python's round)."""
    return int(math.floor(value + 0.5))


def format_labeled(n_labeled: int, n_train: int) -> str:
    """Labeled count with its rounded share of the training set, e.g. '8 (10%)'."""
    return f"{n_labeled} ({round_half_up(100.0 * n_labeled / n_train)}%)"


def format_mean_std(mean: float, std: float, *, scale: float = 1.0, decimals: int = 2) -> str:
    """'mean ± std' of `scale`·values; std '–' when undefined (one seed); '–' alone when the mean is undefined."""
    if mean is None or not math.isfinite(mean):
        return MISSING
    spread = MISSING if std is None or not math.isfinite(std) else f"{std * scale:.{decimals}f}"
    return f"{mean * scale:.{decimals}f} ± {spread}"


def method_label(method: str, setting: str, policy: str) -> str:
    """Table label, e.g. 'supervised (lower bound)'; '†' marks the reference_zero empty-prediction policy."""
    label = f"{method} ({setting})" if setting else method
    return f"{label} †" if REFERENCE_ZERO in policy.split(";") else label


# --------------------------------------------------------------------------------------------------- table model
@dataclass(frozen=True, eq=False)
class Table:
    """One paper-style table: a dataset and a distance unit.

    Attributes:
        dataset: dataset name (as in the per-case files).
        unit: 'voxel' or 'mm' (unit of the 95HD and ASD columns).
        caption: plain-text caption (Unicode ± and –).
        header: column titles in paper order.
        rows: formatted cells, one tuple per table row, same order as `data`.
        groups: n_labeled of each row (LaTeX puts a rule between groups).
        data: machine-readable numeric rows (Dice/Jaccard in percent, distances in `unit`).
    """

    dataset: str
    unit: str
    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    groups: tuple[int, ...]
    data: pd.DataFrame


def _seeds_text(n_seeds: pd.Series) -> str:
    """Caption phrase for the number of seeds per cell."""
    low, high = int(n_seeds.min()), int(n_seeds.max())
    if low != high:
        return f"{low}–{high} seeds per cell (see Seeds)"
    return "1 seed per cell (std undefined, shown as –)" if low == 1 else f"{low} seeds per cell"


def _caption(cells: pd.DataFrame, dataset: str, unit: str) -> str:
    """Plain-text caption: dataset, units, statistic, seeds and empty-prediction policies."""
    policies = sorted({p for joined in cells["empty_pred_policy"] for p in joined.split(";")})
    unit_word = "voxels" if unit == "voxel" else "mm"
    parts = [
        f"{dataset} test set (n_train = {int(cells['n_train'].iloc[0])}): Dice and Jaccard in %, "
        f"95HD and ASD in {unit_word} ({unit}).",
        "Values are mean ± std over seeds (ddof=1) of the per-run means over test cases;",
        f"{_seeds_text(cells['n_seeds'])}.",
        f"Empty-prediction policy: {', '.join(policies)}; Empty preds = empty predictions summed over seeds and cases.",
    ]
    if "nan" in policies:
        parts.append("Policy nan: distance means exclude the empty predictions.")
    if REFERENCE_ZERO in policies:
        parts.append("† reference_zero: empty predictions scored 0 on every metric (distances biased low).")
    return " ".join(parts)


def _table_data(cells: pd.DataFrame, unit: str) -> pd.DataFrame:
    """Numeric table rows: Dice/Jaccard in percent, distances of `unit` renamed to hd95/asd, provenance kept."""
    hd95, asd = UNITS[unit]
    data = cells[[*CELL_KEYS, "setting", "n_train", "labeled_pct"]].copy()
    for name, source, scale in (
        ("dice", "dice", 100.0),
        ("jaccard", "jaccard", 100.0),
        ("hd95", hd95, 1.0),
        ("asd", asd, 1.0),
    ):
        data[f"{name}_mean"] = cells[f"{source}_mean"] * scale
        data[f"{name}_std"] = cells[f"{source}_std"] * scale
    data["distance_unit"] = unit
    extra = ["n_seeds", "seeds", "n_cases", "n_empty_pred", *PROVENANCE_COLUMNS]
    return pd.concat([data, cells[extra]], axis=1).reset_index(drop=True)


def _format_row(row: pd.Series) -> tuple[str, ...]:
    """Formatted table row from one `_table_data` row (values already in display units)."""
    return (
        method_label(row["method"], row["setting"], row["empty_pred_policy"]),
        format_labeled(int(row["n_labeled"]), int(row["n_train"])),
        *(format_mean_std(row[f"{m}_mean"], row[f"{m}_std"]) for m in ("dice", "jaccard", "hd95", "asd")),
        str(int(row["n_seeds"])),
        str(int(row["n_empty_pred"])),
    )


def build_table(cells: pd.DataFrame, dataset: str, unit: str) -> Table:
    """The table of one dataset in one distance unit.

    Args:
        cells: per-cell frame as returned by `per_cell` (already in paper row order).
        dataset: which dataset's rows to take.
        unit: 'voxel' (hd95/asd) or 'mm' (hd95_mm/asd_mm).

    Returns:
        The `Table` model; render it with `render_markdown`, `render_csv` or `render_latex`.
    """
    if unit not in UNITS:
        raise ValueError(f"unit: expected one of {sorted(UNITS)}, got {unit!r}")
    subset = cells[cells["dataset"] == dataset]
    if subset.empty:
        raise ValueError(f"dataset: no cells for {dataset!r}; available: {sorted(cells['dataset'].unique())}")
    data = _table_data(subset, unit)
    return Table(
        dataset=dataset,
        unit=unit,
        caption=_caption(subset, dataset, unit),
        header=tuple(h.format(unit=unit) for h in TABLE_HEADER),
        rows=tuple(_format_row(row) for _, row in data.iterrows()),
        groups=tuple(int(n) for n in data["n_labeled"]),
        data=data,
    )


# ----------------------------------------------------------------------------------------------------- renderers
def _md_cell(text: str) -> str:
    """Escape the characters that break a GitHub Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|")


def render_markdown(table: Table) -> str:
    """GitHub Markdown: a bold caption line, a blank line, the table (text columns left, numbers right aligned)."""
    align = [":---", ":---"] + ["---:"] * (len(table.header) - 2)
    lines = [f"**Table ({table.dataset}, {table.unit}).** {_md_cell(table.caption)}", ""]
    lines.append("| " + " | ".join(table.header) + " |")
    lines.append("| " + " | ".join(align) + " |")
    lines.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows)
    commits = sorted({c for joined in table.data["git_commit"] for c in joined.split(";")})
    lines += [
        "",
        f"Source runs: git commit(s) {', '.join(commits)}; config hashes in {table.dataset}_{table.unit}.csv.",
    ]
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    """Machine-readable CSV of `table.data`: numeric mean/std columns (Dice/Jaccard in %), NaN as an empty field."""
    return table.data.to_csv(index=False, lineterminator="\n")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials, then typeset ± as $\\pm$, – as --, † as \\dag."""
    escaped = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    return escaped.replace("±", r"$\pm$").replace("–", "--").replace("†", r"\dag{}")


def render_latex(table: Table) -> str:
    """LaTeX booktabs table (needs \\usepackage{booktabs}); a \\midrule separates labeled-count groups."""
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.dataset}-{table.unit}}}",
        r"\begin{tabular}{l" + "r" * (len(table.header) - 1) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(table.rows):
        if i > 0 and table.groups[i] != table.groups[i - 1]:
            lines.append(r"\midrule")
        lines.append(" & ".join(latex_escape(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- summary + files
def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Create `path` atomically: `write(tmp)` fills a temporary file in the same folder, then os.replace.

    Args:
        path: destination file; its folder is created if needed.
        write: callable that writes the complete content to the temporary path it receives.

    Returns:
        The destination path.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically (temporary file, then os.replace)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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


def build_summary(runs: pd.DataFrame, cells: pd.DataFrame, provenance: Mapping[str, Any] | None = None) -> dict:
    """summary.json content (DVC metrics): flat numeric leaves, Dice/Jaccard in percent, NaN as None.

    Layout: {"generated_by", "units", "provenance", "cells": {dataset: {"<method>@labeled~<n>": {...}}}, "runs": [...]}.
    """
    cell_fields = ["n_labeled", "n_train", "labeled_pct", "setting", "n_seeds", "n_cases", "n_empty_pred"]
    stat_fields = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    tree: dict[str, dict[str, Any]] = {}
    for _, row in cells.iterrows():
        record = _percent_record(row, [*cell_fields[:4], *stat_fields, *cell_fields[4:], "empty_pred_policy"])
        tree.setdefault(row["dataset"], {})[f"{row['method']}@labeled~{row['n_labeled']}"] = record
    run_records = [_percent_record(row, RUN_COLUMNS) for _, row in runs.iterrows()]
    units = {"dice": "percent", "jaccard": "percent", "hd95": "voxel", "asd": "voxel", "hd95_mm": "mm", "asd_mm": "mm"}
    return {
        "generated_by": f"harness.aggregate.write_tables (harness {__version__})",
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


def write_tables(
    per_case_paths: str | os.PathLike | Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Aggregate per-case files and write tables, runs.csv and summary.json under `out_dir`.

    Writes `tables/{dataset}_{unit}.{md,csv,tex}` for unit in ('voxel', 'mm'), `runs.csv` (per-run means, Dice and
    Jaccard as fractions) and `summary.json` (see `build_summary`), each atomically.

    Args:
        per_case_paths: `metrics_per_case.csv` file(s), one per training run.
        out_dir: results folder (e.g. `results/`).
        provenance: optional JSON-serialisable mapping copied to summary.json["provenance"].

    Returns:
        Mapping from the path relative to `out_dir` (e.g. 'tables/LA_voxel.md', 'summary.json') to the path written.
    """
    _check_provenance(provenance)
    out = Path(out_dir)
    runs = per_run(load_per_case(per_case_paths))
    cells = per_cell(runs)
    summary_text = json.dumps(build_summary(runs, cells, provenance), indent=2, allow_nan=False)
    written: dict[str, Path] = {}
    renderers = (("md", render_markdown), ("csv", render_csv), ("tex", render_latex))
    for dataset in cells["dataset"].unique():
        for unit in UNITS:
            table = build_table(cells, dataset, unit)
            for ext, render in renderers:
                relative = f"tables/{dataset}_{unit}.{ext}"
                written[relative] = write_text_atomic(out / relative, render(table))
    written["runs.csv"] = write_text_atomic(out / "runs.csv", runs.to_csv(index=False, lineterminator="\n"))
    written["summary.json"] = write_text_atomic(out / "summary.json", summary_text + "\n")
    logger.info("wrote %d aggregate files under %s", len(written), out)
    return written
