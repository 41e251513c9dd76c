"""Training steps of the real methods on synthetic tensors of the real sizes: median step time and peak GPU memory.

A step is built as the loop builds it (`harness.method.build`, `harness.train.optim`, `harness.train.loop.run_step`),
and its batch comes through the real data pipeline (`harness.train.loop.stage_dataset`, the stage's sample plan,
`collate`), cut from synthetic volumes of a typical case's size: the batch has the stage's composition (2 labeled +
2 unlabeled, a stage's volumes × views), the SDF maps of dtc/simcvd and cvrl's case IDs. No dataset is read.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.config import RunConfig
from harness.data.dataset import Batch, collate
from harness.gpucheck.settings import NO_CUDA, CheckSettings, DatasetGeometry, Variant
from harness.method import Method, Progress, StageSpec
from harness.method.build import build_method, resolve_run, stage_spec
from harness.method.registry import get_method, list_methods
from harness.numerics.precision import memory_format, set_tf32, tf32_state, to_memory_format
from harness.train.loop import make_plan, run_step, stage_dataset
from harness.train.optim import Optimisation, compile_networks, make_optimisation

#: Training cases of the synthetic stand-in (n_labeled of them labeled): enough distinct volumes for every batch.
N_TRAIN, N_LABELED = 8, 2


@dataclass(frozen=True)
class StepCase:
    """One training job's step: a method's main training (stage None) or one of its pre-training stages."""

    method: str
    stage: str | None
    dataset: DatasetGeometry

    @property
    def label(self) -> str:
        return self.method if self.stage is None else f"{self.method}/{self.stage}"


def step_cases(settings: CheckSettings) -> list[StepCase]:
    """Every method's main step and each pre-training stage (`Method.STAGES`), on every dataset of `settings`."""
    jobs = [(m, s) for m in list_methods() for s in (*get_method(m).stage_names(), None)]
    return [StepCase(m, s, ds) for ds in settings.datasets for m, s in jobs]


def run_config(case: StepCase, settings: CheckSettings, variant: Variant) -> RunConfig:
    """The run configuration of the step: the protocol's defaults (batch 2 + 2) at the check's sizes and precision."""
    protocol = {
        "n_filters": settings.n_filters,
        "amp": variant.amp,
        "tf32": variant.tf32,
        "channels_last": variant.channels_last,
    }
    data = {
        "root": "synthetic (gpu-check)",
        "n_train": N_TRAIN,
        "patch_size": list(case.dataset.patch),
        "augment": case.dataset.augment,
    }
    params = {
        "dataset": case.dataset.name,
        "method": case.method,
        "n_labeled": N_LABELED,
        "seed": 0,
        "data": data,
        "protocol": protocol,
        "method_overrides": settings.overrides.get(case.method, {}),
    }
    return resolve_run(params)


