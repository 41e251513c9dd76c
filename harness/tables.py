"""Paper-style tables (Markdown, CSV, LaTeX booktabs) and summary.json from the cells of `harness.aggregate`.

`build_table` turns the cells of one dataset and one distance unit into a `Table`, which `render_markdown`,
`render_csv` and `render_latex` print; `write_tables` writes all tables, `runs.csv` and `summary.json` (DVC metrics).
Dice/Jaccard are in percent in every output written here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import __version__
from harness.aggregate import (
    CELL_KEYS,
    METRICS,
    MISSING,
    PERCENT_METRICS,
    PROVENANCE_COLUMNS,
    REFERENCE_ZERO,
    RUN_COLUMNS,
    TABLE_HEADER,
    UNITS,
    load_per_case,
    per_cell,
    per_run,
)  # fmt: skip

logger = logging.getLogger(__name__)


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
