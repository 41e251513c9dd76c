"""Projected wall time of a grid from the check's measurements, through the grid's cost estimate
(`harness.workflow.cost_estimate`): measured step seconds become per-method unit costs, which the estimate scales to
every run and pre-training stage of the grid; prediction adds the sliding-window seconds of every test case; the
evaluations during training (validation cases with `protocol.selection: val`, test cases of the selection audit;
`harness.train.monitor`) add the same seconds per case for every case of every pass, counted per run as the monitor
schedules them (`cost_estimate.evaluation_passes`); k runs per GPU divide by the measured k-process speed-up, G GPUs
by G.

Not included, and said so in the report: loader stalls (see the loader table), checkpoints, evaluation metrics (the
Dice of the evaluations during training included) and job start-up, the validation cases' own sizes (each counts as
the measured typical case), and the idle tail when the last jobs do not fill every slot.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.gpucheck.settings import Variant
from harness.run.method_table import read_methods
from harness.workflow.cost_estimate import estimate, run_evaluations, step_work, val_cases
from harness.workflow.grid import cell_params, grid_cells
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


def selection_hours(config: dict[str, Any], seconds_per_case: dict[str, float], test_cases: dict[str, int]) -> float:
    """Hours of the evaluations during training over every run of the grid: (validation passes × validation cases +
    test passes × test cases) × the dataset's sliding-window seconds per case, the passes of each run's own
    iterations (datasets without a measurement count 0)."""
    val = {ds: val_cases(config, ds) for ds in config["datasets"]}
    total = 0.0
    for cell in grid_cells(config):
        val_passes, test_passes = run_evaluations(cell_params(config, cell))
        cases = val_passes * val[cell.dataset] + test_passes * test_cases.get(cell.dataset, 0)
        total += cases * seconds_per_case.get(cell.dataset, 0.0)
    return total / 3600


def project(
    config: dict[str, Any],
    units: dict[str, float],
    speedups: dict[int, float],
    predict_h: float,
    gpus: tuple[int, ...] = (1, 2),
    selection_h: float = 0.0,
) -> dict[str, Any]:
    """Training hours of the grid run one at a time on one device (the cost estimate), plus prediction and the
    evaluations during training (`selection_hours`), and the wall time on each number of GPUs with each measured k
    (hours / (GPUs × speed-up of k))."""
    est = estimate(config, units, read_methods(PROJECT_ROOT))
    sequential = est["total_hours"] + predict_h + selection_h
    rows = [
        {"gpus": g, "k": k, "speedup": s, "wall_hours": sequential / (g * s)}
        for g in gpus
        for k, s in sorted(speedups.items())
    ]
    return {
        "train_hours_per_method": est["hours_per_method"],
        "train_hours": est["total_hours"],
        "predict_hours": predict_h,
        "selection_hours": selection_h,
        "sequential_hours": sequential,
        "unmeasured": est["unmeasured"],
        "runs": len(grid_cells(config)),
        "rows": rows,
    }
