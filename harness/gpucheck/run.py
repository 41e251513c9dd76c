"""The check from start to end: what is measured in which order, under one time budget.

Order (what matters most first, so the budget never drops it): every step in the grid's precision (fp32 for the
paper grid); the loader; the sliding window; k runs per device; the other precision and layout variants; compiled
steps. Whatever does not fit in the budget is recorded as skipped. The projection is computed from what was measured.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from harness import provenance
from harness.gpucheck.concurrency import compile_step, concurrency, worker_spec
from harness.gpucheck.device import device_record
from harness.gpucheck.pipeline import bottleneck, loader_rate, sliding_window_time
from harness.gpucheck.projection import configured_variant, predict_hours, project, selection_hours, step_unit_costs
from harness.gpucheck.settings import NO_CUDA, VARIANTS, CheckSettings, Variant
from harness.gpucheck.steps import StepCase, measure_step, skipped, step_cases
from harness.method.registry import list_methods
from harness.numerics.precision import set_tf32, tf32_state

#: Format of gpu_check.json (bump when a key changes meaning).
FORMAT = "harness.gpu_check/1"
#: How long a worker process may take to start, build its step and warm up.
READY_TIMEOUT_S = {True: 120.0, False: 300.0}


@dataclass
class Clock:
    """The check's time budget."""

    budget_s: float
    start: float

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def spent(self) -> bool:
        return self.left() <= 0


def measure_steps(
    cases: list[StepCase],
    variants: list[Variant],
    settings: CheckSettings,
    device: torch.device,
    clock: Clock,
    *,
    every_method: bool = False,
) -> list[dict[str, Any]]:
    """Every case under every variant (in that order), or the reason it was skipped: the time budget, or (unless
    `every_method`) a method outside `settings.variant_methods`."""
    rows = []
    for variant in variants:
        for case in cases:
            if not every_method and settings.variant_methods and case.method not in settings.variant_methods:
                only = ", ".join(settings.variant_methods or ())
                rows.append(skipped(case, variant, f"--quick measures every variant of {only} only"))
            elif clock.spent():
                rows.append(skipped(case, variant, f"time budget of {settings.budget_s:.0f} s spent"))
            else:
                rows.append(measure_step(case, settings, variant, device))
    return rows


def find_step(steps: list[dict[str, Any]], method: str, dataset: str, variant: str) -> dict[str, Any] | None:
    """The successful uncompiled main-stage measurement of `method` on `dataset` in `variant`."""
    for r in steps:
        hit = (r["method"], r["stage"], r["dataset"], r["variant"]) == (method, "train", dataset, variant)
        if hit and not r["compile"] and r["status"] == "ok":
            return r
    return None


def measure_loaders(
    settings: CheckSettings, grid: dict[str, Any], device: torch.device, steps: list[dict[str, Any]], variant: str
) -> list[dict[str, Any]]:
    """Loader samples/s of each method's main stage on the first dataset, beside the samples/s its step consumes."""
    workers = grid["compute"]["loader_workers"]
    geometry = settings.datasets[0]
    rows = []
    for method in settings.loader_methods or list_methods():
        row = loader_rate(StepCase(method, None, geometry), settings, workers, device)
        step = find_step(steps, method, geometry.name, variant)
        step_rate = step["samples"] / step["median_step_s"] if step else None
        rows.append({**row, "step_samples_per_s": step_rate, "bottleneck": bottleneck(row["samples_per_s"], step_rate)})
    return rows


def measure_compiles(
    cases: list[StepCase],
    settings: CheckSettings,
    variant: Variant,
    device: torch.device,
    clock: Clock,
    deterministic: bool,
) -> list[dict[str, Any]]:
    """Each case compiled (in a worker, within the compile budget and what is left of the check's budget)."""
    rows = []
    for i, case in enumerate(cases):
        if settings.compile_cases is not None and i >= settings.compile_cases:
            rows.append(skipped(case, variant, "--quick compiles the first step only", compiled=True))
        elif clock.left() < 1:
            rows.append(skipped(case, variant, f"time budget of {settings.budget_s:.0f} s spent", compiled=True))
        else:
            budget = min(settings.compile_budget_s, clock.left())
            ready = READY_TIMEOUT_S[settings.quick]
            rows.append(compile_step(case, settings, variant, str(device), budget, ready, deterministic))
    return rows


