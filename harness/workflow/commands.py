"""`python -m harness check-config | resolve-run`: the workflow's configuration by hand (the Snakefile does the same
when it builds the DAG, and the run_config rule in-process)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def cmd_check_config(a: argparse.Namespace) -> None:
    from harness.config import ConfigError
    from harness.method.build import resolve_run
    from harness.run.code import PROJECT_ROOT
    from harness.run.method_table import read_methods
    from harness.workflow.grid import cell_params, grid_cells
    from harness.workflow.validate import load_config_file, validate_config
    from harness.workflow.variants import written_at

    config = load_config_file(a.config)  # its errors name the file (and line)
    try:
        validate_config(config, read_methods(PROJECT_ROOT))  # the Snakefile's validator
        cells = grid_cells(config)
        for cell in cells:
            resolve_run(cell_params(config, cell), written_at(config, cell.method, cell.dataset))
    except ConfigError as err:
        raise ConfigError(f"{a.config}: {err}") from None
    logger.info("%s: %d runs resolve", a.config, len(cells))


def cmd_resolve_run(a: argparse.Namespace) -> None:
    from harness.method.build import write_run_config

    write_run_config(json.loads(a.params), Path(a.out))


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate a config and resolve every run of its grid without training")
    p.add_argument("config")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("resolve-run", help="merge and validate one grid cell's parameters into run_config.yaml")
    p.add_argument("--params", required=True, help="the cell's parameters as JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_resolve_run, with_method=True)
