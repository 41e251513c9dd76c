"""Estimated cost of a grid from measured runs: seconds per iteration, scaled to another protocol (the
measured cost of finished runs is `harness.report.cost_table`).

The smoke benchmark's Snakemake benchmark files give each method's training wall time; dividing by its iterations and
by the work of one step (patch voxels × n_filters² × batch size / 4, the V-Net's convolution cost) gives a per-method
unit cost that is scaled to each run of the target grid with that run's own protocol (`method_overrides.<m>.protocol`
included: its iterations and batch size). Pre-training stages (`pretrain_<stage>.tsv`, e.g. sup_local_contrast's) get
their own unit cost per (method, stage), scaled by the stage's iterations, and count towards their method. The result
is an order-of-magnitude estimate on the machine that ran the measured runs (a CPU for the smoke run), printed as
such; it is not a measurement.

Evaluations during training (`harness.train.monitor`: the validation cases every `protocol.val_every` steps with
selection `val`, the test cases of the selection audit every `report.selection_audit.every` steps) are counted as
`Monitor.due` schedules them (`evaluation_passes`), each pass a sliding window over whole cases (`case_windows`, the
count of `harness.evaluate.inference.count_windows`) on case shapes of the prepared manifest or, for LA, the
repository's `la_manifest.csv` (`case_shapes`). A per-window unit cost comes from the measured `predict` jobs
(`window_unit_costs`: seconds / (windows × patch voxels × n_filters²)), with the seconds the job spent in the sliding
window (`sliding_window_s` of its predictions.json); records written before that field existed fall back to the
job's wall seconds, which include its start-up and overstate a window's cost on small cases.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.config import base_of
from harness.run.folder import BENCHMARKS, PREDICTIONS, RUN_CONFIG, RUNS, StageFiles
from harness.run.method_table import MethodEntry
from harness.run.stages import job_name, own_stages
from harness.workflow.grid import cell_params, data_block, grid_cells

#: The batch size the unit costs are normalised to (the UA-MT family's 2 labeled + 2 unlabeled).
REFERENCE_BATCH = 4
#: The share of a run's time the evaluations during training may take (docs/performance.md).
EVAL_SHARE_GOAL = 0.15
#: The prepared dataset's manifest (`harness.data.prepared.MANIFEST`; not imported: it imports h5py).
MANIFEST = "manifest.json"
#: The predictions folder's record (`harness.evaluate.predictions.RECORD`; not imported: it imports nibabel).
PREDICTIONS_RECORD = "predictions.json"
#: LA's case shapes, shipped with the repository (harness/data/manifests/README.md).
LA_MANIFEST_CSV = Path(__file__).resolve().parents[1] / "data" / "manifests" / "la_manifest.csv"
#: The sources whose cases are the LA cases of `la_manifest.csv` (raw_nrrd: the same cases cropped by the same
#: procedure with other margins, so about these shapes).
LA_SOURCES = ("released_h5", "raw_nrrd")
SPLITS = ("train", "test")

Shape = tuple[int, int, int]


def step_work(patch_size: Sequence[int], n_filters: int, batch_size: int = REFERENCE_BATCH) -> float:
    """Relative work of one training step: patch voxels × n_filters² (the V-Net's convolutions dominate) × batch size
    / 4 (the default batch is the reference)."""
    return math.prod(patch_size) * n_filters**2 * batch_size / REFERENCE_BATCH


def window_work(patch_size: Sequence[int], n_filters: int) -> float:
    """Relative work of one sliding window's forward pass: patch voxels × n_filters²."""
    return math.prod(patch_size) * n_filters**2


def axis_windows(size: int, patch: int, stride: int) -> int:
    """Windows along one axis, as `harness.evaluate.inference.window_starts`: a size below the patch is padded to one
    window, else ceil((size − patch) / stride) + 1."""
    return -(-(max(size, patch) - patch) // stride) + 1


def case_windows(shape: Sequence[int], patch_size: Sequence[int], stride: Sequence[int]) -> int:
    """Windows of the sliding window over a case of `shape` (`harness.evaluate.inference.count_windows`)."""
    return math.prod(axis_windows(n, p, s) for n, p, s in zip(shape, patch_size, stride, strict=True))


def evaluation_passes(iterations: int, val_every: int, audit_every: int) -> tuple[int, int]:
    """(validation passes, test passes) of a main training of `iterations` optimiser steps, as `Monitor.due` schedules
    them: the validation cases every `val_every` steps and after the last (0: no selection on validation); the test
    cases (`audit_every` > 0 only) every `audit_every` steps, at every validation pass, and after the last."""
    n = iterations
    val = n // val_every + int(n % val_every != 0) if val_every else 0
    if not audit_every:
        return val, 0
    test = n // audit_every
    if val_every:
        lcm = val_every * audit_every // math.gcd(val_every, audit_every)
        test += n // val_every - n // lcm
    on_schedule = n % audit_every == 0 or (val_every > 0 and n % val_every == 0)
    return val, test + int(not on_schedule)


def case_shapes(dataset: str, source: str, resources: Path = Path("resources")) -> dict[str, tuple[str, Shape]] | None:
    """Case ID → (split, shape) of a dataset: from its prepared `<resources>/<dataset>/manifest.json` when that records
    every case's shape, else for the LA sources from the repository's `la_manifest.csv`; None when unknown (a dataset
    not prepared yet)."""
    path = Path(resources) / dataset / MANIFEST
    if path.is_file():
        cases = json.loads(path.read_text()).get("cases", {})
        if cases and all("shape" in c for c in cases.values()):
            return {cid: (c["split"], _shape(c["shape"])) for cid, c in cases.items()}
    if source in LA_SOURCES:
        with LA_MANIFEST_CSV.open() as f:
            rows = list(csv.DictReader(f))
        return {r["id"]: (r["split"], _shape((r["shape_x"], r["shape_y"], r["shape_z"]))) for r in rows}
    return None


def _shape(values: Sequence[Any]) -> Shape:
    x, y, z = (int(v) for v in values)
    return x, y, z


def _read_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _benchmark_seconds(bench: Path) -> float:
    with bench.open() as f:
        return float(next(csv.DictReader(f, delimiter="\t"))["s"])


def unit_costs(results_dir: Path) -> dict[str, float]:
    """Per method (key "<method>") and pre-training stage (key "<method>/<stage>"): mean over the measured runs of
    wall seconds / (iterations × step work); the main stage's step work with the run's batch size, a stage's at the
    reference batch (its batch is its own setting)."""
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
        cfg = _read_yaml(run / RUN_CONFIG)
        p = cfg["protocol"]
        batch = p.get("batch_size", REFERENCE_BATCH) if stage is None else REFERENCE_BATCH
        key = cfg["method"] if stage is None else f"{cfg['method']}/{stage}"
        work = step_work(cfg["data"]["patch_size"], p["n_filters"], batch)
        per_key[key].append(_benchmark_seconds(bench) / (iterations * work))
    return {k: sum(v) / len(v) for k, v in per_key.items()}


def window_unit_costs(results_dir: Path, resources: Path = Path("resources")) -> dict[str, float]:
    """Per base method: mean over its measured `predict` jobs of sliding-window seconds (`sliding_window_s` of the
    job's `predictions.json`, else the job's wall seconds) / (Σ windows over the predicted cases × `window_work`),
    with the window, stride and cases of that record and the case shapes of
    `case_shapes` (`resources`: where the measured runs' datasets were prepared). Runs whose shapes or record are
    unknown are skipped."""
    per_method: dict[str, list[float]] = defaultdict(list)
    for bench in sorted(Path(results_dir).glob(f"{RUNS}/*/*/labeled~*/seed~*/{BENCHMARKS}/predict.tsv")):
        run = bench.parent.parent
        record_path = run / PREDICTIONS / PREDICTIONS_RECORD
        if not record_path.is_file() or not (run / RUN_CONFIG).is_file():
            continue  # predictions deleted or never finished
        cfg, record = _read_yaml(run / RUN_CONFIG), json.loads(record_path.read_text())
        dataset = run.parents[2].name  # runs/<dataset>/<method>/labeled~n/seed~s
        shapes = case_shapes(dataset, cfg["data"].get("source", ""), resources)
        if shapes is None or any(c not in shapes for c in record["cases"]):
            continue
        window = record["settings"].get("window", cfg["data"]["patch_size"])
        windows = sum(case_windows(shapes[c][1], window, record["settings"]["stride"]) for c in record["cases"])
        if windows:
            work = windows * window_work(window, cfg["protocol"]["n_filters"])
            seconds = record.get("sliding_window_s", _benchmark_seconds(bench))
            per_method[base_of(cfg["method"])].append(seconds / work)
    return {k: sum(v) / len(v) for k, v in per_method.items()}


def stage_iterations(overrides: dict[str, Any], stage: str, entry: MethodEntry) -> int:
    """Iterations of pre-training `stage` of a run whose method overrides (`cell_params(...)["method_overrides"]`:
    `method_overrides.<base>` with the variant's on top) are `overrides`: their value, else the literal default the
    method table read from the method file (no import of the method)."""
    settings = entry.stage(stage).settings
    override = overrides.get(settings, {}).get("iterations")
    return int(override if override is not None else entry.defaults[settings]["iterations"])


def val_cases(config: dict[str, Any], dataset: str) -> int:
    """Validation cases of a dataset's runs (`data.<ds>.val`: its list's IDs or its count; 0 without a split)."""
    val = data_block(config, dataset).get("val")
    return (len(val["ids"]) or val["count"]) if val else 0


def run_evaluations(params: dict[str, Any]) -> tuple[int, int]:
    """(validation passes, test passes) of one run from its `cell_params` (its own iterations, the dataset's
    selection settings)."""
    sel = params["selection"]
    val_every = sel["val_every"] if sel["mode"] == "val" else 0
    return evaluation_passes(params["protocol"].get("iterations", 6000), val_every, sel["audit_every"])


def dataset_windows(config: dict[str, Any], dataset: str, resources: Path) -> tuple[float, int] | None:
    """(mean windows of a training case, Σ windows over the test cases) of a dataset with its patch size and stride
    (validation cases are drawn from the training list: a validation pass costs the mean × their count); None when
    the case shapes are unknown."""
    block = config["data"][dataset]
    shapes = case_shapes(dataset, block.get("source", ""), resources) or {}
    patch, stride = block["patch_size"], block["stride"]
    windows = {split: [case_windows(s, patch, stride) for sp, s in shapes.values() if sp == split] for split in SPLITS}
    if not windows["train"] or not windows["test"]:
        return None
    return sum(windows["train"]) / len(windows["train"]), sum(windows["test"])


def estimate(
    config: dict[str, Any],
    units: dict[str, float],
    methods: dict[str, MethodEntry],
    window_units: dict[str, float] | None = None,
    resources: Path = Path("resources"),
) -> dict[str, Any]:
    """Estimated training hours of every run of `config`, per method and in total; methods never measured are listed.

    `methods` is the method table (`harness.run.method_table.read_methods`), for each method's stages. Each run is
    scaled with its own protocol (`cell_params`: iterations, n_filters, batch size). Runs that evaluate while they
    train add `eval_hours_per_method` (`window_units`, from `window_unit_costs`: per method, else their mean) and its
    share of the method's training hours; `eval_notes` says what could not be counted. These are not in
    `total_hours` (the training steps only).
    """
    hours: dict[str, float] = defaultdict(float)
    eval_hours: dict[str, float] = defaultdict(float)
    missing: set[str] = set()
    unknown: set[str] = set()
    unmeasured_eval = False
    window_units = window_units or {}
    mean_unit = sum(window_units.values()) / len(window_units) if window_units else None
    windows: dict[str, tuple[float, int] | None] = {}
    for run in grid_cells(config):
        params = cell_params(config, run)
        p, patch = params["protocol"], params["data"]["patch_size"]
        iterations, n_filters = p.get("iterations", 6000), p.get("n_filters", 16)
        base = base_of(run.method)  # a variant costs what its base method costs per step (measured by the smoke run)
        if base not in units:
            missing.add(base)
        else:
            work = step_work(patch, n_filters, p.get("batch_size", REFERENCE_BATCH))
            hours[run.method] += units[base] * iterations * work / 3600
            stage_work = step_work(patch, n_filters)
            for stage in own_stages(run, methods[base], config["datasets"][run.dataset]["labeled"]):
                key = f"{base}/{stage}"
                if key not in units:
                    missing.add(key)
                    continue
                stage_its = stage_iterations(params["method_overrides"], stage, methods[base])
                hours[run.method] += units[key] * stage_its * stage_work / 3600
        val_passes, test_passes = run_evaluations(params)
        if not val_passes and not test_passes:
            continue
        if run.dataset not in windows:
            windows[run.dataset] = dataset_windows(config, run.dataset, resources)
        unit = window_units.get(base, mean_unit)
        if windows[run.dataset] is None:
            unknown.add(run.dataset)
        elif unit is None:
            unmeasured_eval = True
        else:
            mean_train, test = windows[run.dataset]
            evaluated = val_passes * val_cases(config, run.dataset) * mean_train + test_passes * test
            eval_hours[run.method] += unit * evaluated * window_work(patch, n_filters) / 3600
    notes = [f"evaluation cost unknown for {ds}: prepare the data first" for ds in sorted(unknown)]
    if unmeasured_eval:
        notes.append("evaluation cost not measured: no predict job with known case shapes among the measured runs")
    shares = {m: h / hours[m] for m, h in eval_hours.items() if hours.get(m)}
    return {
        "hours_per_method": dict(hours),
        "total_hours": sum(hours.values()),
        "unmeasured": sorted(missing),
        "eval_hours_per_method": dict(eval_hours),
        "eval_share_per_method": shares,
        "eval_notes": notes,
    }


def estimate_text(est: dict[str, Any], source: Path) -> str:
    """A clearly labelled, human-readable summary (evaluation lines only for a grid whose runs evaluate)."""
    evals, shares = est.get("eval_hours_per_method", {}), est.get("eval_share_per_method", {})
    lines = [f"ESTIMATE (not a measurement): training time scaled from the runs under {source}, on that machine:"]
    for m in sorted(set(est["hours_per_method"]) | set(evals)):
        train = est["hours_per_method"].get(m)
        lines.append(f"  {m}: {train:.1f} h" if train is not None else f"  {m}: training not measured")
        if m in evals:
            share = f"{100 * shares[m]:.0f} % of training; " if m in shares else ""
            goal = f"goal <= {100 * EVAL_SHARE_GOAL:.0f} %"
            lines.append(f"    selection and audit evaluations: {evals[m]:.1f} h ({share}{goal})")
    lines.append(f"  total: {est['total_hours']:.1f} h of sequential training on the machine of those runs")
    if evals:
        lines.append(
            f"  plus {sum(evals.values()):.1f} h of selection and audit evaluations during training (a window costed "
            "by the sliding-window seconds of the measured predict jobs)"
        )
    lines += [f"  {note}" for note in est.get("eval_notes", [])]
    if est["unmeasured"]:
        lines.append(f"  not measured (run the smoke benchmark with them first): {', '.join(est['unmeasured'])}")
    return "\n".join(lines)


def print_estimate(
    config: dict[str, Any], methods: dict[str, MethodEntry], measured: Path, resources: Path = Path("resources")
) -> None:
    """Print `estimate` to stderr when `measured` (the smoke run's results) holds measured runs (a dry run);
    `resources` holds the prepared datasets (case shapes of the evaluations during training)."""
    units = unit_costs(measured) if measured.exists() else {}
    if units:
        est = estimate(config, units, methods, window_unit_costs(measured, resources), resources)
        print(estimate_text(est, measured), file=sys.stderr)
