"""The jobs of a run: the wrapper every one of them runs in, one writer per run folder, jobs that run the code of
the workflow's checkout, and jobs that stop when asked to or when the workflow that started them is gone.

- `run_job`: what every job of a run does around its work (delete what it recomputes, note its start in the
  journal, hold the lock, watch the workflow).
- `check_checkout` / `CodeCheck`: a job imports the `harness` of the checkout whose Snakefile started it and runs
  the code the DAG planned (`harness.run.code`), or stops naming both.
- `RunLock`: an exclusive `flock` on `<run>/.lock` held for a job's lifetime. A second job on the same run folder
  (a rerun started while an orphaned job of a killed Snakemake still writes) is refused with the first one's PID,
  host, job and start time. The kernel releases the lock when its holder dies, even after SIGKILL.
- `StopRequest`: SIGTERM and SIGINT become a request that a training loop checks after every iteration (it then
  writes a checkpoint and exits); a second signal, seconds later, stops at once.
- `watch_workflow`: the Snakefile exports `HARNESS_WORKFLOW` (host, PID and start time of the Snakemake process);
  a job whose Snakemake process is gone (SIGKILL, a lost node) sends itself SIGTERM instead of writing on.
- `forward_stop_signals`: installed in the Snakemake process (`onstart`), it sends SIGTERM to the running jobs when
  Snakemake receives SIGINT or SIGTERM (Snakemake itself only waits for them), then does what Snakemake does.

No torch import: the Snakefile uses this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import psutil

from harness.config import base_of
from harness.run.code import PROJECT_ROOT, code_identity
from harness.run.folder import LOCK
from harness.run.lineage import start_job
from harness.run.method_table import METHODS_DIR, read_method

logger = logging.getLogger(__name__)

#: How long a job waits for another job holding its run folder (an orphan of a killed workflow stops within seconds).
JOB_LOCK_WAIT_S = 60.0
#: The checkout whose Snakefile started a job (set by `export_for_jobs`); jobs refuse to run another one's code.
CHECKOUT_ENV = "HARNESS_CHECKOUT"
#: Environment variable naming the Snakemake process that started a job: "<host>:<pid>:<create_time>".
WORKFLOW_ENV = "HARNESS_WORKFLOW"
WATCH_INTERVAL_S = 0.5
#: Marks the command line of a job process (every rule runs `python -m harness <command>`).
JOB_MARKER = "harness"


class RunBusyError(RuntimeError):
    """Another live process holds the run folder's lock; the message names it and the way out."""


class WrongCode(RuntimeError):
    """A job would run other code than the workflow planned (another checkout, or files edited since the DAG was
    built); the message names both and the way out."""


@dataclass
class CodeCheck:
    """The code a job must run: the hash the workflow planned (empty: a job started by hand, nothing to compare),
    its command's handler (`module:function`) and, for a job of a run, its method (`harness.run.code`)."""

    expected_sha256: str
    entry: str
    method: str | None = None
    identity: dict[str, Any] | None = None
    """The job's code identity (hash and files), once `verify` ran: what the job records in its outputs."""

    def verify(self) -> dict[str, Any]:
        """The job's code identity; `WrongCode` if it is not the planned one (a file changed since the DAG was
        built)."""
        identity = code_identity(self.entry, base_of(self.method) if self.method else None)
        if self.expected_sha256 and identity.sha256 != self.expected_sha256:
            raise WrongCode(
                f"the code of this job changed since the workflow built its DAG (code sha256 {identity.sha256[:12]}, "
                f"planned {self.expected_sha256[:12]}; its files under {PROJECT_ROOT}: {', '.join(identity.files)})"
                ". Rerun the workflow: it plans again with the code as it is now."
            )
        self.identity = identity.as_dict()
        return self.identity


