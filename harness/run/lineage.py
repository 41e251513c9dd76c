"""Which files of a run folder are derived from which, and how the workflow keeps derived results from outliving
what they were computed from.

Snakemake reruns a job when an input is newer or its parameters changed, but not when an input is *missing* while
the job's own outputs exist. When a job is killed during a rerun, Snakemake has already deleted its old outputs, so
the predictions, metrics and tables derived from them would otherwise stay and look current. Three rules prevent it:

1. `start_job`: every job of a run, first thing (before SIGINT/SIGTERM may stop it, `harness.__main__`), deletes
   the run's files downstream of its own outputs (`run_chain`) and appends a line to the run's journal
   (`journal.log`, written by the `run_config` job).
2. The report rules take the journals of the runs they read as inputs (and those runs' last outputs, so that they
   run after every job of those runs started): a job that started and did not finish changes the journal, the
   report rules rerun and pull the deleted files back through the DAG.
3. `find_inconsistencies`, when the DAG is built: a run folder with a result whose upstream file is missing, or
   tables that include a run whose metrics are missing with no newer journal line, stop the workflow with the files
   to delete (a run folder deleted by hand, a job killed in the milliseconds before step 1).

No torch import: the Snakefile uses this module.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.io import remove, tmp_path, write_text_atomic
from harness.run.folder import (
    JOURNAL,
    METRICS_CSV,
    METRICS_JSON,
    MODEL,
    PREDICTIONS,
    RUN_CONFIG,
    RUN_INFO,
    RunId,
)
from harness.run.stages import job_name

SUMMARY = "summary.json"
#: What the report rules write under `results/<name>/` (workflow/rules/report.smk).
REPORT_OUTPUTS = ("tables", "figures", "report", "sensitivity", SUMMARY, "runs.csv")


class LineageError(RuntimeError):
    """An input was not computed from what the job expects (another model, data or settings); the message says
    which job to rerun."""


@dataclass(frozen=True)
class Link:
    """One job of a run and the files (relative to the run folder) it writes."""

    job: str
    outputs: tuple[str, ...]


def run_chain(stages: Sequence[str] = ()) -> tuple[Link, ...]:
    """The jobs of one run in DAG order; `stages` are the method's pre-training stages (`Method.STAGES`)."""
    return (
        Link("run_config", (RUN_CONFIG, JOURNAL)),
        *(Link(job_name(s), (f"{s}/{MODEL}", f"{s}/{RUN_INFO}")) for s in stages),
        Link(job_name(None), (MODEL, RUN_INFO)),
        Link("predict", (PREDICTIONS,)),
        Link("evaluate", (METRICS_CSV, METRICS_JSON)),
    )


def _index(chain: Sequence[Link], job: str) -> int:
    jobs = [link.job for link in chain]
    if job not in jobs:
        raise ValueError(f"job {job!r} is not a job of this run; its jobs: {', '.join(jobs)}")
    return jobs.index(job)


def downstream(chain: Sequence[Link], job: str) -> list[str]:
    """Files of the run derived from `job`'s outputs: the outputs of every later job."""
    return [out for link in chain[_index(chain, job) + 1 :] for out in link.outputs]


def start_job(run_dir: str | Path, job: str, stages: Sequence[str] = ()) -> list[str]:
    """Invalidate what `job` is about to recompute, then record the start in the journal (rules 1 and 2).

    Deletes the outputs of every later job of the run and the `.tmp` leftovers of the job's own outputs (a killed
    earlier attempt); the job's own outputs were deleted by Snakemake. Returns the deleted paths (relative).
    """
    run_dir = Path(run_dir)
    chain = run_chain(stages)
    own = chain[_index(chain, job)].outputs
    deleted = [rel for rel in downstream(chain, job) if remove(run_dir / rel)]
    leftovers = [tmp_path(rel) for rel in (*own, *downstream(chain, job))]
    deleted += [str(rel) for rel in leftovers if remove(run_dir / rel)]
    append_journal(run_dir, job)
    return deleted


