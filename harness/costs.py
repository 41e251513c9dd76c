"""Estimated cost of a grid from measured runs (issue #6): seconds per iteration, scaled to another protocol.

The smoke benchmark's Snakemake benchmark files give each method's training wall time; dividing by its iterations and
by the work of one step (patch voxels × n_filters², the V-Net's convolution cost) gives a per-method unit cost that is
scaled to each run of the target grid. The result is an order-of-magnitude estimate on the machine that ran the
measured runs (a CPU for the smoke run), printed as such; it is not a measurement.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from harness.config import grid_cells


def step_work(patch_size: list[int] | tuple[int, ...], n_filters: int) -> float:
    """Relative work of one training step: patch voxels × n_filters² (the V-Net's convolutions dominate)."""
    return math.prod(patch_size) * n_filters**2


def unit_costs(results_dir: Path) -> dict[str, float]:
    """Per method: mean over its measured runs of train seconds / (iterations × step work)."""
    per_method: dict[str, list[float]] = defaultdict(list)
    for bench in sorted(Path(results_dir).glob("runs/*/*/labeled~*/seed~*/benchmarks/train.tsv")):
        run_dir = bench.parent.parent
        cfg = yaml.safe_load((run_dir / "run_config.yaml").read_text())
        with bench.open() as f:
            seconds = float(next(csv.DictReader(f, delimiter="\t"))["s"])
        p = cfg["protocol"]
        per_method[cfg["method"]].append(
            seconds / (p["iterations"] * step_work(cfg["data"]["patch_size"], p["n_filters"]))
        )
    return {m: sum(v) / len(v) for m, v in per_method.items()}


def estimate(config: dict[str, Any], units: dict[str, float]) -> dict[str, Any]:
    """Estimated training hours of every run of `config`, per method and in total; methods never measured are listed."""
    protocol = config.get("protocol", {})
    iterations, n_filters = protocol.get("iterations", 6000), protocol.get("n_filters", 16)
    hours: dict[str, float] = defaultdict(float)
    missing: set[str] = set()
    for cell in grid_cells(config):
        if cell.method not in units:
            missing.add(cell.method)
            continue
        work = step_work(config["data"][cell.dataset]["patch_size"], n_filters)
        hours[cell.method] += units[cell.method] * iterations * work / 3600
    return {"hours_per_method": dict(hours), "total_hours": sum(hours.values()), "unmeasured": sorted(missing)}


def describe(est: dict[str, Any], source: Path) -> str:
    """A clearly labelled, human-readable summary."""
    lines = [f"ESTIMATE (not a measurement): training time scaled from the runs under {source}, on that machine:"]
    lines += [f"  {m}: {h:.1f} h" for m, h in sorted(est["hours_per_method"].items())]
    lines.append(f"  total: {est['total_hours']:.1f} h of sequential training on the machine of those runs")
    if est["unmeasured"]:
        lines.append(f"  not measured (run the smoke benchmark with them first): {', '.join(est['unmeasured'])}")
    return "\n".join(lines)
