"""Helpers of the tests that run the Snakemake workflow in subprocesses: commands, project copies, processes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUN = "results/ci/runs/synthetic/supervised/labeled~2/seed~1"


def env(project: Path = REPO, *, activated: bool = True, **variables: str) -> dict[str, str]:
    """The environment of a workflow run: this venv first on PATH, `project`'s harness importable; with
    `activated=False`, as from a shell that never activated the venv (no venv on PATH, no PYTHONPATH); `variables` on
    top."""
    if activated:
        base = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(project)}
    else:
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        base["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return {**base, **variables}


def snakemake(
    *args: str, cwd: Path = REPO, project: Path = REPO, check: bool = True, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """The one way the tests run `.venv/bin/snakemake` on `project`'s Snakefile (in `cwd`, with `environ`, default
    `env(project)`); an AssertionError with both outputs when it fails and `check` is set."""
    cmd = [str(BIN / "snakemake"), "--snakefile", str(project / "Snakefile"), *args]
    res = subprocess.run(cmd, cwd=cwd, env=environ or env(project), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def grid_args(workdir: Path, config: Path, *extra: str) -> list[str]:
    """The arguments of a run of `config` in `workdir` on 2 cores."""
    return ["--directory", str(workdir), "--configfile", str(config), "--cores", "2", *extra]


def run_snakemake(workdir: Path, config: Path, *extra: str, project: Path = REPO, check: bool = True):
    """`config`'s grid in `workdir` (`grid_args`)."""
    return snakemake(*grid_args(workdir, config, *extra), project=project, check=check)


def start_snakemake(workdir: Path, config: Path, *extra: str, project: Path = REPO) -> subprocess.Popen:
    cmd = [str(BIN / "snakemake"), "--snakefile", str(project / "Snakefile"), *grid_args(workdir, config, *extra)]
    return subprocess.Popen(cmd, env=env(project), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def copy_project(dst: Path) -> Path:
    """The project's tracked and untracked (not ignored) files, copied to `dst` (a project whose code a test edits)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)
    return dst


def wait_for(predicate: Callable[[], object], timeout: float = 120.0, interval: float = 0.02):
    """The first truthy value of `predicate()` within `timeout` seconds, else None."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def job_process(command: str, workdir: Path) -> psutil.Process | None:
    """The running `python -m harness [--code-sha256 <hash>] <command>` process whose working directory is
    `workdir`."""
    for proc in psutil.process_iter(["cmdline", "cwd", "name"]):
        try:
            cmdline = proc.info["cmdline"] or []
            args = cmdline[3:]
            if args[:1] == ["--code-sha256"]:
                args = args[2:]
            if cmdline[1:3] == ["-m", "harness"] and args[:1] == [command] and Path(proc.info["cwd"] or "") == workdir:
                return proc
        except (psutil.Error, IndexError):
            continue
    return None


def log_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def planned_jobs(text: str) -> dict[str, int]:
    """Job counts per rule from a dry run's output ('Job stats' table); {} when nothing is to be done."""
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def planned_wildcards(text: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, its wildcards) of every job of a dry run's output."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        if rule:
            pairs = wildcards[1].split(", ") if wildcards else []
            jobs.append((rule[1], dict(pair.split("=", 1) for pair in pairs)))
    return jobs


def planned_runs(text: str) -> set[tuple[str, str]]:
    """(rule, method) of every job of a dry run's output that has a method wildcard."""
    return {(rule, w["method"]) for rule, w in planned_wildcards(text) if "method" in w}
