"""The DVC project (dvc.yaml, .dvc/config, .dvcignore) in a fresh `git clone`, as a new user gets it.

The project's files are committed into a temporary repository and cloned; in the clone, without `dvc init`: the DAG,
the repository's own settings (no analytics), `dvc params diff` between two commits, `dvc metrics show` / `diff` on a
small summary.json (committed, not ignored), `dvc repro --dry` and `dvc status`. Nothing is trained.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml
from workflow_tools import BIN, copy_project

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]


def run(*cmd: str, cwd: Path) -> str:
    """stdout of `cmd` (this venv's dvc first on PATH); a failure shows both streams."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DVC_NO_ANALYTICS", None)  # the repository's own .dvc/config must switch analytics off
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout


def commit(repo: Path, message: str) -> None:
    run(*GIT, "commit", "-q", "-a", "-m", message, cwd=repo)


def fresh_clone(tmp_path: Path) -> Path:
    origin = copy_project(tmp_path / "origin")  # tracked and untracked (not ignored) files: what gets committed
    run("git", "init", "-q", cwd=origin)
    run(*GIT, "add", "-A", cwd=origin)
    run(*GIT, "commit", "-q", "-m", "the project", cwd=origin)
    run("git", "clone", "-q", str(origin), str(tmp_path / "clone"), cwd=tmp_path)
    return tmp_path / "clone"


def summary(dice: float) -> str:
    """A summary.json in the shape harness.report.tables.build_summary writes."""
    return json.dumps({"cells": {"synthetic": {"supervised@labeled~2": {"dice_mean": dice, "n_seeds": 2}}}})


def test_dvc_in_a_fresh_clone(tmp_path):
    clone = fresh_clone(tmp_path)
    assert run("dvc", "config", "core.analytics", cwd=clone).strip() == "false"
    assert run("dvc", "config", "core.check_update", cwd=clone).strip() == "false"
    assert run("dvc", "remote", "list", cwd=clone).strip() == ""  # nothing to push to, nothing pulled
    dag = run("dvc", "dag", cwd=clone)
    assert "smoke" in dag and "paper" in dag

    # a configuration change in a second commit: exactly that key, old and new
    config = clone / "config" / "smoke.yaml"
    grid = yaml.safe_load(config.read_text())
    before = grid["protocol"]["iterations"]
    grid["protocol"]["iterations"] = before + 1
    config.write_text(yaml.safe_dump(grid))
    commit(clone, "one more iteration")
    changed = json.loads(run("dvc", "params", "diff", "HEAD~1", "HEAD", "--json", cwd=clone))
    assert changed == {"config/smoke.yaml": {"protocol.iterations": {"old": before, "new": before + 1, "diff": 1}}}

    # the metrics file is committed (not git-ignored, no DVC cache): show, then diff two commits
    metrics = clone / "results" / "smoke" / "summary.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(summary(61.5))
    shown = json.loads(run("dvc", "metrics", "show", "--json", cwd=clone))
    cells = shown[""]["data"]["results/smoke/summary.json"]["data"]["cells"]  # "": the workspace
    assert cells["synthetic"]["supervised@labeled~2"]["dice_mean"] == 61.5
    run(*GIT, "add", str(metrics.relative_to(clone)), cwd=clone)  # refused if .gitignore hid it
    commit(clone, "smoke results")
    metrics.write_text(summary(64.0))
    commit(clone, "better smoke results")
    diff = json.loads(run("dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json", cwd=clone))
    key = "cells.synthetic.supervised@labeled~2.dice_mean"
    assert diff == {"results/smoke/summary.json": {key: {"old": 61.5, "new": 64.0, "diff": 2.5}}}

    # what a repro would run, without running it
    dry = run("dvc", "repro", "--dry", "smoke", cwd=clone)
    assert "Running stage 'smoke'" in dry and "snakemake --cores all --configfile config/smoke.yaml" in dry
    assert not (clone / "results" / "smoke" / "tables").exists()
    status = run("dvc", "status", cwd=clone)
    assert "smoke:" in status and "changed deps" in status  # never reproduced in this clone
    assert run("git", "status", "--porcelain", cwd=clone) == ""  # DVC wrote only what .dvc/.gitignore ignores
