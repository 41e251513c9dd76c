"""`python -m harness <command>`: the dispatcher every Snakemake rule calls (docs/architecture.md).

Each role package registers its own commands (`add_commands` in `harness/<role>/commands.py`) and each command calls
its API; this module only builds the command line from them, configures logging, checks that the job runs the code
the workflow planned (`harness.run.jobs.check_checkout`, `check_code`) and turns the harness's errors into exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("harness")

#: The modules that register commands, in the order data flows through the DAG.
COMMAND_MODULES = (
    "harness.data.commands",
    "harness.workflow.commands",
    "harness.train.commands",
    "harness.evaluate.commands",
    "harness.report.commands",
    "harness.external",
    "harness.gpucheck.command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--code-sha256",
        default="",
        help="the code identity the workflow planned for this job (harness.run.code): "
        "the job stops if the code it would run differs",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def command_defaults(command: str) -> dict[str, Any]:
    """The defaults a command registered (`func`, and `run_job` / `with_method` where set)."""
    parser = build_parser()
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if command not in choices:
        raise KeyError(f"no command {command!r}; commands: {', '.join(sorted(choices))}")
    sub = choices[command]
    return {key: sub.get_default(key) for key in ("func", "run_job", "with_method")}


def command_entry(command: str) -> tuple[str, bool]:
    """(`module:function` of the command's handler, whether a job's code includes its method's file)."""
    defaults = command_defaults(command)
    func = defaults["func"]
    return f"{func.__module__}:{func.__qualname__}", bool(defaults["with_method"])


def job_method(args: argparse.Namespace) -> str | None:
    """The method of a job whose code includes its method's file: from its run config (or resolve-run's params)."""
    import json

    import yaml

    if not getattr(args, "with_method", False):
        return None
    if getattr(args, "run_config", None):
        return yaml.safe_load(Path(args.run_config).read_text())["method"]
    return json.loads(args.params)["method"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from harness.config import ConfigError
    from harness.data.download import DataError
    from harness.run.jobs import CodeCheck, JobStopped, RunBusyError, WrongCode, check_checkout, release_stop_signals
    from harness.run.lineage import LineageError

    run_job = getattr(args, "run_job", False)
    if not run_job:
        release_stop_signals()  # held back by harness.__main__ until a run job has invalidated its downstream
    try:
        check_checkout()
        entry = f"{args.func.__module__}:{args.func.__qualname__}"
        args.code = CodeCheck(args.code_sha256, entry, job_method(args))
        if not run_job:
            args.code.verify()  # a job of a run verifies it in harness.run.jobs.run_job, after invalidating
        args.func(args)
    except (ConfigError, DataError, FileNotFoundError, KeyError, LineageError, RunBusyError, WrongCode) as err:
        logger.error("%s", err)
        return 2
    except JobStopped as err:
        logger.warning("%s", err)
        return 3
    return 0
