"""`python -m harness report-ablation` (the workflow's `ablation` rule, workflow/rules/report.smk): its options,
without importing the reporting code (every job of the workflow builds the command-line parser)."""

from __future__ import annotations

import argparse
from typing import Any


def add_command(sub: Any) -> None:
    p = sub.add_parser("report-ablation", help="ablation tables and sweep figures of the variants in the results")
    p.add_argument("--inputs", nargs="+", required=True, help="metrics_per_case.csv of every run")
    p.add_argument("--run-configs", nargs="+", required=True, help="run_config.yaml of every run")
    p.add_argument("--methods", nargs="+", required=True, help="the grid's methods and variants, in config order")
    p.add_argument("--sweeps", nargs="*", default=[], help="swept keys as <method>:<key>")
    p.add_argument("--tables", required=True, help="folder of the tables")
    p.add_argument("--figures", required=True, help="folder of the figures")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from harness.report.ablation import write_ablation

    write_ablation(a.inputs, a.run_configs, a.tables, a.figures, methods=a.methods, sweeps=a.sweeps)
