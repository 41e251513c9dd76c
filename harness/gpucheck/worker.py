"""The measuring process of `harness.gpucheck.concurrency`: `python -m harness.gpucheck.worker SPEC_JSON`.

It builds one training step (`harness.gpucheck.steps.StepRunner`), warms it up, prints `ready` and waits for `go` on
stdin, so that k workers start stepping together; then

* task "throughput": steps for `seconds` and prints `result {"steps", "seconds", ...}`;
* task "compile": the networks are compiled (`protocol.compile`); the first step (which compiles) is timed and
  reported as `compiled <seconds>`, then the step time after warm-up as `result {...}`.

Those protocol lines go to stdout, prefixed with `PROTOCOL`; logs and errors go to stderr.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any

import torch

from harness.gpucheck.settings import CheckSettings, Variant, full_settings, quick_settings
from harness.gpucheck.steps import StepCase, StepRunner, peak_memory_mb
from harness.numerics.precision import set_tf32

#: Prefix of the protocol lines on stdout (anything else a library prints there is ignored by the reader).
PROTOCOL = "@gpu-check "


def say(line: str) -> None:
    print(PROTOCOL + line, flush=True)


def wait_for_go() -> None:
    line = sys.stdin.readline().strip()
    if line != "go":
        raise SystemExit(f"gpu-check worker: expected 'go' on stdin, got {line!r}")


def make_runner(spec: dict[str, Any]) -> tuple[StepRunner, CheckSettings]:
    settings = quick_settings() if spec["quick"] else full_settings()
    geometry = next(g for g in settings.datasets if g.name == spec["dataset"])
    variant = Variant(**spec["variant"])
    device = torch.device(spec["device"])
    torch.set_num_threads(spec.get("threads", 1))
    deterministic = spec.get("deterministic", True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, not deterministic
    set_tf32(variant.tf32)
    return StepRunner(StepCase(spec["method"], spec.get("stage"), geometry), settings, variant, device), settings


def throughput(spec: dict[str, Any]) -> dict[str, Any]:
    runner, settings = make_runner(spec)
    for _ in range(settings.warmup):
        runner.step()
    say("ready")
    wait_for_go()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < spec["seconds"]:
        runner.step()
        steps += 1
    seconds = time.perf_counter() - t0
    return {
        "pid": os.getpid(),
        "steps": steps,
        "seconds": seconds,
        "samples_per_step": runner.samples,
        "peak_memory_mb": peak_memory_mb(runner.device),
    }


def compiled(spec: dict[str, Any]) -> dict[str, Any]:
    runner, settings = make_runner(spec)
    runner.compile()
    say("ready")
    wait_for_go()
    say(f"compiled {runner.step():.3f}")
    for _ in range(max(settings.warmup - 1, 0)):
        runner.step()
    times = [runner.step() for _ in range(settings.iterations)]
    return {
        "pid": os.getpid(),
        "median_step_s": statistics.median(times),
        "timed_steps": len(times),
        "peak_memory_mb": peak_memory_mb(runner.device),
    }


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    task = {"throughput": throughput, "compile": compiled}[spec["task"]]
    say("result " + json.dumps(task(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
