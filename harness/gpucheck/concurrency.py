"""Measurements in worker processes (`harness.gpucheck.worker`): k training runs sharing one device, measured with k
concurrent processes that start stepping together, and torch.compile with a time budget (a compile that does not
finish in time is stopped with its process).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.gpucheck.settings import CheckSettings, Variant
from harness.gpucheck.steps import StepCase, case_record
from harness.gpucheck.worker import PROTOCOL

#: The project root: the workers import `harness` from it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class WorkerError(RuntimeError):
    """A worker process that died, answered something unexpected or ran out of time; the message says which."""


class Worker:
    """One `python -m harness.gpucheck.worker SPEC` process, in its own process group, read line by line."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.gpucheck.worker", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            bufsize=0,
            cwd=PROJECT_ROOT,
            env=env,
            start_new_session=True,
        )
        self.buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float) -> str:
        """The next line the worker prints; WorkerError if it exits or prints none within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise WorkerError(f"no answer within {timeout:.0f} s")
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise WorkerError(f"the worker exited ({self.proc.wait()}): {self.error_tail()}")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode().strip()

    def expect(self, word: str, timeout: float) -> str:
        """The rest of the worker's next protocol line `PROTOCOL + word ...` (`harness.gpucheck.worker.say`), skipping
        any other output a library may print; WorkerError on another protocol word or after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(deadline - time.monotonic(), 0.0))
            if not line.startswith(PROTOCOL):
                continue
            got = line[len(PROTOCOL) :]
            if got.split(" ", 1)[0] != word:
                raise WorkerError(f"expected {word!r}, got {got!r}")
            return got[len(word) :].strip()

    def go(self) -> None:
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def error_tail(self) -> str:
        self.stderr.seek(0)
        lines = [ln for ln in self.stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else "(no error output)"

    def stop(self) -> None:
        """End the worker and its children (its process group) if it still runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.stderr.close()


def worker_spec(
    task: str, case: StepCase, settings: CheckSettings, variant: Variant, device: str, deterministic: bool = True
) -> dict[str, Any]:
    """What a worker builds: its task, the step (method, stage, dataset of `settings`), the precision and the cuDNN
    mode (`protocol.deterministic`)."""
    return {
        "task": task,
        "quick": settings.quick,
        "method": case.method,
        "stage": case.stage,
        "dataset": case.dataset.name,
        "device": device,
        "threads": 1,
        "deterministic": deterministic,
        "variant": {"amp": variant.amp, "tf32": variant.tf32, "channels_last": variant.channels_last},
    }


def run_group(workers: list[Worker], seconds: float, timeout: float) -> dict[str, Any]:
    """Let k ready workers step the same training job at once for `seconds`: each process's steps and seconds, the
    aggregate steps per second (summed over the processes) and the mean seconds per step one run sees."""
    for w in workers:
        w.go()
    results = [json.loads(w.expect("result", seconds + timeout)) for w in workers]
    rates = [r["steps"] / r["seconds"] for r in results]
    return {
        "k": len(workers),
        "status": "ok",
        "processes": results,
        "aggregate_steps_per_s": sum(rates),
        "per_run_step_s": sum(r["seconds"] / r["steps"] for r in results) / len(workers),
    }


def concurrency(spec: dict[str, Any], settings: CheckSettings, ready_timeout: float) -> list[dict[str, Any]]:
    """Throughput of k runs sharing the device for every k of `settings.k_values`, measured with k processes.

    All groups' workers start (and warm up) at once; then one group after the other steps for `settings.k_seconds`
    while the others wait idle on stdin. Each k's throughput is also given relative to k = 1."""
    groups = {k: [Worker({**spec, "seconds": settings.k_seconds}) for _ in range(k)] for k in settings.k_values}
    rows = []
    try:
        for k, workers in groups.items():
            try:
                for w in workers:
                    w.expect("ready", ready_timeout)
                rows.append(run_group(workers, settings.k_seconds, ready_timeout))
            except WorkerError as err:
                rows.append({"k": k, "status": f"error: {err}"})
    finally:
        for w in (w for workers in groups.values() for w in workers):
            w.stop()
    base = next((r["aggregate_steps_per_s"] for r in rows if r["k"] == 1 and r["status"] == "ok"), None)
    for r in rows:
        if r["status"] == "ok" and base:
            r["speedup_vs_1"] = r["aggregate_steps_per_s"] / base
    return rows


def compile_step(
    case: StepCase,
    settings: CheckSettings,
    variant: Variant,
    device: str,
    budget_s: float,
    ready_timeout: float,
    deterministic: bool = True,
) -> dict[str, Any]:
    """The compiled step in a worker: the first (compiling) step must end within `budget_s`, else the worker is
    stopped and the record says the networks did not compile in time."""
    record = case_record(case, variant, compiled=True)
    worker = Worker(worker_spec("compile", case, settings, variant, device, deterministic))
    try:
        worker.expect("ready", ready_timeout)
        worker.go()
        try:
            record["compile_s"] = float(worker.expect("compiled", budget_s))
        except WorkerError as err:
            if "no answer" not in str(err):
                raise
            return {**record, "status": f"not compiled within the budget of {budget_s:.0f} s"}
        result = json.loads(worker.expect("result", ready_timeout))
        record.update(status="ok", **{k: result[k] for k in ("median_step_s", "timed_steps", "peak_memory_mb")})
    except WorkerError as err:
        record["status"] = f"error: {err}"
    finally:
        worker.stop()
    return record
