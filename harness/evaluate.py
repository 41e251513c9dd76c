"""Test-set prediction (sliding window, NIfTI label maps) and per-case metrics (protocol §4).

The predictions folder carries `predictions.json`: the sha256 of the model file and of the data manifest they come
from and the evaluation settings (window, stride, windows per pass, voxel size). Evaluation refuses predictions whose
record does not match the run's `run_info.json`, its data or its settings, and writes the settings and hashes into
every row of `metrics_per_case.csv` and into `metrics.json`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from harness.aggregate import PER_CASE_COLUMNS
from harness.config import RunConfig
from harness.data.prepared import PreparedData
from harness.inference import sliding_window
from harness.loop import load_trained
from harness.metrics import case_metrics
from harness.predictions import check_record, make_record, provenance_columns, read_record, save_nifti, write_record
from harness.provenance import file_sha256

logger = logging.getLogger(__name__)


def predict_cases(
    cfg: RunConfig,
    model_path: Path,
    out_dir: Path,
    *,
    stride: tuple[int, int, int],
    windows_per_batch: int,
    spacing_mm: tuple[float, float, float],
    device: torch.device,
) -> dict[str, Any]:
    """Predict every test case with the run's evaluation network; writes `<out_dir>/<case>.nii.gz` and
    `<out_dir>/predictions.json`, atomically (the folder is replaced as a whole at the end).

    Args:
        cfg: the run's configuration (its patch size is the window size).
        model_path: the run's model.pt (refused if trained with another configuration or on other data).
        out_dir: the predictions folder.
        stride: sliding-window stride (x, y, z) in voxels (LA 18/18/4, Pancreas 16; protocol §4.2).
        windows_per_batch: windows per forward pass (batched inference; the same maths in eval mode).
        spacing_mm: voxel size written into the NIfTI header.
        device: where the network runs.

    Returns:
        The record written to predictions.json.
    """
    data = PreparedData.open(cfg.data.root, cfg.data.format)
    method = load_trained(cfg, model_path, device, data.manifest_sha256)
    net = method.eval_network().eval()
    num_classes = 1 if method.output_kind == "sigmoid" else 2

    def predict(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(device)).float().cpu()

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for case in tqdm(data.test_ids, desc="predict", unit="case", mininterval=2.0):
        image, _ = data.load(case, with_label=False)
        label, _ = sliding_window(
            predict, image, cfg.data.patch_size, stride, num_classes, windows_per_batch=windows_per_batch
        )
        save_nifti(label, spacing_mm, tmp / f"{case}.nii.gz")
    settings = {
        "window": list(cfg.data.patch_size),
        "stride": list(stride),
        "windows_per_batch": windows_per_batch,
        "spacing_mm": list(spacing_mm),
        "aggregation": "mean of window probabilities",
    }
    record = make_record(model_sha256=file_sha256(model_path), config_sha256=cfg.sha256(), data=data, settings=settings)
    write_record(tmp, record)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    return record


def evaluate_cases(
    cfg: RunConfig, pred_dir: Path, *, spacing_mm: tuple[float, float, float], empty_pred: str, run_info: dict[str, Any]
) -> list[dict]:
    """Per-case Dice, Jaccard, HD95, ASD in voxels and mm, with run identity, settings and provenance columns.

    Args:
        cfg: the run's configuration.
        pred_dir: folder of `<case>.nii.gz` label maps and `predictions.json` written by `predict_cases`.
        spacing_mm: voxel size for the mm columns.
        empty_pred: empty-prediction policy (worst_case | nan | reference_zero; protocol §4.6).
        run_info: the run's run_info.json (provenance columns; its model_sha256 must be the predictions').
    """
    data = PreparedData.open(cfg.data.root, cfg.data.format)
    record = read_record(pred_dir)
    check_record(record, pred_dir, run_info, data, spacing_mm)
    provenance = provenance_columns(record, run_info)
    rows = []
    for case in data.test_ids:
        _, gt = data.load(case, with_label=True)
        pred_path = pred_dir / f"{case}.nii.gz"
        if not pred_path.exists():
            raise FileNotFoundError(f"{pred_path}: no prediction for test case {case}; rerun the predict rule")
        pred = np.asarray(nib.load(pred_path).dataobj)
        if pred.shape != gt.shape:
            raise ValueError(f"{pred_path}: prediction shape {pred.shape} differs from the label's {gt.shape}")
        vox = case_metrics(pred, gt, spacing=None, empty_pred=empty_pred)
        mm = case_metrics(pred, gt, spacing=spacing_mm, empty_pred=empty_pred)
        rows.append({
            "dataset": cfg.dataset, "method": cfg.method, "n_labeled": cfg.n_labeled, "n_train": cfg.data.n_train,
            "seed": cfg.seed, "case": case, "dice": vox["dice"], "jaccard": vox["jaccard"], "hd95": vox["hd95"],
            "asd": vox["asd"], "hd95_mm": mm["hd95"], "asd_mm": mm["asd"], "empty_pred": int(vox["empty_pred"]),
            "empty_pred_policy": empty_pred, **provenance,
        })  # fmt: skip
    return rows


def write_results(rows: list[dict], csv_path: Path, json_path: Path, run_info: dict, eval_settings: dict) -> None:
    """metrics_per_case.csv and metrics.json (means + the run's provenance), each written atomically."""
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PER_CASE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(csv_path)
    means = {k: _nanmean([r[k] for r in rows]) for k in ("dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm")}
    record = {
        "metrics": means,
        "n_cases": len(rows),
        "n_empty_pred": sum(r["empty_pred"] for r in rows),
        "eval": {**eval_settings, "postprocess_lcc": False, "hd95": "pooled (medpy)",
                 "asd": "directed pred->gt (medpy)", "surface_connectivity": 1, "decision": "argmax / p > 0.5"},
        "run_info": run_info,
    }  # fmt: skip
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(json_path)


def _nanmean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None
