"""Estimated cost of a grid from measured runs: seconds per iteration, scaled to another protocol (the
measured cost of finished runs is `harness.report.cost_table`).

The smoke benchmark's Snakemake benchmark files give each method's training wall time; dividing by its iterations and
by the work of one step (patch voxels × n_filters², the V-Net's convolution cost) gives a per-method unit cost that is
scaled to each run of the target grid. Pre-training stages (`pretrain_<stage>.tsv`, e.g. sup_local_contrast's) get
their own unit cost per (method, stage), scaled by the stage's iterations, and count towards their method. The result
is an order-of-magnitude estimate on the machine that ran the measured runs (a CPU for the smoke run), printed as
such; it is not a measurement.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from harness.config import base_of
from harness.run.folder import BENCHMARKS, RUN_CONFIG, RUNS, StageFiles
from harness.run.method_table import MethodEntry
from harness.run.stages import job_name, own_stages
from harness.workflow.grid import grid_cells
from harness.workflow.variants import run_overrides


def step_work(patch_size: list[int] | tuple[int, ...], n_filters: int) -> float:
    """Relative work of one training step: patch voxels × n_filters² (the V-Net's convolutions dominate)."""
    return math.prod(patch_size) * n_filters**2


def unit_costs(results_dir: Path) -> dict[str, float]:
    """Per method (key "<method>") and pre-training stage (key "<method>/<stage>"): mean over the measured runs of
    wall seconds / (iterations × step work)."""
    per_key: dict[str, list[float]] = defaultdict(list)
    for bench in sorted(Path(results_dir).glob(f"{RUNS}/*/*/labeled~*/seed~*/{BENCHMARKS}/*.tsv")):
        stage = bench.stem.removeprefix("pretrain_") if bench.stem.startswith("pretrain_") else None
        if bench.stem != job_name(stage):
            continue
        run = bench.parent.parent
        info_path = StageFiles.of(run, stage).info
        if not info_path.is_file():
            continue  # a job still running, or killed
        iterations = json.loads(info_path.read_text()).get("iterations")
        if iterations is None:
            continue  # written before run_info.json recorded its stage's iterations
        cfg = yaml.safe_load((run / RUN_CONFIG).read_text())
        with bench.open() as f:
            seconds = float(next(csv.DictReader(f, delimiter="\t"))["s"])
        p = cfg["protocol"]
        key = cfg["method"] if stage is None else f"{cfg['method']}/{stage}"
        per_key[key].append(seconds / (iterations * step_work(cfg["data"]["patch_size"], p["n_filters"])))
    return {k: sum(v) / len(v) for k, v in per_key.items()}


def stage_iterations(config: dict[str, Any], method: str, stage: str, entry: MethodEntry) -> int:
    """Iterations of pre-training `stage` of grid entry `method`: its `method_overrides` (and variant) value, else the
    literal default the method table read from the method file (no import of the method)."""
    settings = entry.stage(stage).settings
    override = run_overrides(config, method).get(settings, {}).get("iterations")
    return int(override if override is not None else entry.defaults[settings]["iterations"])


def estimate(config: dict[str, Any], units: dict[str, float], methods: dict[str, MethodEntry]) -> dict[str, Any]:
    """Estimated training hours of every run of `config`, per method and in total; methods never measured are listed.

    `methods` is the method table (`harness.run.method_table.read_methods`), for each method's stages.
    """
    protocol = config.get("protocol", {})
    iterations, n_filters = protocol.get("iterations", 6000), protocol.get("n_filters", 16)
    hours: dict[str, float] = defaultdict(float)
    missing: set[str] = set()
    for run in grid_cells(config):
        base = base_of(run.method)  # a variant costs what its base method costs per step (measured by the smoke run)
        if base not in units:
            missing.add(base)
            continue
        work = step_work(config["data"][run.dataset]["patch_size"], n_filters)
        hours[run.method] += units[base] * iterations * work / 3600
        for stage in own_stages(run, methods[base], config["datasets"][run.dataset]["labeled"]):
            key = f"{base}/{stage}"
            if key not in units:
                missing.add(key)
                continue
            hours[run.method] += units[key] * stage_iterations(config, run.method, stage, methods[base]) * work / 3600
    return {"hours_per_method": dict(hours), "total_hours": sum(hours.values()), "unmeasured": sorted(missing)}


def estimate_text(est: dict[str, Any], source: Path) -> str:
    """A clearly labelled, human-readable summary."""
    lines = [f"ESTIMATE (not a measurement): training time scaled from the runs under {source}, on that machine:"]
    lines += [f"  {m}: {h:.1f} h" for m, h in sorted(est["hours_per_method"].items())]
    lines.append(f"  total: {est['total_hours']:.1f} h of sequential training on the machine of those runs")
    if est["unmeasured"]:
        lines.append(f"  not measured (run the smoke benchmark with them first): {', '.join(est['unmeasured'])}")
    return "\n".join(lines)


def print_estimate(config: dict[str, Any], methods: dict[str, MethodEntry], measured: Path) -> None:
    """Print `estimate` to stderr when `measured` (the smoke run's results) holds measured runs (a dry run)."""
    units = unit_costs(measured) if measured.exists() else {}
    if units:
        print(estimate_text(estimate(config, units, methods), measured), file=sys.stderr)
