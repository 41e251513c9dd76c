"""Test-set prediction (sliding window, NIfTI label maps) and per-case metrics (protocol §4)."""

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

from harness.config import RunConfig
from harness.data.dataset import case_path, load_case
from harness.data.splits import read_list
from harness.inference import sliding_window
from harness.loop import load_trained
from harness.metrics import case_metrics

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "dataset", "method", "n_labeled", "n_train", "seed", "case", "dice", "jaccard", "hd95", "asd", "hd95_mm",
    "asd_mm", "empty_pred", "empty_pred_policy", "config_sha256", "method_version", "git_commit",
)  # fmt: skip


def test_ids(cfg: RunConfig) -> list[str]:
    return read_list(Path(cfg.data.root) / "test.list")


def save_nifti(label: np.ndarray, spacing: tuple[float, float, float], path: Path) -> None:
    """A label map (x, y, z) as NIfTI with the voxel size on the affine's diagonal."""
    img = nib.Nifti1Image(label.astype(np.uint8), np.diag([*spacing, 1.0]))
    img.header.set_zooms(spacing)
    nib.save(img, path)


def predict_cases(
    cfg: RunConfig,
    model_path: Path,
    out_dir: Path,
    *,
    stride: tuple[int, int, int],
    windows_per_batch: int,
    spacing_mm: tuple[float, float, float],
    device: torch.device,
) -> None:
    """Predict every test case with the run's evaluation network; writes `<out_dir>/<case>.nii.gz` atomically.

    Args:
        cfg: the run's configuration (its patch size is the window size).
        model_path: the run's model.pt.
        out_dir: the predictions folder (replaced as a whole at the end).
        stride: sliding-window stride (x, y, z) in voxels (LA 18/18/4, Pancreas 16; protocol §4.2).
        windows_per_batch: windows per forward pass (batched inference; the same maths in eval mode).
        spacing_mm: voxel size written into the NIfTI header.
        device: where the network runs.
    """
    method = load_trained(cfg, model_path, device)
    net = method.eval_network().eval()
    num_classes = 1 if method.output_kind == "sigmoid" else 2

    def predict(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(device)).float().cpu()

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for case in tqdm(test_ids(cfg), desc="predict", unit="case", mininterval=2.0):
        image, _ = load_case(case_path(cfg.data.root, case, cfg.data.format), with_label=False)
        label, _ = sliding_window(
            predict, image, cfg.data.patch_size, stride, num_classes, windows_per_batch=windows_per_batch
        )
        save_nifti(label, spacing_mm, tmp / f"{case}.nii.gz")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)


def evaluate_cases(
    cfg: RunConfig, pred_dir: Path, *, spacing_mm: tuple[float, float, float], empty_pred: str, run_info: dict[str, Any]
) -> list[dict]:
    """Per-case Dice, Jaccard, HD95, ASD in voxels and mm, with run identity and provenance columns.

    Args:
        cfg: the run's configuration.
        pred_dir: folder of `<case>.nii.gz` label maps written by `predict_cases`.
        spacing_mm: voxel size for the mm columns.
        empty_pred: empty-prediction policy (worst_case | nan | reference_zero; protocol §4.6).
        run_info: the run's run_info.json (provenance columns).
    """
    rows = []
    for case in test_ids(cfg):
        _, gt = load_case(case_path(cfg.data.root, case, cfg.data.format), with_label=True)
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
            "empty_pred_policy": empty_pred, "config_sha256": run_info["config_sha256"],
            "method_version": run_info["method_version"], "git_commit": run_info["git_commit"],
        })  # fmt: skip
    return rows


def write_results(rows: list[dict], csv_path: Path, json_path: Path, run_info: dict, eval_settings: dict) -> None:
    """metrics_per_case.csv and metrics.json (means + the run's provenance), each written atomically."""
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
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
