"""Projected wall time of a grid from the check's measurements, through the grid's cost estimate
(`harness.workflow.cost_estimate`): measured step seconds become per-method unit costs, which the estimate scales to
every run and pre-training stage of the grid; prediction adds the sliding-window seconds of every test case; k runs
per GPU divide by the measured k-process speed-up, G GPUs by G.

Not included, and said so in the report: loader stalls (see the loader table), checkpoints, evaluation metrics and
job start-up, and the idle tail when the last jobs do not fill every slot.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.gpucheck.settings import Variant
from harness.run.method_table import read_methods
from harness.workflow.cost_estimate import estimate, step_work
from harness.workflow.grid import grid_cells
from harness.workflow.validate import load_config_file, validate_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def load_grid(path: Path) -> dict[str, Any]:
    """The grid config at `path`, validated with its defaults filled in (as the Snakefile sees it)."""
    return validate_config(load_config_file(path), read_methods(PROJECT_ROOT))


def configured_variant(config: dict[str, Any]) -> Variant:
    """The precision and layout the grid's runs train with (`protocol.amp`, `tf32`, `channels_last`)."""
    p = config.get("protocol", {})
    return Variant(amp=p.get("amp", "off"), tf32=p.get("tf32", False), channels_last=p.get("channels_last", False))


def step_unit_costs(steps: list[dict[str, Any]], variant: str, n_filters: int) -> dict[str, float]:
    """Seconds per unit of step work (`cost_estimate.step_work`) of each method ("<method>") and pre-training stage
    ("<method>/<stage>"), averaged over the datasets, from the uncompiled `variant` measurements that succeeded."""
    per_key: dict[str, list[float]] = defaultdict(list)
    for r in steps:
        if r["variant"] != variant or r["compile"] or r["status"] != "ok":
            continue
        key = r["method"] if r["stage"] == "train" else f"{r['method']}/{r['stage']}"
        per_key[key].append(r["median_step_s"] / step_work(r["patch"], n_filters))
    return {k: sum(v) / len(v) for k, v in per_key.items()}


def predict_hours(config: dict[str, Any], seconds_per_case: dict[str, float], test_cases: dict[str, int]) -> float:
    """Hours of sliding-window prediction over every run of the grid (datasets without a measurement count 0)."""
    total = sum(seconds_per_case.get(c.dataset, 0.0) * test_cases.get(c.dataset, 0) for c in grid_cells(config))
    return total / 3600


def project(
    config: dict[str, Any],
    units: dict[str, float],
    speedups: dict[int, float],
    predict_h: float,
    gpus: tuple[int, ...] = (1, 2),
) -> dict[str, Any]:
    """Training hours of the grid run one at a time on one device (the cost estimate), plus prediction, and the
    wall time on each number of GPUs with each measured k (hours / (GPUs × speed-up of k))."""
    est = estimate(config, units, read_methods(PROJECT_ROOT))
    sequential = est["total_hours"] + predict_h
    rows = [
        {"gpus": g, "k": k, "speedup": s, "wall_hours": sequential / (g * s)}
        for g in gpus
        for k, s in sorted(speedups.items())
    ]
    return {
        "train_hours_per_method": est["hours_per_method"],
        "train_hours": est["total_hours"],
        "predict_hours": predict_h,
        "sequential_hours": sequential,
        "unmeasured": est["unmeasured"],
        "runs": len(grid_cells(config)),
        "rows": rows,
    }
