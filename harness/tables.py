"""Paper-style tables (Markdown, CSV, LaTeX booktabs, HTML) and summary.json from the cells of `harness.aggregate`.

One table model, `Table` (rows of `Entry` cells plus a numeric `data` frame), is printed by every renderer:
`render_markdown`, `render_csv` (the numeric frame), `render_latex` (booktabs; best value of each column within a
labeled-count group in bold; ± in \\scriptsize) and `render_html` (for the Snakemake report). Builders:

* `build_table`: one dataset and distance unit; methods × (Dice, Jaccard, 95HD, ASD) as mean ± std over seeds, with
  the numbers of seeds and of empty predictions;
* `build_published_table`: the voxel results beside one published source table, the difference and a flag where the
  published value lies outside the reproduced 95% bootstrap interval (`harness.published`, `harness.stats`);
* `build_stats_table`: per-case paired Wilcoxon and t-tests against a reference method with Holm's correction, and
  the 95% bootstrap CI of the mean Dice (`harness.stats`).

`write_tables` writes all of them with `runs.csv` and `summary.json` (DVC metrics). `write_provenance` writes the
report's provenance page; the cost table lives in `harness.cost_table`. Dice/Jaccard are in percent in every output
written here.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
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
from harness.published import SOURCES, check_source, join_published, load_published, published_rows
from harness.stats import ALTERNATIVES, cell_intervals, compare_to_reference

logger = logging.getLogger(__name__)

#: Display metrics of every table (distances renamed from the unit's columns) and whether higher is better.
DISPLAY_METRICS = (("dice", True), ("jaccard", True), ("hd95", False), ("asd", False))
OUTSIDE_CI_MARK = "*"


@dataclass(frozen=True)
class TableOptions:
    """Settings of the published comparison and the statistics (config `report.*`).

    Attributes:
        published_source: key of `harness.published.SOURCES`, or 'none'.
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


# ------------------------------------------------------------------------------------------------------ formatting
def round_half_up(value: float) -> int:
    """Round to the nearest integer, halves away from zero for positives (12.5 → 13, unlike Python's round)."""
    return int(math.floor(value + 0.5))


def format_labeled(n_labeled: int, n_train: int) -> str:
    """Labeled count with its rounded share of the training set, e.g. '8 (10%)'."""
    return f"{n_labeled} ({round_half_up(100.0 * n_labeled / n_train)}%)"


def _finite(value: Any) -> bool:
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
    if not _finite(value):
        return MISSING
    return f"{float(value):+.{decimals}f}" if signed else f"{float(value):.{decimals}f}"


def format_p(p: float) -> str:
    """A p-value: three decimals, scientific below 0.001, '–' when undefined."""
    if not _finite(p):
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
    if not _finite(mean):
        return Entry(MISSING)
    spread = f"{std * scale:.{decimals}f}" if _finite(std) else MISSING
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


def _label_entries(row: pd.Series) -> list[Entry]:
    """Method and Labeled entries of a table row."""
    return [
        Entry(method_label(row["method"], row["setting"], row["empty_pred_policy"])),
        Entry(format_labeled(int(row["n_labeled"]), int(row["n_train"]))),
    ]


