"""Rerun scope of the workflow: code changes rerun what they affect, unrelated edits nothing.

Faults during reruns (killed jobs, a killed Snakemake) are in tests/test_faults.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from workflow_tools import REPO, copy_project, env, snakemake_cmd


def planned_rules(workdir: Path, config: Path, project: Path = REPO) -> set[str]:
    res = subprocess.run(
        snakemake_cmd(workdir, config, "-n", project=project),
        env=env(project),
        capture_output=True,
        text=True,
        check=True,
    )
    text = res.stdout + res.stderr
    if "Nothing to be done" in text:
        return set()
    return {line.split()[0] for line in text.split("Job stats:")[-1].splitlines()[3:] if line.strip()} - {"total"}


@pytest.mark.slow
def test_code_changes_rerun_only_affected_jobs(tmp_path):
    project = copy_project(tmp_path / "project")
    config = project / ".test" / "config" / "config.yaml"
    subprocess.run(snakemake_cmd(project, config, project=project), env=env(project), check=True, capture_output=True)
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
    subprocess.run(snakemake_cmd(project, config, project=project), env=env(project), check=True, capture_output=True)
    run = next((project / "results").rglob("run_info.json")).parent
    assert json.loads((run / "run_info.json").read_text())["resumed_from"] == 0
    assert list(run.glob("checkpoint_stale_*.pt"))


@pytest.mark.slow
def test_unrelated_config_edit_reruns_nothing(tmp_path):
    config = tmp_path / "ci.yaml"
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    config.write_text(yaml.safe_dump(cfg))
    subprocess.run(snakemake_cmd(tmp_path, config), env=env(), check=True, capture_output=True)
    cfg["compute"] = {"train_mem_mb": 1234, "train_runtime_min": 5}  # resources only
    cfg["method_overrides"] = {"simcvd": {"tau": 0.1}}  # another method's settings
    config.write_text(yaml.safe_dump(cfg))
    assert planned_rules(tmp_path, config) == set()