def synthetic_case(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A volume of `shape`: Gaussian noise (float32) and an ellipsoid label (uint8) around a random centre."""
    image = rng.standard_normal(shape, dtype=np.float32)
    centre = [rng.uniform(0.35, 0.65) * s for s in shape]
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    radius = [0.3 * s for s in shape]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius, strict=True)) <= 1.0
    return image, inside.astype(np.uint8)


def synthetic_stage_cases(spec: StageSpec, cases: list) -> tuple[list, list]:
    """(labeled, unlabeled) cases of a stage, as `harness.train.loop.stage_cases` splits a run's training cases:
    "images" every case image-only, "labeled" the first N_LABELED, else those and the rest image-only."""
    images = [image for image, _ in cases]
    if spec.data == "images":
        return [], images
    if spec.data == "labeled":
        return cases[:N_LABELED], []
    return cases[:N_LABELED], images[N_LABELED:]


def first_batch(cfg: RunConfig, method: Method, spec: StageSpec, geometry: DatasetGeometry) -> Batch:
    """The stage's first batch from N_TRAIN synthetic cases of the geometry's case size, through the loop's dataset,
    sample plan and collate."""
    rng = np.random.default_rng(0)
    labeled, unlabeled = synthetic_stage_cases(spec, [synthetic_case(geometry.volume, rng) for _ in range(N_TRAIN)])
    dataset = stage_dataset(cfg, method, labeled, unlabeled)
    keys = next(make_plan(spec, len(labeled), len(unlabeled), cfg.seed, 0))
    return collate([dataset[k] for k in keys])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepRunner:
    """One method stage built as the loop builds it, with its first batch on the device; `step()` times one step."""

    def __init__(self, case: StepCase, settings: CheckSettings, variant: Variant, device: torch.device) -> None:
        torch.manual_seed(0)
        self.cfg = run_config(case, settings, variant)
        self.device, self.spec = device, stage_spec(self.cfg, case.stage)
        self.method = build_method(self.cfg, device, case.stage)
        to_memory_format(self.method.modules().values(), variant.channels_last)
        batch = first_batch(self.cfg, self.method, self.spec, case.dataset)
        self.batch = batch.to(device, memory_format=memory_format(variant.channels_last))
        self.optim: Optimisation = make_optimisation(self.method, self.spec, variant.amp, device)
        self.it = 0

    @property
    def samples(self) -> int:
        return int(self.batch.x.shape[0])

    def compile(self) -> None:
        compile_networks(self.method)

    def step(self) -> float:
        """Seconds of one training step (forward, backward, optimiser, post-step hook), device-synchronised."""
        progress = Progress(self.it, self.spec.iterations, self.spec.lr_at(self.it))
        synchronize(self.device)
        t0 = time.perf_counter()
        with self.optim.precision.kernels():
            run_step(self.method, self.optim, self.batch, progress)
        synchronize(self.device)
        self.it += 1
        return time.perf_counter() - t0


def peak_memory_mb(device: torch.device) -> float | str:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else NO_CUDA


def measure_step(case: StepCase, settings: CheckSettings, variant: Variant, device: torch.device) -> dict[str, Any]:
    """Median seconds of `settings.iterations` steps after `settings.warmup`, and the peak GPU memory, of one case
    under one variant; the torch TF32 switches are restored afterwards. Errors (out of memory) are recorded."""
    record = case_record(case, variant)
    previous = tf32_state()
    try:
        set_tf32(variant.tf32)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        runner = StepRunner(case, settings, variant, device)
        times = [runner.step() for _ in range(settings.warmup + settings.iterations)][settings.warmup :]
        record.update(
            status="ok",
            samples=runner.samples,
            labeled=runner.batch.n_labeled,
            timed_steps=len(times),
            median_step_s=statistics.median(times),
            peak_memory_mb=peak_memory_mb(device),
        )
        del runner
    except Exception as err:  # out of memory, an unsupported kernel: recorded, the check goes on
        record.update(status=f"error: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}")
    finally:
        torch.backends.cudnn.allow_tf32 = previous["cudnn_allow_tf32"]
        torch.backends.cuda.matmul.allow_tf32 = previous["cuda_matmul_allow_tf32"]
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return record


def case_record(case: StepCase, variant: Variant, *, compiled: bool = False) -> dict[str, Any]:
    """What a step measurement is of: method, stage, dataset, patch, precision variant, compile."""
    return {
        "method": case.method,
        "stage": case.stage or "train",
        "dataset": case.dataset.name,
        "patch": list(case.dataset.patch),
        "variant": variant.name,
        "amp": variant.amp,
        "tf32": variant.tf32,
        "channels_last": variant.channels_last,
        "compile": compiled,
    }


def skipped(case: StepCase, variant: Variant, reason: str, *, compiled: bool = False) -> dict[str, Any]:
    """The record of a measurement that did not run (time budget, --quick)."""
    return {**case_record(case, variant, compiled=compiled), "status": f"skipped: {reason}"}