def _subset(cells: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The cells of `dataset`; ValueError naming the available datasets if there are none."""
    subset = cells[cells["dataset"] == dataset]
    if subset.empty:
        raise ValueError(f"dataset: no cells for {dataset!r}; available: {sorted(cells['dataset'].unique())}")
    return subset


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
    subset = _subset(cells, dataset)
    data = _table_data(subset, unit)
    groups = tuple(int(n) for n in data["n_labeled"])
    rows = []
    for _, row in data.iterrows():
        stats = [mean_std_entry(row[f"{m}_mean"], row[f"{m}_std"]) for m, _ in DISPLAY_METRICS]
        rows.append(
            [*_label_entries(row), *stats, Entry(str(int(row["n_seeds"]))), Entry(str(int(row["n_empty_pred"])))]
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
    return " ".join([
        f"{dataset}: reproduced mean ± std over seeds (Dice/Jaccard in %, 95HD/ASD in voxels) beside one published",
        f"source table. {head} Δ = reproduced − published (percentage points for Dice/Jaccard).",
        f"{OUTSIDE_CI_MARK} = the published value lies outside the {100 * options.confidence:.0f}% bootstrap interval",
        f"of the reproduced mean (seeds and test cases resampled, B = {options.n_resamples}, seed",
        f"{options.bootstrap_seed}). – = no published value. Published numbers are single runs whose code scores an",
        f"empty prediction 0 on every metric{unit_text}.",
    ])  # fmt: skip


def _flag(published: float, low: float, high: float) -> Any:
    """True if `published` lies outside [low, high], False inside, pd.NA when either is undefined."""
    if not (_finite(published) and _finite(low) and _finite(high)):
        return pd.NA
    return bool(published < low or published > high)


def _published_data(cells: pd.DataFrame, per_case: pd.DataFrame, options: TableOptions) -> pd.DataFrame:
    """Voxel table data + published values, differences, bootstrap CIs (display units) and outside-CI flags."""
    data = _table_data(cells, "voxel")
    joined = join_published(data, load_published(), options.published_source)
    ci = cell_intervals(
        per_case, [m for m, _ in DISPLAY_METRICS], n_resamples=options.n_resamples, seed=options.bootstrap_seed,
        confidence=options.confidence,
    )  # fmt: skip
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
    entries = _label_entries(row)
    for metric, _ in DISPLAY_METRICS:
        flag = row[f"{metric}_outside_ci"]
        mark = OUTSIDE_CI_MARK if flag is not pd.NA and bool(flag) else ""
        diff = format_number(row[f"{metric}_diff"], signed=True)
        entries += [
            mean_std_entry(row[f"{metric}_mean"], row[f"{metric}_std"]),
            Entry(format_number(row[f"{metric}_published"])),
            Entry(diff + mark if diff != MISSING else diff),
        ]
    return [*entries, Entry(str(int(row["n_seeds"])))]


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
    subset = _subset(cells, dataset)
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
    return Table(
        name=f"{dataset}_published",
        title=f"Published comparison ({dataset}, voxel)",
        caption=_published_caption(dataset, data, options, has_rows),
        header=(*header, "Seeds"),
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
    return " ".join([
        f"{dataset}: mean Dice (%) over test cases and seeds with its {100 * options.confidence:.0f}% bootstrap",
        f"confidence interval (seeds and cases resampled independently, B = {options.n_resamples}, seed",
        f"{options.bootstrap_seed}); Δ = mean paired difference in percentage points.",
        ref_text,
        "– = no test (the method is the reference, or no reference run at that labeled count; reasons in the CSV).",
    ])  # fmt: skip


def _stats_data(cells: pd.DataFrame, per_case: pd.DataFrame, options: TableOptions) -> pd.DataFrame:
    """Cell keys + mean Dice (%), its CI, and the test columns (Δ in percentage points)."""
    data = cells[[*CELL_KEYS, "setting", "n_train", "n_seeds", "n_cases", "empty_pred_policy"]].copy()
    data["dice_mean"] = cells["dice_mean"] * 100.0
    ci = cell_intervals(
        per_case, ["dice"], n_resamples=options.n_resamples, seed=options.bootstrap_seed,
        confidence=options.confidence,
    )  # fmt: skip
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
    subset = _subset(cells, dataset)
    data = _stats_data(subset, per_case[per_case["dataset"] == dataset], options)
    rows = []
    for _, row in data.iterrows():
        ci = f"[{format_number(row['dice_ci_low'])}, {format_number(row['dice_ci_high'])}]"
        rows.append([
            *_label_entries(row), Entry(str(int(row["n_pairs"]) if row["n_pairs"] else MISSING)),
            Entry(format_number(row["dice_mean"])), Entry(ci if _finite(row["dice_ci_low"]) else MISSING),
            Entry("reference" if row["is_reference"] else format_number(row["mean_diff"], signed=True)),
            *(Entry(format_p(row[c])) for c in ("wilcoxon_p", "wilcoxon_p_holm", "t_p", "t_p_holm")),
        ])  # fmt: skip
    ref = options.reference_method
    header = ("Method", "Labeled", "Paired cases", "Dice (%)", "95% CI", f"Δ vs {ref}", "Wilcoxon p", "Holm p",
              "t-test p", "Holm p")  # fmt: skip
    return Table(
        name=f"{dataset}_stats",
        title=f"Statistics ({dataset}, Dice)",
        caption=_stats_caption(dataset, data, options),
        header=header,
        rows=tuple(tuple(r) for r in rows),
        groups=tuple(int(n) for n in data["n_labeled"]),
        data=data,
    )


# ----------------------------------------------------------------------------------------------- summary + files
def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the mode a plain open() would
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically (temporary file, then os.replace)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_table(table: Table, folder: str | os.PathLike, formats: Iterable[str] = tuple(RENDERERS)) -> dict[str, Path]:
    """Write `table` as `<folder>/<table.name>.<ext>` for each format; returns {ext: path}."""
    unknown = [f for f in formats if f not in RENDERERS]
    if unknown:
        raise ValueError(f"formats: unknown {unknown}; expected some of {sorted(RENDERERS)}")
    return {ext: write_text_atomic(Path(folder) / f"{table.name}.{ext}", RENDERERS[ext](table)) for ext in formats}


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
    With `intervals` (`harness.stats.cell_intervals` of Dice, fractions), each cell also gets `dice_ci_low/high`.
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
        "generated_by": f"harness.tables.write_tables (harness {__version__})",
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


# ------------------------------------------------------------------------------------------------------ provenance
def _run_record(run_info_path: Path) -> dict[str, Any]:
    """Provenance row of one run from its run_info.json (and the run_config.yaml beside it)."""
    info = json.loads(run_info_path.read_text(encoding="utf-8"))
    config = info.get("config", {})
    packages = info.get("packages", {})
    return {
        "dataset": config.get("dataset", ""),
        "method": config.get("method", info.get("method", "")),
        "n_labeled": config.get("n_labeled"),
        "seed": config.get("seed"),
        "config_sha256": info.get("config_sha256", ""),
        "method_version": info.get("method_version", ""),
        "git_commit": info.get("git_commit", ""),
        "git_dirty": info.get("git_dirty"),
        "torch": packages.get("torch", ""),
        "device": info.get("gpu_model") or info.get("device", ""),
        "wall_time_s": info.get("wall_time_s"),
        "data_manifest_sha256": info.get("data_manifest_sha256") or "",
        "run_dir": str(run_info_path.parent),
    }


def provenance_frame(run_info_paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One provenance row per run (see `_run_record`), sorted by dataset, labeled count, method order and seed."""
    from harness.aggregate import method_rank

    paths = [Path(p) for p in run_info_paths]
    if not paths:
        raise ValueError("run_info_paths: expected at least one run_info.json")
    frame = pd.DataFrame([_run_record(p) for p in paths])
    frame["_rank"] = frame["method"].map(method_rank)
    frame = frame.sort_values(["dataset", "n_labeled", "_rank", "method", "seed"], kind="stable")
    return frame.drop(columns="_rank").reset_index(drop=True)


def build_provenance_table(frame: pd.DataFrame) -> Table:
    """The runs' provenance as a table (hashes shortened; the CSV keeps them in full)."""
    rows = []
    for _, r in frame.iterrows():
        dirty = " (dirty)" if r["git_dirty"] else ""
        rows.append([
            Entry(f"{r['dataset']}/{r['method']}"), Entry(str(r["n_labeled"])), Entry(str(r["seed"])),
            Entry(str(r["config_sha256"])[:12]), Entry(str(r["method_version"])),
            Entry(str(r["git_commit"])[:10] + dirty), Entry(str(r["torch"])), Entry(str(r["device"])),
            Entry(format_number(r["wall_time_s"], decimals=1)), Entry(str(r["data_manifest_sha256"])[:12] or MISSING),
        ])  # fmt: skip
    header = ("Run", "Labeled", "Seed", "Config sha256", "Method version", "Git commit", "torch", "Device",
              "Train wall time (s)", "Data manifest sha256")  # fmt: skip
    return Table(
        name="provenance",
        title="Provenance of every run",
        caption="One row per training run: its resolved configuration's sha256 (the run's identity), the method "
        "VERSION, the harness commit (dirty = uncommitted changes), torch, the device, the training wall time and the "
        "data manifest's sha256. Each run's resolved configuration and run_info.json follow below.",
        header=header,
        rows=tuple(tuple(r) for r in rows),
        groups=tuple(range(len(rows))),
        data=frame,
        text_columns=1,
    )


def _details(title: str, text: str) -> str:
    """A collapsible <details> block holding preformatted text."""
    return f"<details><summary>{html.escape(title)}</summary><pre>{html.escape(text)}</pre></details>"


def write_provenance(run_info_paths: Iterable[str | os.PathLike], out_html: str | os.PathLike) -> dict[str, Path]:
    """The report's provenance page: the runs table, then each run's run_config.yaml and run_info.json.

    Args:
        run_info_paths: run_info.json of every run (run_config.yaml is read from the same folder).
        out_html: destination HTML page; a CSV of the table is written beside it (same stem).

    Returns:
        {"html": path, "csv": path}.
    """
    frame = provenance_frame(run_info_paths)
    table = build_provenance_table(frame)
    blocks = [render_html_fragment(table), "<h3>Resolved configuration and provenance per run</h3>"]
    for run_dir in frame["run_dir"]:
        config = Path(run_dir) / "run_config.yaml"
        info = Path(run_dir) / "run_info.json"
        blocks.append(_details(f"{run_dir}/run_config.yaml", config.read_text(encoding="utf-8")))
        blocks.append(_details(f"{run_dir}/run_info.json", info.read_text(encoding="utf-8")))
    out = Path(out_html)
    return {
        "html": write_text_atomic(out, html_page(table.title, blocks)),
        "csv": write_text_atomic(out.with_suffix(".csv"), render_csv(table)),
    }