def append_journal(run_dir: str | Path, job: str) -> None:
    """One JSON line per job start; every line differs (time, PID), so the file's checksum changes each time."""
    record = {"job": job, "started": time.time(), "pid": os.getpid(), "host": socket.gethostname()}
    path = Path(run_dir) / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def new_journal(run_dir: str | Path) -> Path:
    """The journal as the `run_config` job writes it: one fixed line (the same content on every rewrite)."""
    record = {"journal": "one line per job started in this run folder"}
    return write_text_atomic(Path(run_dir) / JOURNAL, json.dumps(record) + "\n")


# -- the check when the DAG is built (rule 3) -----------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """A stale result: why, and the paths whose deletion lets the workflow recompute it."""

    message: str
    delete: tuple[Path, ...]


def run_problems(run_dir: Path, stages: Sequence[str] = ()) -> list[Problem]:
    """A job's outputs that exist while an earlier job of the run is incomplete (they outlived their source)."""
    chain = run_chain(stages)
    for link in chain:
        missing = [out for out in link.outputs if out != JOURNAL and not (run_dir / out).exists()]
        if not missing:
            continue
        later = [run_dir / out for out in downstream(chain, link.job) if (run_dir / out).exists()]
        if not later:
            return []
        names = ", ".join(str(p.relative_to(run_dir)) for p in later)
        message = f"{run_dir}: {names} exist but {missing[0]} (job {link.job}) is missing"
        return [Problem(message, tuple(later))]
    return []


def report_problems(bench_dir: Path, run_dirs: Iterable[Path]) -> list[Problem]:
    """Runs that the tables include but whose metrics are missing, with no journal line newer than the tables."""
    summary = bench_dir / SUMMARY
    if not summary.is_file():
        return []
    try:
        listed = {_run_key(r) for r in json.loads(summary.read_text()).get("runs", [])}
    except (ValueError, KeyError, TypeError):
        listed = None  # unreadable: treat every run as listed
    stale = []
    for run_dir in run_dirs:
        if listed is not None and RunId.from_folder(run_dir) not in listed:
            continue
        journal = run_dir / JOURNAL
        redone = journal.is_file() and journal.stat().st_mtime > summary.stat().st_mtime
        if not (run_dir / METRICS_CSV).is_file() and not redone:
            stale.append(run_dir)
    if not stale:
        return []
    outputs = tuple(bench_dir / name for name in REPORT_OUTPUTS if (bench_dir / name).exists())
    names = ", ".join(str(r) for r in stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
    return [Problem(f"{summary} includes run(s) whose metrics are missing: {names}", outputs)]


def _run_key(record: dict) -> RunId:
    return RunId(str(record["dataset"]), str(record["method"]), int(record["n_labeled"]), int(record["seed"]))


def find_inconsistencies(bench_dir: str | Path, runs: Iterable[tuple[Path, Sequence[str]]]) -> list[Problem]:
    """Every stale result of a benchmark folder `results/<name>` given its runs as (run folder, stages)."""
    runs = [(Path(run_dir), stages) for run_dir, stages in runs]
    problems = [p for run_dir, stages in runs for p in run_problems(run_dir, stages)]
    return problems + report_problems(Path(bench_dir), [run_dir for run_dir, _ in runs])


def refusal_message(problems: Sequence[Problem]) -> str:
    """The refusal message: what is stale and the command that deletes it (the workflow then recomputes it)."""
    lines = ["results that no longer match what they were computed from, and that Snakemake would not redo:"]
    lines += [f"  - {p.message}" for p in problems]
    paths = sorted({str(path) for p in problems for path in p.delete})
    lines.append("Delete them (the workflow recomputes them from the files that exist), then rerun:")
    lines.append("  rm -rf " + " ".join(shlex.quote(p) for p in paths))
    return "\n".join(lines)
