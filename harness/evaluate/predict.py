"""Test-set prediction of a trained run: the sliding window over every test case, NIfTI label maps and the
`predictions.json` record of the model, data and settings they come from (protocol §4.2)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from harness.config import RunConfig
from harness.data.prepared import PreparedData
from harness.evaluate.inference import sliding_window
from harness.evaluate.predictions import make_record, save_nifti, voxel_size, write_record
from harness.io import atomic_path
from harness.method.build import load_trained
from harness.numerics.precision import memory_format, set_tf32, to_memory_format
from harness.provenance import file_sha256


def predict_cases(
    cfg: RunConfig,
    model_path: Path,
    out_dir: Path,
    *,
    stride: tuple[int, int, int],
    windows_per_batch: int,
    spacing_mm: tuple[float, float, float] | None,
    device: torch.device,
    code: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict every test case with the run's evaluation network; writes `<out_dir>/<case>.nii.gz` and
    `<out_dir>/predictions.json`, atomically (the folder is replaced as a whole at the end).

    Args:
        cfg: the run's configuration (its patch size is the window size).
        model_path: the run's model.pt (refused if trained with another configuration or on other data).
        out_dir: the predictions folder.
        stride: sliding-window stride (x, y, z) in voxels (LA 18/18/4, Pancreas 16; protocol §4.2).
        windows_per_batch: windows per forward pass (batched inference; the same maths in eval mode).
        spacing_mm: voxel size written into the NIfTI header (None: the prepared data's, `voxel_size`).
        device: where the network runs (with `cfg.threads` torch intra-op threads, part of the run's identity).
        code: the job's code identity (`harness.run.code`), recorded in predictions.json.

    Returns:
        The record written to predictions.json.
    """
    torch.set_num_threads(cfg.threads)
    data = PreparedData.open(cfg.data.root, cfg.data.format)
    spacing_mm = voxel_size(spacing_mm, data)
    method = load_trained(cfg, model_path, device, data.manifest_sha256)
    set_tf32(cfg.protocol.tf32)  # as in training (protocol.tf32; default off: true fp32)
    to_memory_format(method.modules().values(), cfg.protocol.channels_last)
    net, layout = method.eval_network().eval(), memory_format(cfg.protocol.channels_last)
    num_classes = 1 if method.output_kind == "sigmoid" else 2

    def predict(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(device, memory_format=layout)).float().cpu()

    return write_predictions(
        predict,
        data,
        out_dir,
        window=cfg.data.patch_size,
        stride=stride,
        windows_per_batch=windows_per_batch,
        spacing_mm=spacing_mm,
        num_classes=num_classes,
        model_sha256=file_sha256(model_path),
        config_sha256=cfg.sha256(),
        extra={"threads": cfg.threads, "code": code},
    )


def write_predictions(
    predict: Callable[[torch.Tensor], torch.Tensor],
    data: PreparedData,
    out_dir: Path,
    *,
    window: tuple[int, int, int],
    stride: tuple[int, int, int],
    windows_per_batch: int,
    spacing_mm: tuple[float, float, float],
    num_classes: int,
    model_sha256: str,
    config_sha256: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The sliding window of `predict` (a batch of windows → logits on the CPU, network in eval mode) over every test
    case of `data`: `<out_dir>/<case>.nii.gz` and `<out_dir>/predictions.json` recording the two hashes, written in a
    temporary folder that replaces `out_dir` at the end (also used by `harness.external`); `extra` is
    recorded beside them (the job's threads and code), and so are the wall seconds spent in the sliding window
    (`sliding_window_s`: bookkeeping for the cost estimate, never compared or hashed)."""
    settings = {
        "window": list(window),
        "stride": list(stride),
        "windows_per_batch": windows_per_batch,
        "spacing_mm": list(spacing_mm),
        "aggregation": "mean of window probabilities",
    }
    record = make_record(model_sha256=model_sha256, config_sha256=config_sha256, data=data, settings=settings)
    window_seconds = 0.0
    with atomic_path(out_dir, directory=True) as tmp:
        for case in tqdm(data.test_ids, desc="predict", unit="case", mininterval=2.0):
            image, _ = data.load(case, with_label=False)
            start = time.perf_counter()
            label, _ = sliding_window(predict, image, window, stride, num_classes, windows_per_batch=windows_per_batch)
            window_seconds += time.perf_counter() - start
            save_nifti(label, spacing_mm, tmp / f"{case}.nii.gz")
        record = {**record, **(extra or {}), "sliding_window_s": round(window_seconds, 3)}
        write_record(tmp, record)
    return record
