"""Crash safety and rerun scope of the workflow (issue #6): SIGKILL mid-training, code changes, unrelated edits."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUN = "results/ci/runs/synthetic/supervised/labeled~2/seed~1"


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def snakemake_cmd(workdir: Path, config: Path, *extra: str) -> list[str]:
    snakefile = workdir / "Snakefile" if (workdir / "Snakefile").exists() else REPO / "Snakefile"
    return [str(BIN / "snakemake"), "--snakefile", str(snakefile), "--directory", str(workdir),
            "--configfile", str(config), "--cores", "2", *extra]  # fmt: skip


def longer_config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg["protocol"].update({"iterations": 60, "checkpoint_every": 10, "log_every": 1})
    cfg["data"]["synthetic"]["patch_size"] = [32, 32, 32]
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_pid() -> int | None:
    """The training process of RUN (the rule passes paths relative to the working directory)."""
    out = subprocess.run(["pgrep", "-f", f"harness train --run-config {RUN}/"], capture_output=True, text=True)
    # the shell Snakemake starts has the same command line: kill the Python process itself
    pids = [int(p) for p in out.stdout.split() if Path(f"/proc/{p}/comm").read_text().startswith("python")]
    return pids[0] if pids else None


@pytest.mark.slow
def test_sigkill_mid_training_then_rerun_equals_uninterrupted(tmp_path):
    config = longer_config(tmp_path)
    clean, crash = tmp_path / "clean", tmp_path / "crash"
    subprocess.run(snakemake_cmd(clean, config), env=env(), check=True, capture_output=True)

    kill_after = random.Random().randint(12, 45)  # a random iteration, past the first checkpoint
    proc = subprocess.Popen(snakemake_cmd(crash, config), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log, deadline, killed = crash / RUN / "train_log.jsonl", time.time() + 240, False
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= kill_after:
            pid = train_pid()
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.05)
    proc.wait(timeout=120)
    assert killed, "training finished before it could be killed"
    assert proc.returncode != 0
    # nothing declared to Snakemake is left half-written; the resume checkpoint is there
    assert not (crash / RUN / "model.pt").exists() and not (crash / RUN / "run_info.json").exists()
    assert (crash / RUN / "checkpoint_last.pt").exists()
    assert not list((crash / RUN).glob("*.tmp"))

    subprocess.run(snakemake_cmd(crash, config, "--rerun-incomplete"), env=env(), check=True, capture_output=True)
    a = torch.load(clean / RUN / "model.pt", weights_only=True)["state"]["net"]
    b = torch.load(crash / RUN / "model.pt", weights_only=True)["state"]["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (clean / RUN / "train_log.jsonl").read_text().splitlines() != []
    strip = [line.split(', "time"')[0] for line in (clean / RUN / "train_log.jsonl").read_text().splitlines()]
    assert strip == [line.split(', "time"')[0] for line in log.read_text().splitlines()]
    assert (clean / RUN / "metrics_per_case.csv").read_text() == (crash / RUN / "metrics_per_case.csv").read_text()


def copy_project(dst: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)


def planned_rules(workdir: Path, config: Path) -> set[str]:
    res = subprocess.run(snakemake_cmd(workdir, config, "-n"), env=env(), capture_output=True, text=True, check=True)
    text = res.stdout + res.stderr
    if "Nothing to be done" in text:
        return set()
    return {line.split()[0] for line in text.split("Job stats:")[-1].splitlines()[3:] if line.strip()} - {"total"}


@pytest.mark.slow
def test_code_changes_rerun_only_affected_jobs(tmp_path):
    project = tmp_path / "project"
    copy_project(project)
    config = project / ".test" / "config" / "config.yaml"
    subprocess.run(snakemake_cmd(project, config), env={**env(), "PYTHONPATH": str(project)}, check=True,
                   capture_output=True)  # fmt: skip
    assert planned_rules(project, config) == set()
    # a module that only draws figures: no training job reruns
    with (project / "harness" / "plots.py").open("a") as f:
        f.write("\n# a comment\n")
    assert "train" not in planned_rules(project, config)
    # a module with numerics: the training job reruns
    with (project / "harness" / "losses.py").open("a") as f:
        f.write("\n# a comment that changes the file's checksum\n")
    assert {"train", "predict", "evaluate"} <= planned_rules(project, config)
    # ... and retrains from scratch: the old checkpoint_last.pt was written by other code (code hash)
    subprocess.run(snakemake_cmd(project, config), env={**env(), "PYTHONPATH": str(project)}, check=True,
                   capture_output=True)  # fmt: skip
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
