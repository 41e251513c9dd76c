"""The data loader's rate beside the rate a training step consumes, and sliding-window seconds per test case.

The loader is the real one (`harness.train.loop.stage_dataset`, the stage's plan, `make_loader` with the workers a
training job gets, `compute.loader_workers`), on synthetic volumes of a typical case's size; dtc and simcvd include
their SDF label transform. The sliding window is `harness.evaluate.inference.sliding_window` over a synthetic volume
of a typical test case's size, with the network a prediction job builds.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from harness.data.dataset import make_loader
from harness.evaluate.inference import count_windows, sliding_window
from harness.gpucheck.settings import FP32, CheckSettings, DatasetGeometry
from harness.gpucheck.steps import N_TRAIN, StepCase, run_config, synchronize, synthetic_case, synthetic_stage_cases
from harness.method.build import build_method, stage_spec
from harness.numerics.precision import memory_format, set_tf32
from harness.train.loop import make_plan, stage_dataset


def loader_rate(case: StepCase, settings: CheckSettings, workers: int, device: torch.device) -> dict[str, Any]:
    """Samples per second the loader delivers for the case's main stage (after its first batch, which includes the
    workers' start), with `workers` worker processes."""
    cfg = run_config(case, settings, FP32)
    method = build_method(cfg, torch.device("cpu"), case.stage)  # only its label transforms and case-ID flag
    spec = stage_spec(cfg, case.stage)
    rng = np.random.default_rng(1)
    labeled, unlabeled = synthetic_stage_cases(spec, [synthetic_case(case.dataset.volume, rng) for _ in range(N_TRAIN)])
    dataset = stage_dataset(cfg, method, labeled, unlabeled)
    per_batch = spec.batch_volumes * spec.views + spec.unlabeled_volumes
    batches = 1 + -(-settings.loader_samples // per_batch)
    plan = make_plan(spec, len(labeled), len(unlabeled), cfg.seed, 0)
    loader = make_loader(dataset, plan, num_workers=workers, seed=cfg.seed, cuda=device.type == "cuda")
    samples, t0 = 0, 0.0
    for i, batch in enumerate(loader):
        if i == 0:
            t0 = time.perf_counter()
        else:
            samples += int(batch.x.shape[0])
        if i + 1 == batches:
            break
    seconds = time.perf_counter() - t0
    return {
        "method": case.method,
        "dataset": case.dataset.name,
        "workers": workers,
        "samples": samples,
        "sdf": "sdf" in (method.label_transforms() or {}),
        "samples_per_s": samples / seconds,
    }


def bottleneck(loader_per_s: float, step_per_s: float | None) -> str:
    """ "loader" when the loader delivers fewer samples per second than the step consumes, else "step"."""
    if step_per_s is None:
        return "unknown (step not measured)"
    return "loader" if loader_per_s < step_per_s else "step"


def sliding_window_time(
    geometry: DatasetGeometry, settings: CheckSettings, windows_per_batch: int, device: torch.device
) -> dict[str, Any]:
    """Seconds of the sliding window over one synthetic test case of the geometry's size (supervised's network,
    fp32, TF32 off, after one warm-up forward pass)."""
    case = StepCase("supervised", None, geometry)
    cfg = run_config(case, settings, FP32)
    set_tf32(cfg.protocol.tf32)
    torch.manual_seed(0)
    net = build_method(cfg, device).eval_network().eval()
    layout = memory_format(cfg.protocol.channels_last)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(device, memory_format=layout)).float().cpu()

    image, _ = synthetic_case(geometry.volume, np.random.default_rng(2))
    with torch.inference_mode():
        predict(torch.zeros((windows_per_batch, 1, *geometry.patch)))
    synchronize(device)
    t0 = time.perf_counter()
    sliding_window(predict, image, geometry.patch, geometry.stride, 2, windows_per_batch=windows_per_batch)
    synchronize(device)
    return {
        "dataset": geometry.name,
        "volume": list(geometry.volume),
        "patch": list(geometry.patch),
        "stride": list(geometry.stride),
        "windows": count_windows(geometry.volume, geometry.patch, geometry.stride),
        "windows_per_batch": windows_per_batch,
        "seconds_per_case": time.perf_counter() - t0,
    }
