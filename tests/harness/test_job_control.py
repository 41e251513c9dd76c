"""harness.run.jobs: one writer per run folder, stop requests, the workflow watchdog, signal forwarding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from harness.run.jobs import (
    WORKFLOW_ENV,
    RunBusyError,
    RunLock,
    StopRequest,
    job_processes,
    workflow_alive,
    workflow_token,
)

REPO = Path(__file__).resolve().parents[2]


def python(code: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=full_env, **kwargs)


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def hold_lock(run_dir: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the run lock (as job "train") for `seconds`; returns once it holds it."""
    holder = python(
        f"""
        import time
        from harness.run.jobs import RunLock
        with RunLock({str(run_dir)!r}, "train"):
            open({str(run_dir / "held")!r}, "w").close()
            time.sleep({seconds})
        """
    )
    assert wait_for((run_dir / "held").exists)
    return holder


def test_second_writer_is_refused_with_the_first_ones_pid_until_it_dies(tmp_path):
    holder = hold_lock(tmp_path, 60)
    try:
        with pytest.raises(RunBusyError) as err, RunLock(tmp_path, "predict"):
            pass
        assert f'"pid": {holder.pid}' in str(err.value) and '"job": "train"' in str(err.value)
        assert "wait for it to finish, or stop it" in str(err.value)
    finally:
        holder.kill()  # SIGKILL: the kernel releases the flock
        holder.wait()
    with RunLock(tmp_path, "predict"):
        record = json.loads((tmp_path / ".lock").read_text())
        assert record["pid"] == os.getpid() and record["job"] == "predict"


def test_a_waiting_writer_gets_the_lock_once_the_holder_exits(tmp_path):
    holder = hold_lock(tmp_path, 1.5)
    t0 = time.time()
    with RunLock(tmp_path, "train", wait_s=30):
        assert 0.2 < time.time() - t0 < 20  # it waited for the holder, not for the whole wait_s
    holder.wait()


def test_stop_request_is_set_by_sigterm_and_a_second_signal_interrupts():
    stop = StopRequest().install()
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert wait_for(lambda: stop.requested, 5) and stop.reason == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # the same request again (terminal + Snakemake): still graceful
        time.sleep(0.1)
        stop._since -= StopRequest.REPEAT_S + 1  # seconds later: a second request
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, previous)


def test_workflow_token_liveness():
    assert workflow_alive(workflow_token())
    gone = subprocess.Popen(["sleep", "0"])
    token = workflow_token(gone.pid)
    gone.wait()
    assert not workflow_alive(token)
    assert workflow_alive(f"another-host:{gone.pid}:1.0")  # a process of another machine: not ours to judge
    assert workflow_alive("garbage")


def test_zombie_workflow_counts_as_gone():
    proc = subprocess.Popen(["sleep", "0"])
    token = workflow_token(proc.pid)
    assert wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE, 5)
    assert not workflow_alive(token)
    proc.wait()


def test_job_stops_when_its_workflow_is_killed(tmp_path):
    workflow = subprocess.Popen(["sleep", "120"])
    env = {WORKFLOW_ENV: workflow_token(workflow.pid)}
    job = python(
        f"""
        import time
        from harness.run.jobs import StopRequest, watch_workflow
        stop = StopRequest().install()
        watch_workflow(interval_s=0.1)
        while not stop.requested:
            time.sleep(0.05)
        open({str(tmp_path / "stopped")!r}, "w").write(stop.reason)
        """,
        env=env,
    )
    time.sleep(1.0)
    assert job.poll() is None  # the workflow is alive: the job goes on
    workflow.kill()
    workflow.wait()
    assert job.wait(timeout=20) == 0
    assert (tmp_path / "stopped").read_text() == "SIGTERM"


def test_job_processes_are_the_top_harness_processes(tmp_path):
    # a shell running `python -m harness ...`, which has a child of its own (like a data-loader worker)
    script = tmp_path / "harness"
    script.mkdir()
    (script / "__main__.py").write_text(
        "import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)'])\ntime.sleep(60)\n"
    )
    shell = subprocess.Popen(["bash", "-c", f"cd {tmp_path} && {sys.executable} -m harness train --x 1; true"])
    try:
        assert wait_for(lambda: len(psutil.Process(shell.pid).children(recursive=True)) >= 2)
        [job] = job_processes(psutil.Process(shell.pid))
        assert job.cmdline()[1:4] == ["-m", "harness", "train"] and job.ppid() == shell.pid
    finally:
        for proc in psutil.Process(shell.pid).children(recursive=True):
            proc.kill()
        shell.wait()


def test_sigint_to_the_workflow_stops_its_jobs_first(tmp_path):
    """forward_stop_signals in a stand-in Snakemake: SIGINT reaches its `python -m harness` job as SIGTERM."""
    package = tmp_path / "harness"  # a stand-in for the project's package, found first from the job's folder
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(tmp_path / 'job_got')!r}, 'w').write('SIGTERM'), "
        "sys.exit(0)))\n"
        "time.sleep(60)\n"
    )
    workflow = python(
        f"""
        import subprocess, sys, time
        from harness.run.jobs import forward_stop_signals
        job = subprocess.Popen(["bash", "-c", "cd {tmp_path} && {sys.executable} -m harness train; true"])
        forward_stop_signals()
        open({str(tmp_path / "ready")!r}, "w").close()
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            job.wait(timeout=20)
            open({str(tmp_path / "workflow_got")!r}, "w").write("KeyboardInterrupt")
        """,
        env={"PYTHONPATH": str(REPO)},
    )
    assert wait_for((tmp_path / "ready").exists)
    assert wait_for(lambda: len(psutil.Process(workflow.pid).children(recursive=True)) >= 2)
    time.sleep(0.5)  # the job installs its handler
    workflow.send_signal(signal.SIGINT)
    assert workflow.wait(timeout=30) == 0
    assert (tmp_path / "job_got").read_text() == "SIGTERM"
    assert (tmp_path / "workflow_got").read_text() == "KeyboardInterrupt"