@contextlib.contextmanager
def run_job(
    run_dir: str | Path, job: str, method: str, code: CodeCheck | None = None, wait_s: float = JOB_LOCK_WAIT_S
) -> Iterator[None]:
    """What every job of a run does around its work: delete the results derived from what it recomputes and note its
    start in the run's journal (`harness.run.lineage`) before SIGINT/SIGTERM may stop it, check that it runs the
    planned code (`code`), then hold the run folder's lock (waiting for an orphaned writer to stop) and stop when its
    workflow is gone."""
    run_dir = Path(run_dir)
    stages = read_method(PROJECT_ROOT / METHODS_DIR / f"{base_of(method)}.py").stages
    deleted = start_job(run_dir, job, stages)
    release_stop_signals()
    if deleted:
        logger.info("%s: removed results derived from what this job recomputes: %s", run_dir, ", ".join(deleted))
    if code is not None:
        code.verify()
    with RunLock(run_dir, job, wait_s=wait_s):
        watch_workflow()
        yield


def check_checkout(environ: dict[str, str] | None = None) -> None:
    """Refuse to run when this process imports the `harness` of another checkout than the workflow's
    (`CHECKOUT_ENV`, set by the Snakefile): e.g. a second clone run with the first clone's editable `.venv`."""
    expected = (os.environ if environ is None else environ).get(CHECKOUT_ENV)
    checkout = Path(expected).resolve() if expected else None
    if checkout is not None and checkout != PROJECT_ROOT:
        raise WrongCode(
            f"this job imports harness from {PROJECT_ROOT}, but its workflow's Snakefile is in {checkout}: the numbers "
            "would come from the other checkout's code. Run the workflow with a Python that imports this checkout "
            f"(`pip install -e {checkout}` into its venv, or `make env` there)."
        )


class RunLock:
    """Exclusive lock on a run folder for one job (a context manager).

    Args:
        run_dir: the run folder (created if missing); the lock file is `<run_dir>/.lock`.
        job: what holds it (e.g. "train", "pretrain_stage1", "predict"), written into the lock file.
        wait_s: how long to wait for a holder to finish (an orphaned job of a killed workflow stops by itself within
            seconds) before refusing.
    """

    def __init__(self, run_dir: str | Path, job: str, wait_s: float = 0.0) -> None:
        self.path = Path(run_dir) / LOCK
        self.job = job
        self.wait_s = wait_s
        self._file: TextIO | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        deadline, waiting = time.monotonic() + self.wait_s, False
        while not _try_lock(handle):
            if time.monotonic() >= deadline:
                holder = _holder(handle)
                handle.close()
                raise RunBusyError(
                    f"{self.path.parent} is being written by another job ({holder}). Two writers would mix their "
                    f"outputs: wait for it to finish, or stop it (kill <pid>), then rerun."
                )
            if not waiting:
                logger.warning("%s is held by %s; waiting up to %.0f s", self.path.parent, _holder(handle), self.wait_s)
                waiting = True
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))
        handle.seek(0)
        handle.truncate()
        record = {"pid": os.getpid(), "host": socket.gethostname(), "job": self.job, "since": _now()}
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None


