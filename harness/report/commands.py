"""`python -m harness <report command>`: tables, figures and pages from the runs' results (workflow/rules/report.smk).

The command line is built for every job of the workflow, so nothing heavy is imported until a command runs; option
values are checked when the command runs (`TableOptions`, `check_source`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.evaluate.options import EMPTY_PRED_POLICIES, SPACING_HELP, spacing_arg, spacing_value


def _table_options(a: argparse.Namespace):
    from harness.report.comparison_tables import TableOptions

    return TableOptions(
        published_source=a.published_source,
        reference_method=a.reference,
        n_resamples=a.bootstrap_samples,
        bootstrap_seed=a.bootstrap_seed,
        alternative=a.alternative,
    )


def cmd_report_tables(a: argparse.Namespace) -> None:
    from harness import provenance
    from harness.report.tables import write_tables

    prov = provenance.collect(config_name=a.name)
    write_tables([Path(p) for p in a.inputs], Path(a.out), provenance=prov, options=_table_options(a))


def cmd_report_figures(a: argparse.Namespace) -> None:
    from harness.report.aggregate import load_per_case, per_run
    from harness.report.plots import load_train_logs, write_figures
    from harness.report.published import NO_SOURCE, SOURCES, check_source, load_published

    check_source(a.published_source)
    published, label = None, ""
    if a.published_source != NO_SOURCE:
        table = load_published()
        published, label = table[table["source_id"] == a.published_source], SOURCES[a.published_source].label
    per_case = load_per_case([Path(p) for p in a.inputs])
    logs = load_train_logs([Path(p) for p in a.run_info]) if a.run_info else None
    write_figures(per_run(per_case), per_case, Path(a.out), published=published, published_label=label, train_logs=logs)


def cmd_qualitative(a: argparse.Namespace) -> None:
    from harness.report.plots import write_qualitative

    write_qualitative([Path(p) for p in a.run_configs], Path(a.out), case=a.case or None, n_slices=a.slices)


def cmd_sensitivity(a: argparse.Namespace) -> None:
    from harness.report.sensitivity import write_sensitivity

    write_sensitivity(
        [Path(p) for p in a.run_configs],
        Path(a.out_csv),
        Path(a.tables),
        spacing_mm=spacing_arg(a.spacing),
        policy=a.empty_pred,
        workers=a.workers,
    )


def cmd_provenance_report(a: argparse.Namespace) -> None:
    from harness.report.provenance_page import write_provenance

    write_provenance([Path(p) for p in a.run_info], Path(a.out))


def cmd_cost_table(a: argparse.Namespace) -> None:
    from harness.report.cost_table import write_cost_tables

    patterns = dict(item.split("=", 1) for item in a.pattern)
    write_cost_tables(patterns, [Path(p) for p in a.inputs], [Path(p) for p in a.run_info], Path(a.out))


def cmd_selection_audit(a: argparse.Namespace) -> None:
    from harness.report.selection_audit import write_audit

    write_audit(a.curves, a.run_info, a.metrics, Path(a.out))


def _report_options(p: argparse.ArgumentParser) -> None:
    """Options of the report commands; their values are checked when the command runs (`TableOptions`,
    `check_source`), so building the parser imports nothing heavy: every job of the workflow builds it."""
    p.add_argument("--published-source", default="simcvd", help="a key of harness.report.published.SOURCES or none")
    p.add_argument("--reference", default="simcvd", help="reference method of the paired tests")
    p.add_argument("--bootstrap-samples", type=int, default=2000, help="bootstrap resamples per cell")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap generators")
    p.add_argument("--alternative", default="two-sided", help="two-sided, less or greater, for d = method - reference")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report-tables", help="per-case CSVs -> results, published, statistics tables + summary.json")
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--out", required=True, help="results folder (tables/ is created in it)")
    p.add_argument("--name", required=True, help="the benchmark's name (config key `name`)")
    _report_options(p)
    p.set_defaults(func=cmd_report_tables)

    p = sub.add_parser("report-figures", help="per-case CSVs + training logs -> figures (PNG and PDF)")
    p.add_argument("--inputs", nargs="+", required=True, help="metrics_per_case.csv files")
    p.add_argument("--run-info", nargs="*", default=[], help="run_info.json files (train_log.jsonl beside each)")
    p.add_argument("--out", required=True)
    p.add_argument("--published-source", default="simcvd", help="published source table for the markers, or none")
    p.set_defaults(func=cmd_report_figures)

    p = sub.add_parser("qualitative", help="overlay figure of one test case from saved predictions")
    p.add_argument("--run-configs", nargs="+", required=True, help="run_config.yaml files (predictions/ beside)")
    p.add_argument("--out", required=True, help="destination PNG (a PDF is written beside it)")
    p.add_argument("--case", default="", help="test case ID (default: the first of test.list)")
    p.add_argument("--slices", type=int, default=3)
    p.set_defaults(func=cmd_qualitative)

    p = sub.add_parser("sensitivity", help="protocol-sensitivity table of one dataset from saved predictions")
    p.add_argument("--run-configs", nargs="+", required=True)
    p.add_argument("--spacing", type=spacing_value, nargs="+", required=True, help=SPACING_HELP)
    p.add_argument("--empty-pred", choices=EMPTY_PRED_POLICIES, required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--tables", required=True, help="folder of <dataset>_sensitivity.{md,csv,tex,html}")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("provenance-report", help="HTML page of every run's configuration and provenance")
    p.add_argument("--run-info", nargs="+", required=True)
    p.add_argument("--out", required=True, help="destination HTML (a CSV is written beside it)")
    p.set_defaults(func=cmd_provenance_report)

    p = sub.add_parser("cost-table", help="Snakemake benchmark files + run_info.json -> cost table")
    p.add_argument("--pattern", nargs="+", required=True, help="RULE=PATTERN with {dataset} {method} {n} {seed}")
    p.add_argument("--inputs", nargs="+", required=True, help="benchmark files (.tsv or .jsonl)")
    p.add_argument("--run-info", nargs="+", required=True, help="run_info.json of every benchmarked run (device)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_cost_table)
    p = sub.add_parser("report-selection-audit", help="test_curve.csv of every run -> the selection audit")
    p.add_argument("--curves", nargs="+", required=True, help="test_curve.csv of every run")
    p.add_argument("--run-info", nargs="+", required=True, help="run_info.json of the same runs, in the same order")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics_per_case.csv of the same runs")
    p.add_argument("--out", required=True, help="results folder (tables/ and figures/ are written in it)")
    p.set_defaults(func=cmd_selection_audit)
    from harness.report import landing_page

    landing_page.add_command(sub)  # the report's landing page
    from harness.report import ablation_command

    ablation_command.add_command(sub)  # ablation tables and sweep figures (docs/ablations.md)
