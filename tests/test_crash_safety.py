"""Rerun scope of the workflow: code changes rerun what they affect, unrelated edits nothing.

Faults during reruns (killed jobs, a killed Snakemake) are in tests/test_faults.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from workflow_tools import REPO, copy_project, planned_jobs, run_snakemake


def planned_rules(workdir: Path, config: Path, project: Path = REPO) -> set[str]:
    """The rules a dry run of `config` in `workdir` would run."""
    res = run_snakemake(workdir, config, "-n", project=project)
    return set(planned_jobs(res.stdout + res.stderr)) - {"all"}


@pytest.mark.slow
def test_code_changes_rerun_only_affected_jobs(tmp_path):
    project = copy_project(tmp_path / "project")
    config = project / ".test" / "config" / "config.yaml"
    run_snakemake(project, config, project=project)
    assert planned_rules(project, config, project) == set()
    # a module that only draws figures: no training job reruns
    with (project / "harness" / "report" / "plots.py").open("a") as f:
        f.write("\n# a comment\n")
    assert "train" not in planned_rules(project, config, project)
    # a module with numerics: the training job reruns
    with (project / "harness" / "numerics" / "losses.py").open("a") as f:
        f.write("\n# a comment that changes the file's checksum\n")
    assert {"train", "predict", "evaluate"} <= planned_rules(project, config, project)
    # ... and retrains from scratch: the old checkpoint_last.pt was written by other code (code hash)
    run_snakemake(project, config, project=project)
    run = next((project / "results").rglob("run_info.json")).parent
    assert json.loads((run / "run_info.json").read_text())["resumed_from"] == 0
    assert list(run.glob("checkpoint_stale_*.pt"))


@pytest.mark.slow
def test_unrelated_config_edit_reruns_nothing(tmp_path):
    config = tmp_path / "ci.yaml"
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    config.write_text(yaml.safe_dump(cfg))
    run_snakemake(tmp_path, config)
    cfg["compute"] = {"train_mem_mb": 1234, "train_runtime_min": 5}  # resources only
    cfg["method_overrides"] = {"simcvd": {"tau": 0.1}}  # another method's settings
    config.write_text(yaml.safe_dump(cfg))
    assert planned_rules(tmp_path, config) == set()
