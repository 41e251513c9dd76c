"""The report rules' output files for a validated config, as Snakemake wants them: paths under `results/<name>/`,
the HTML tables and PNG figures flagged for `snakemake --report` (their names are `harness.report.outputs`')."""

from __future__ import annotations

from typing import Any

from snakemake.io import report

from harness.config import base_of
from harness.report import outputs
from harness.report.outputs import FIGURES, TABLE_FORMATS, TABLES, Output


class Targets:
    """Every file the report rules of `config` write (`name`, `datasets`, `report`, `methods`, `sweeps`)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.bench = f"results/{config['name']}"
        self.tables = f"{self.bench}/{TABLES}"
        self.figures = f"{self.bench}/{FIGURES}"
        self.datasets = list(config["datasets"])
        self.options = config["report"]
        self.ablation_bases = list(dict.fromkeys(base_of(m) for m in config["methods"] if m != base_of(m)))
        self.swept = [(base, key) for base, spec in config["sweeps"].items() for key in spec if key != "product"]

    # -- one table or figure -----------------------------------------------------------------------------------------
    def table(self, out: Output, formats: tuple[str, ...] = TABLE_FORMATS[:-1]) -> list[str]:
        return [f"{self.tables}/{out.stem}.{ext}" for ext in formats]

    def table_html(self, out: Output) -> Any:
        return self._flag(f"{self.tables}/{out.stem}.html", out)

    def figure(self, out: Output) -> list[Any]:
        """The PNG (flagged for the report) and the PDF of a figure."""
        return [self._flag(f"{self.figures}/{out.stem}.png", out), f"{self.figures}/{out.stem}.pdf"]

    def _flag(self, path: str, out: Output) -> Any:
        caption = f"../report/{out.caption}"
        return report(path, caption=caption, category=out.category, labels=dict(out.labels) or None)

    # -- per rule ----------------------------------------------------------------------------------------------------
    def result_tables(self) -> list[str]:
        return [f for out in outputs.result_tables(self.datasets) for f in self.table(out)]

    def result_tables_html(self) -> list[Any]:
        return [self.table_html(out) for out in outputs.result_tables(self.datasets)]

    def figure_files(self) -> list[Any]:
        return [f for out in outputs.figures(self.datasets) for f in self.figure(out)]

    def sensitivity_files(self) -> list[str]:
        if not self.options["sensitivity"]:
            return []
        return [f for ds in self.datasets for f in self.table(outputs.sensitivity_table(ds), TABLE_FORMATS)]

    def qualitative_files(self) -> list[str]:
        return [
            f"{self.figures}/{outputs.qualitative_figure(ds).stem}.{ext}"
            for ds in self.datasets
            for ext in ("png", "pdf")
        ]

    def audit_files(self) -> list[Any]:
        """The selection audit's tables and figures (none when `report.selection_audit.every` is 0)."""
        if not self.options["selection_audit"]["every"]:
            return []
        tables = [outputs.selection_audit_table(ds) for ds in self.datasets]
        files = [f for out in tables for f in self.table(out)] + [self.table_html(out) for out in tables]
        return files + [f for ds in self.datasets for f in self.figure(outputs.selection_audit_figure(ds))]

    def ablation_tables(self) -> list[str]:
        return [f for out in outputs.ablation_tables(self.ablation_bases, self.datasets) for f in self.table(out)]

    def ablation_tables_html(self) -> list[Any]:
        return [self.table_html(out) for out in outputs.ablation_tables(self.ablation_bases, self.datasets)]

    def sweep_figures(self) -> list[Any]:
        return [f for out in outputs.sweep_figures(self.swept, self.datasets) for f in self.figure(out)]

    def ablation_files(self) -> list[Any]:
        """Every output of the ablation rule (none when the grid has no variants)."""
        if not self.ablation_bases:
            return []
        return self.ablation_tables() + self.ablation_tables_html() + self.sweep_figures()

    def all(self, with_cost: bool) -> list[Any]:
        """What `rule all` asks for: every table, figure and page of the report."""
        pages = [f"{self.bench}/{outputs.REPORT}/{page}" for page in (outputs.PROVENANCE_PAGE, outputs.LANDING_PAGE)]
        cost = self.table(outputs.COST_TABLE, TABLE_FORMATS) if with_cost else []
        files = [
            *self.result_tables(),
            *self.result_tables_html(),
            *self.figure_files(),
            *self.qualitative_files(),
            *self.sensitivity_files(),
            *pages,
            *cost,
            *self.ablation_files(),
            *self.audit_files(),
            f"{self.bench}/{outputs.SUMMARY}",
        ]
        return [str(f) for f in files]
