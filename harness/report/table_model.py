"""The table model, its renderers and atomic file writes: the layer every report table uses.

One table model, `Table` (rows of `Entry` cells plus a numeric `data` frame), is printed by every renderer:
`render_markdown`, `render_csv` (the numeric frame), `render_latex` (booktabs; best value of each column within a
labeled-count group in bold, see `mark_best`; ± in \\scriptsize) and `render_html` (a standalone page for the
Snakemake report; `render_html_fragment` and `html_page` build larger pages). `RENDERERS` maps a file extension to its
renderer; `write_table` writes a table in several formats (`harness.io.write_text_atomic`).

Also here: the cell formatting helpers (`format_number`, `format_mean_std`, `format_p`, `format_labeled`,
`method_label`, `mean_std_entry`) and the per-cell rows that the results table (`harness.report.tables`) and the
published comparison (`harness.report.comparison_tables`) share (`DISPLAY_METRICS`, `table_data`, `label_entries`,
`dataset_cells`).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from harness.io import write_text_atomic
from harness.report.aggregate import CELL_KEYS, MISSING, PROVENANCE_COLUMNS, REFERENCE_ZERO, UNITS

#: Display metrics of every table (distances renamed from the unit's columns) and whether higher is better.
DISPLAY_METRICS = (("dice", True), ("jaccard", True), ("hd95", False), ("asd", False))


# ------------------------------------------------------------------------------------------------------ formatting
def round_half_up(value: float) -> int:
    """Round to the nearest integer, halves away from zero for positives (12.5 → 13, unlike Python's round)."""
    return int(math.floor(value + 0.5))


def format_labeled(n_labeled: int, n_train: int) -> str:
    """Labeled count with its rounded share of the training set, e.g. '8 (10%)'."""
    return f"{n_labeled} ({round_half_up(100.0 * n_labeled / n_train)}%)"


def is_finite(value: Any) -> bool:
    """True for a finite real number (False for None, NaN, ±inf, pd.NA)."""
    try:
        return value is not None and not pd.isna(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def format_mean_std(mean: float, std: float, *, scale: float = 1.0, decimals: int = 2) -> str:
    """'mean ± std' of `scale`·values; std '–' when undefined (one seed); '–' alone when the mean is undefined."""
    return mean_std_entry(mean, std, scale=scale, decimals=decimals).text


def format_number(value: float, *, decimals: int = 2, signed: bool = False) -> str:
    """A number with `decimals` decimals ('+' for positives when `signed`); '–' when undefined."""
    if not is_finite(value):
        return MISSING
    return f"{float(value):+.{decimals}f}" if signed else f"{float(value):.{decimals}f}"


def format_p(p: float) -> str:
    """A p-value: three decimals, scientific below 0.001, '–' when undefined."""
    if not is_finite(p):
        return MISSING
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def method_label(method: str, setting: str, policy: str) -> str:
    """Table label, e.g. 'supervised (lower bound)'; '†' marks the reference_zero empty-prediction policy."""
    label = f"{method} ({setting})" if setting else method
    return f"{label} †" if REFERENCE_ZERO in policy.split(";") else label


# ----------------------------------------------------------------------------------------------------- table model
@dataclass(frozen=True)
class Entry:
    """One table cell.

    Attributes:
        value: the main text (a number, a label, '–').
        spread: text printed after '±' (the std), or '' for none.
        bold: typeset `value` in bold (best value of its column and group).
    """

    value: str
    spread: str = ""
    bold: bool = False

    @property
    def text(self) -> str:
        """Plain text, e.g. '85.00 ± 7.07'."""
        return f"{self.value} ± {self.spread}" if self.spread else self.value


def mean_std_entry(mean: float, std: float, *, scale: float = 1.0, decimals: int = 2) -> Entry:
    """Entry 'mean ± std' of `scale`·values; spread '–' with one seed; '–' alone when the mean is undefined."""
    if not is_finite(mean):
        return Entry(MISSING)
    spread = f"{std * scale:.{decimals}f}" if is_finite(std) else MISSING
    return Entry(f"{mean * scale:.{decimals}f}", spread)


@dataclass(frozen=True, eq=False)
class Table:
    """One table, printable by every renderer.

    Attributes:
        name: file stem and LaTeX label, e.g. 'LA_voxel'.
        title: short title, e.g. 'Table (LA, voxel)'.
        caption: plain-text caption (Unicode ± and –).
        header: column titles.
        rows: one tuple of `Entry` per table row, in the order of `data`.
        groups: group of each row (n_labeled; LaTeX puts a rule between groups).
        data: machine-readable rows (what `render_csv` writes).
        footer: optional plain-text line printed under the table.
        text_columns: number of leading left-aligned (text) columns.
    """

    name: str
    title: str
    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[Entry, ...], ...]
    groups: tuple[int, ...]
    data: pd.DataFrame
    footer: str = ""
    text_columns: int = 2


def mark_best(rows: list[list[Entry]], groups: Sequence[int], column: int, higher_is_better: bool) -> None:
    """Bold the best displayed value of `column` within each group of at least two rows with a value (ties: all).

    Args:
        rows: mutable table rows of `Entry` (changed in place).
        groups: group of each row.
        column: index of the column to mark.
        higher_is_better: True for Dice/Jaccard, False for distances.
    """
    by_group: dict[int, list[int]] = {}
    for i, group in enumerate(groups):
        by_group.setdefault(group, []).append(i)
    for members in by_group.values():
        values = {}
        for i in members:
            try:
                values[i] = float(rows[i][column].value)
            except ValueError:
                continue
        if len(values) < 2:
            continue
        best = max(values.values()) if higher_is_better else min(values.values())
        for i, value in values.items():
            if value == best:
                rows[i][column] = replace(rows[i][column], bold=True)


# ------------------------------------------------------------------------------------------------------- renderers
def _md_text(text: str) -> str:
    """Escape the characters that break a GitHub Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _md_entry(entry: Entry) -> str:
    value = f"**{_md_text(entry.value)}**" if entry.bold else _md_text(entry.value)
    return f"{value} ± {_md_text(entry.spread)}" if entry.spread else value


def render_markdown(table: Table) -> str:
    """GitHub Markdown: a bold title + caption line, a blank line, the table (text left, numbers right aligned)."""
    align = [":---"] * table.text_columns + ["---:"] * (len(table.header) - table.text_columns)
    lines = [f"**{table.title}.** {_md_text(table.caption)}", ""]
    lines.append("| " + " | ".join(_md_text(h) for h in table.header) + " |")
    lines.append("| " + " | ".join(align) + " |")
    lines.extend("| " + " | ".join(_md_entry(e) for e in row) + " |" for row in table.rows)
    if table.footer:
        lines += ["", _md_text(table.footer)]
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    """Machine-readable CSV of `table.data`: numeric columns (Dice/Jaccard in %), NaN as an empty field."""
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
    """Escape LaTeX specials, then typeset ± as $\\pm$, – as --, † as \\dag, Δ as $\\Delta$, ≥/≤ as math."""
    escaped = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    for old, new in (("±", r"$\pm$"), ("–", "--"), ("†", r"\dag{}"), ("Δ", r"$\Delta$"), ("×", r"$\times$")):
        escaped = escaped.replace(old, new)
    return escaped.replace("≥", r"$\geq$").replace("≤", r"$\leq$").replace("−", "-")


def _latex_entry(entry: Entry) -> str:
    value = latex_escape(entry.value)
    value = rf"\textbf{{{value}}}" if entry.bold else value
    return rf"{value} {{\scriptsize $\pm$ {latex_escape(entry.spread)}}}" if entry.spread else value


def render_latex(table: Table) -> str:
    """LaTeX booktabs table (needs \\usepackage{booktabs}); a \\midrule separates groups; bold best; small ±."""
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name.replace('_', '-')}}}",
        r"\begin{tabular}{" + "l" * table.text_columns + "r" * (len(table.header) - table.text_columns) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(table.rows):
        if i > 0 and table.groups[i] != table.groups[i - 1]:
            lines.append(r"\midrule")
        lines.append(" & ".join(_latex_entry(e) for e in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.footer:
        lines.append(rf"\par\smallskip{{\footnotesize {latex_escape(table.footer)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


HTML_STYLE = (
    "body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse;margin:.5em 0}"
    "th,td{padding:3px 8px}thead th{border-top:2px solid #000;border-bottom:1px solid #000}"
    "tbody tr:last-child td{border-bottom:2px solid #000}tr.group td{border-top:1px solid #888}"
    "td.num,th.num{text-align:right}small{color:#444}p.caption{max-width:70em}"
)


def _html_entry(entry: Entry) -> str:
    value = f"<b>{html.escape(entry.value)}</b>" if entry.bold else html.escape(entry.value)
    return f"{value} <small>± {html.escape(entry.spread)}</small>" if entry.spread else value


def render_html_fragment(table: Table) -> str:
    """The table as an HTML fragment: a title, the caption paragraph, a <table>, the footer."""
    cls = ["" if i < table.text_columns else ' class="num"' for i in range(len(table.header))]
    head = "".join(f"<th{c}>{html.escape(h)}</th>" for c, h in zip(cls, table.header, strict=True))
    body = []
    for i, row in enumerate(table.rows):
        rule = ' class="group"' if i > 0 and table.groups[i] != table.groups[i - 1] else ""
        cells = "".join(f"<td{c}>{_html_entry(e)}</td>" for c, e in zip(cls, row, strict=True))
        body.append(f"<tr{rule}>{cells}</tr>")
    parts = [f"<h3>{html.escape(table.title)}</h3>", f'<p class="caption">{html.escape(table.caption)}</p>']
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    if table.footer:
        parts.append(f"<p><small>{html.escape(table.footer)}</small></p>")
    return "\n".join(parts)


def html_page(title: str, fragments: Iterable[str]) -> str:
    """A standalone UTF-8 HTML page (inline CSS, no external resources) holding `fragments`."""
    body = "\n".join(fragments)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{HTML_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def render_html(table: Table) -> str:
    """The table as a standalone HTML page (the Snakemake report shows it inline)."""
    return html_page(table.title, [render_html_fragment(table)])


RENDERERS: Mapping[str, Callable[[Table], str]] = {
    "md": render_markdown,
    "csv": render_csv,
    "tex": render_latex,
    "html": render_html,
}


# ---------------------------------------------------------------- rows shared by the results and comparison tables
def table_data(cells: pd.DataFrame, unit: str) -> pd.DataFrame:
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


def label_entries(row: pd.Series) -> list[Entry]:
    """Method and Labeled entries of a table row."""
    return [
        Entry(method_label(row["method"], row["setting"], row["empty_pred_policy"])),
        Entry(format_labeled(int(row["n_labeled"]), int(row["n_train"]))),
    ]


def dataset_cells(cells: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The cells of `dataset`; ValueError naming the available datasets if there are none."""
    subset = cells[cells["dataset"] == dataset]
    if subset.empty:
        raise ValueError(f"dataset: no cells for {dataset!r}; available: {sorted(cells['dataset'].unique())}")
    return subset


# ----------------------------------------------------------------------------------------------------------- files
def write_table(table: Table, folder: str | os.PathLike, formats: Iterable[str] = tuple(RENDERERS)) -> dict[str, Path]:
    """Write `table` as `<folder>/<table.name>.<ext>` for each format; returns {ext: path}."""
    unknown = [f for f in formats if f not in RENDERERS]
    if unknown:
        raise ValueError(f"formats: unknown {unknown}; expected some of {sorted(RENDERERS)}")
    return {ext: write_text_atomic(Path(folder) / f"{table.name}.{ext}", RENDERERS[ext](table)) for ext in formats}
