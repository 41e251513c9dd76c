"""The validated grid as the Snakemake rules need it, at DAG build (no torch): the runs and their folders, where each
stage lives and which model it starts from (`harness.run.stages`), each job's parameters and code identity
(`harness.run.code`), and the files of the runs a report rule reads."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from harness.cli import command_entry
from harness.config import base_of
from harness.run.code import code_identity
from harness.run.folder import JOURNAL, METRICS_CSV, MODEL, RUNS, TEST_CURVE, VAL_CURVE, RunId
from harness.run.lineage import Problem, find_inconsistencies
from harness.run.method_table import MethodEntry
from harness.run.stages import own_stages, previous_stage, stage_home
from harness.workflow.grid import cell_params, grid_cells


class Plan:
    """The runs of a validated `config` and what their jobs need. `methods` is the method table
    (`harness.run.method_table.read_methods`), `root` the project whose code the jobs run."""

    def __init__(self, config: dict[str, Any], methods: dict[str, MethodEntry], root: str | Path) -> None:
        self.config, self.methods, self.root = config, methods, Path(root)
        self.name = config["name"]
        self.bench = f"results/{self.name}"
        self.runs = grid_cells(config)

    # -- runs and their stages ---------------------------------------------------------------------------------------
    def run_dir(self, run: RunId) -> str:
        return f"{self.bench}/{RUNS}/{run.path}"

    def method(self, method: str) -> MethodEntry:
        """The method table entry of a grid entry (a variant's base method)."""
        return self.methods[base_of(method)]

    def labeled_counts(self, dataset: str) -> list[int]:
        return self.config["datasets"][dataset]["labeled"]

    def own_stages(self, run: RunId) -> tuple[str, ...]:
        """The pre-training stages trained in `run`'s own folder."""
        return own_stages(run, self.method(run.method), self.labeled_counts(run.dataset))

    def previous_model(self, run: RunId, stage: str | None) -> list[str]:
        """The model.pt the job of `stage` (None: the main training) starts from: [] or [path]."""
        entry = self.method(run.method)
        previous = previous_stage(entry.stages, stage)
        if previous is None:
            return []
        home = stage_home(run, previous, entry, self.labeled_counts(run.dataset))
        return [f"{self.run_dir(home)}/{previous}/{MODEL}"]

    def run_files(self, name: str, dataset: str | None = None, seed: int | None = None) -> list[str]:
        """`name` (e.g. run_info.json) of every run, optionally of one dataset and/or one seed."""
        return [
            f"{self.run_dir(run)}/{name}"
            for run in self.runs
            if (dataset is None or run.dataset == dataset) and (seed is None or run.seed == seed)
        ]

    def barrier(self, dataset: str | None = None, seed: int | None = None) -> list[str]:
        """Journals and metrics of the runs a report rule reads: it reruns when a job of one of them started (the
        journal changed) and runs after all their jobs (`harness.run.lineage`)."""
        return self.run_files(JOURNAL, dataset, seed) + self.run_files(METRICS_CSV, dataset, seed)

    def curves(self) -> list[str]:
        """The curve files a main training writes besides its model (`harness.train.monitor`): the validation
        curve with `protocol.selection: val`, the test curve with the selection audit."""
        val = self.config["protocol"].get("selection", "last") == "val"
        audit = self.config["report"]["selection_audit"]["every"] > 0
        return [name for name, on in ((VAL_CURVE, val), (TEST_CURVE, audit)) if on]

    def stale_results(self) -> list[Problem]:
        """Results that outlived the files they were computed from and that Snakemake would not redo."""
        runs = [(Path(self.run_dir(run)), self.own_stages(run)) for run in self.runs]
        return find_inconsistencies(Path(self.bench), runs)

    # -- what a job depends on ---------------------------------------------------------------------------------------
    def run_params(self, run: RunId) -> str:
        """The run's parameters as JSON (the run_config rule's params: editing one method's settings reruns only
        its runs)."""
        return json.dumps(cell_params(self.config, run), sort_keys=True)

    def code(self, command: str, method: str | None = None) -> str:
        """The code identity (sha256) of a job of `command` (of `method`'s run where the command's code includes
        its method file): the rule's `params.code`, also handed to the job, which stops if its code differs."""
        return _code(self.root, command, base_of(method) if method else None)


@cache
def _code(root: Path, command: str, method: str | None) -> str:
    entry, with_method = command_entry(command)
    return code_identity(entry, method if with_method else None, root).sha256