def projection(
    grid: dict[str, Any], settings: CheckSettings, steps: list, sliding: list, k_rows: list, variant: str, cuda: bool
) -> dict[str, Any]:
    """The grid's projected wall time (`harness.gpucheck.projection`); hours are n/a without CUDA (a CPU's tiny
    steps say nothing about a GPU's)."""
    units = step_unit_costs(steps, variant, settings.n_filters)
    speedups = {r["k"]: r["speedup_vs_1"] for r in k_rows if "speedup_vs_1" in r}
    seconds = {r["dataset"]: r["seconds_per_case"] for r in sliding}
    tests = {g.name: g.test_cases for g in settings.datasets}
    selection_h = selection_hours(grid, seconds, tests)
    result = project(grid, units, speedups, predict_hours(grid, seconds, tests), selection_h=selection_h)
    if cuda:
        return result
    rows = [{**r, "wall_hours": NO_CUDA} for r in result["rows"]]
    return {
        **result,
        "train_hours_per_method": NO_CUDA,
        "train_hours": NO_CUDA,
        "predict_hours": NO_CUDA,
        "selection_hours": NO_CUDA,
        "sequential_hours": NO_CUDA,
        "rows": rows,
    }


@contextlib.contextmanager
def job_like_torch(deterministic: bool, threads: int) -> Iterator[None]:
    """torch set as a training job of the grid sets it: its intra-op threads (`compute.train_threads`) and the grid's
    cuDNN mode (`harness.train.seeding`); these and the TF32 switches are restored afterwards."""
    cudnn = torch.backends.cudnn
    saved = torch.get_num_threads(), tf32_state(), cudnn.deterministic, cudnn.benchmark
    torch.set_num_threads(threads)
    cudnn.deterministic, cudnn.benchmark = deterministic, not deterministic
    try:
        yield
    finally:
        threads, tf32, cudnn.deterministic, cudnn.benchmark = saved
        torch.set_num_threads(threads)
        set_tf32(tf32["cudnn_allow_tf32"])
        torch.backends.cuda.matmul.allow_tf32 = tf32["cuda_matmul_allow_tf32"]


def run_check(settings: CheckSettings, device: torch.device, grid: dict[str, Any], grid_path: str) -> dict[str, Any]:
    """Measure everything (see the module docstring) and return the report's data (`gpu_check.json`)."""
    clock, cuda, variant = Clock(settings.budget_s, time.monotonic()), device.type == "cuda", configured_variant(grid)
    cases, deterministic = step_cases(settings), grid["protocol"]["deterministic"]
    ready = READY_TIMEOUT_S[settings.quick]
    with job_like_torch(deterministic, grid["compute"]["train_threads"]):
        steps = measure_steps(cases, [variant], settings, device, clock, every_method=True)
        loaders = measure_loaders(settings, grid, device, steps, variant.name)
        windows = grid["eval"]["windows_per_batch"]
        sliding = [sliding_window_time(g, settings, windows, device) for g in settings.datasets]
        k_case = StepCase(settings.k_method, None, settings.datasets[0])
        k_rows = concurrency(
            worker_spec("throughput", k_case, settings, variant, str(device), deterministic), settings, ready
        )
        steps += measure_steps(cases, [v for v in VARIANTS if v != variant], settings, device, clock)
        steps += measure_compiles(cases, settings, variant, device, clock, deterministic)
    return {
        "format": FORMAT,
        "mode": "quick" if settings.quick else "full",
        "grid": grid_path,
        "grid_variant": variant.name,
        "device": device_record(device),
        "settings": asdict(settings),
        "steps": steps,
        "loader": loaders,
        "sliding_window": sliding,
        "concurrency": {"method": settings.k_method, "dataset": settings.datasets[0].name, "rows": k_rows},
        "projection": projection(grid, settings, steps, sliding, k_rows, variant.name, cuda),
        "seconds": time.monotonic() - clock.start,
        "pid": os.getpid(),  # the check's own process (the k-run workers are others)
        "provenance": provenance.collect(),
    }
