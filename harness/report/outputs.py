"""The files the report commands write under `results/<name>/`, by name: the writers name their outputs with these
and the DAG asks for exactly these (`harness.workflow.targets`). Standard library only, so the DAG build imports no
pandas or matplotlib for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TABLES = "tables"
FIGURES = "figures"
REPORT = "report"
#: Formats every table is written in (`harness.report.table_model.write_table`); the HTML one is the report's.
TABLE_FORMATS = ("md", "csv", "tex", "html")
#: Per-case figure metrics: file stem prefix → (column, axis label).
PER_CASE_METRICS = {"dice": ("dice_pct", "Dice (%)"), "hd95": ("hd95", "95HD (voxel)")}


@dataclass(frozen=True)
class Output:
    """One table or figure: its file stem, and where `snakemake --report` shows it."""

    stem: str
    category: str
    caption: str
    """The caption file in workflow/report/."""
    labels: tuple[tuple[str, str], ...] = ()


#: The tables of the aggregate rule per dataset: kind → (report category, title, caption file).
TABLE_KINDS = {
    "voxel": ("Results", "results, distances in voxels", "table_results.rst"),
    "mm": ("Results", "results, distances in mm", "table_results.rst"),
    "published": ("Published comparison", "published comparison", "table_published.rst"),
    "stats": ("Tests and intervals", "paired tests and bootstrap CIs", "table_stats.rst"),
}


def result_tables(datasets: Iterable[str]) -> list[Output]:
    """The aggregate rule's tables: `<dataset>_<kind>` for every kind of `TABLE_KINDS`."""
    return [
        Output(f"{ds}_{kind}", category, caption, (("dataset", ds), ("table", title)))
        for ds in datasets
        for kind, (category, title, caption) in TABLE_KINDS.items()
    ]


def figures(datasets: Iterable[str], *, training_curves: bool = True) -> list[Output]:
    """The figures rule's figures (each a PNG and a PDF): Dice vs labeled count, per-case metrics, training curves."""
    out = [Output("dice_vs_labeled", "Figures", "dice_vs_labeled.rst", (("figure", "dice_vs_labeled"),))]
    for ds in sorted(datasets):
        stems = [f"{metric}_per_case_{ds}" for metric in PER_CASE_METRICS]
        out += [Output(stem, "Figures", "per_case.rst", (("figure", stem),)) for stem in stems]
        if training_curves:
            stem = f"training_curves_{ds}"
            out.append(Output(stem, "Figures", "training_curves.rst", (("figure", stem),)))
    return out


def sensitivity_table(dataset: str) -> Output:
    return Output(f"{dataset}_sensitivity", "Protocol sensitivity", "sensitivity.rst", (("dataset", dataset),))


def qualitative_figure(dataset: str) -> Output:
    return Output(f"qualitative_{dataset}", "Qualitative", "qualitative.rst", (("dataset", dataset),))


def selection_audit_table(dataset: str) -> Output:
    return Output(f"{dataset}_selection_audit", "Selection audit", "selection_audit.rst", (("dataset", dataset),))


def selection_audit_figure(dataset: str) -> Output:
    stem = f"selection_audit_{dataset}"
    return Output(stem, "Selection audit", "selection_audit.rst", (("figure", stem),))


COST_TABLE = Output("cost", "Cost", "cost.rst")
PROVENANCE_PAGE = "provenance.html"
LANDING_PAGE = "landing.html"
SUMMARY = "summary.json"
RUNS_CSV = "runs.csv"


def ablation_tables(bases: Iterable[str], datasets: Iterable[str]) -> list[Output]:
    """The ablation rule's tables: one per method with variants and dataset."""
    return [
        Output(f"ablation_{base}_{ds}", "Ablations", "ablation.rst", _labels(ds, f"ablation of {base}"))
        for base in bases
        for ds in datasets
    ]


def _labels(dataset: str, table: str) -> tuple[tuple[str, str], ...]:
    return (("dataset", dataset), ("table", table))


def sweep_figures(swept: Iterable[tuple[str, str]], datasets: Iterable[str]) -> list[Output]:
    """The ablation rule's sweep figures: one per swept (method, key) and dataset."""
    return [
        Output(f"sweep_{base}_{key}_{ds}", "Ablations", "sweep.rst", (("figure", f"{key} sweep of {base} ({ds})"),))
        for base, key in swept
        for ds in datasets
    ]