def _try_lock(handle: TextIO) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(handle: TextIO) -> str:
    handle.seek(0)
    return handle.read().strip() or "unknown process"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class StopRequest:
    """SIGTERM/SIGINT as a request to stop at the next iteration boundary (`install` in the main thread).

    `reason` is None until a signal arrives. A second signal more than `REPEAT_S` later raises KeyboardInterrupt at
    once; one sooner is the same request arriving twice (Ctrl-C reaches a job both from the terminal and from
    Snakemake's forwarding).
    """

    REPEAT_S = 2.0

    def __init__(self) -> None:
        self.reason: str | None = None
        self._since = 0.0

    def install(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.reason is not None:
            if time.monotonic() - self._since > self.REPEAT_S:
                raise KeyboardInterrupt(f"second signal ({name}): stopping now")
            return
        self.reason, self._since = name, time.monotonic()
        logger.warning("received %s: stopping after this iteration (a checkpoint is written first)", name)

    @property
    def requested(self) -> bool:
        return self.reason is not None


def release_stop_signals() -> None:
    """Deliver SIGINT/SIGTERM again (held back by `harness.__main__`; any that arrived meanwhile arrive now)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


class JobStopped(RuntimeError):
    """A job stopped on request (signal or lost workflow) after saving what a rerun resumes from."""


# -- the workflow watchdog -------------------------------------------------------------------------------------------
def workflow_token(pid: int | None = None) -> str:
    """`<host>:<pid>:<create_time>` of a process (default: this one), for `WORKFLOW_ENV`."""
    proc = psutil.Process(pid)
    return f"{socket.gethostname()}:{proc.pid}:{proc.create_time():.3f}"


def workflow_alive(token: str) -> bool:
    """Whether the process of `token` still runs. A token of another host, or malformed, counts as alive."""
    try:
        host, pid, created = token.rsplit(":", 2)
        pid_int, created_f = int(pid), float(created)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    try:
        proc = psutil.Process(pid_int)
        return abs(proc.create_time() - created_f) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def watch_workflow(env: dict[str, str] | None = None, interval_s: float = WATCH_INTERVAL_S) -> threading.Thread | None:
    """Start a daemon thread that sends SIGTERM to this process once the workflow in `WORKFLOW_ENV` is gone.

    Returns the thread, or None when no workflow is named (a job started by hand).
    """
    token = (os.environ if env is None else env).get(WORKFLOW_ENV, "")
    if not token:
        return None

    def watch() -> None:
        while workflow_alive(token):
            time.sleep(interval_s)
        logger.error("the Snakemake process that started this job (%s) is gone: stopping", token)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="workflow-watchdog", daemon=True)
    thread.start()
    return thread


# -- in the Snakemake process ----------------------------------------------------------------------------------------
def export_for_jobs(checkout: str | Path, environ: dict[str, str] | None = None) -> None:
    """Set what the jobs of this Snakemake process inherit: `WORKFLOW_ENV` naming this process (jobs stop when it is
    gone); this Python's folder first on PATH, so the rules' `python -m harness` is the Python that runs Snakemake
    (`.venv/bin/snakemake` works without activating the venv; with --use-conda the job's environment comes first
    instead); and the Snakefile's `checkout` first on PYTHONPATH and in `CHECKOUT_ENV`, so the jobs import its
    `harness` whatever the venv's editable install points to (`check_checkout` refuses otherwise)."""
    environ = os.environ if environ is None else environ
    checkout = str(Path(checkout).resolve())
    environ[WORKFLOW_ENV] = workflow_token()
    environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")])
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (checkout, environ.get("PYTHONPATH", "")) if p)
    environ[CHECKOUT_ENV] = checkout


#: How many jobs workflow/scripts/gpu_slot.sh lets share one device (config compute.runs_per_gpu).
RUNS_PER_GPU_ENV = "HARNESS_RUNS_PER_GPU"


def export_runs_per_gpu(runs_per_gpu: int, environ: dict[str, str] | None = None) -> None:
    """Hand `compute.runs_per_gpu` to the gpu_slot.sh of every GPU job through the jobs' environment (rather than
    their shell commands, so changing it reruns nothing: it decides where a job runs, never its numbers)."""
    environ = os.environ if environ is None else environ
    environ[RUNS_PER_GPU_ENV] = str(int(runs_per_gpu))


def job_processes(root: psutil.Process | None = None) -> list[psutil.Process]:
    """The top harness process of every running job below `root` (default: this process).

    A job is `shell -> python -m harness <command>` (possibly through workflow/scripts/gpu_slot.sh, which execs);
    its own children (data-loader workers) are left to it.
    """
    root = root or psutil.Process()
    jobs = []
    for proc in root.children(recursive=True):
        try:
            if _is_job(proc) and not _is_job(proc.parent()):
                jobs.append(proc)
        except psutil.Error:
            continue
    return jobs


def _is_job(proc: psutil.Process | None) -> bool:
    if proc is None:
        return False
    cmdline = proc.cmdline()
    return "-m" in cmdline and JOB_MARKER in cmdline


def terminate_jobs() -> int:
    """SIGTERM to every running job of this process; returns how many were signalled."""
    jobs = job_processes()
    for proc in jobs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            continue
    return len(jobs)


def forward_stop_signals() -> None:
    """On SIGINT/SIGTERM: SIGTERM the running jobs, then run the handler that was installed before."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _forwarding_handler(sig, signal.getsignal(sig)))


def _forwarding_handler(sig: signal.Signals, previous: Any):
    def handle(signum: int, frame: FrameType | None) -> None:
        n = terminate_jobs()
        if n:
            logger.warning("%s: sent SIGTERM to %d running job(s); they save a checkpoint and stop", sig.name, n)
        if callable(previous):
            previous(signum, frame)
        elif sig == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)

    return handle
