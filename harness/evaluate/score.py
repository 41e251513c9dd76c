"""Per-case metrics of a run's saved predictions (protocol §4): `metrics_per_case.csv` and `metrics.json`.

Evaluation refuses predictions whose record (`harness.evaluate.predictions`) does not match the run's
`run_info.json`, its data or its voxel size, and writes the settings and hashes into every row and into
`metrics.json`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from harness.config import RunConfig
from harness.data.download import DataError
from harness.data.prepared import PreparedData
from harness.evaluate.metrics import case_metrics
from harness.evaluate.predictions import check_record, provenance_columns, read_record, voxel_size
from harness.io import atomic_path, write_json_atomic

logger = logging.getLogger(__name__)

#: The columns of `metrics_per_case.csv`, one row per test case (read by `harness.report.aggregate`).
PER_CASE_COLUMNS = (
    "dataset",
    "method",
    "n_labeled",
    "n_train",
    "seed",
    "case",
    "dice",
    "jaccard",
    "hd95",
    "asd",
    "hd95_mm",
    "asd_mm",
    "empty_pred",
    "empty_pred_policy",
    "stride",
    "windows_per_batch",
    "config_sha256",
    "code_sha256",
    "data_sha256",
    "model_sha256",
    "method_version",
    "git_commit",
)


def evaluate_cases(
    cfg: RunConfig,
    pred_dir: Path,
    *,
    spacing_mm: tuple[float, float, float] | None,
    empty_pred: str,
    run_info: dict[str, Any],
    cases: list[str] | None = None,
) -> list[dict]:
    """Per-case Dice, Jaccard, HD95, ASD in voxels and mm, with run identity, settings and provenance columns.

    Args:
        cfg: the run's configuration.
        pred_dir: folder of `<case>.nii.gz` label maps and `predictions.json` written by `predict_cases`.
        spacing_mm: voxel size for the mm columns (None: the prepared data's, `voxel_size`).
        empty_pred: empty-prediction policy (worst_case | nan | reference_zero; protocol §4.6).
        run_info: the run's run_info.json (provenance columns; its model_sha256 must be the predictions').
        cases: only these test cases (None: every case of test.list, as a run's evaluation always does).
    """
    data = PreparedData.open(cfg.data.root, cfg.data.format)
    if cases is not None:  # an external evaluation of some test cases (`evaluate-checkpoint --cases`)
        data = data.with_test_cases(cases)
    spacing_mm = voxel_size(spacing_mm, data)
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
        try:
            vox = case_metrics(pred, gt, spacing=None, empty_pred=empty_pred)
            mm = case_metrics(pred, gt, spacing=spacing_mm, empty_pred=empty_pred)
        except ValueError as err:
            raise DataError(f"test case {case} ({pred_path} against {data.path(case)}): {err}") from err
        rows.append(
            {
                "dataset": cfg.dataset,
                "method": cfg.method,
                "n_labeled": cfg.n_labeled,
                "n_train": cfg.data.n_trainable,
                "seed": cfg.seed,
                "case": case,
                "dice": vox["dice"],
                "jaccard": vox["jaccard"],
                "hd95": vox["hd95"],
                "asd": vox["asd"],
                "hd95_mm": mm["hd95"],
                "asd_mm": mm["asd"],
                "empty_pred": int(vox["empty_pred"]),
                "empty_pred_policy": empty_pred,
                **provenance,
            }
        )
    return rows


def evaluate_run(
    cfg: RunConfig,
    pred_dir: Path,
    run_info_path: Path,
    out_csv: Path,
    out_json: Path,
    *,
    spacing_mm: tuple[float, float, float] | None,
    empty_pred: str,
    code: dict[str, Any] | None = None,
) -> None:
    """The `evaluate` job: per-case metrics of a run's predictions into `out_csv` and `out_json`, with the settings
    and hashes the predictions record and the evaluation's own code identity (`harness.run.code`)."""
    run_info = json.loads(Path(run_info_path).read_text())
    rows = evaluate_cases(cfg, pred_dir, spacing_mm=spacing_mm, empty_pred=empty_pred, run_info=run_info)
    record = read_record(pred_dir)
    settings = {
        **record["settings"],
        "empty_pred": empty_pred,
        "model_sha256": record["model_sha256"],
        "data_manifest_sha256": record["data_manifest_sha256"],
        "code": code,
    }
    write_results(rows, out_csv, out_json, run_info, settings)


def write_results(rows: list[dict], csv_path: Path, json_path: Path, run_info: dict, eval_settings: dict) -> None:
    """metrics_per_case.csv and metrics.json (means + the run's provenance), each written atomically."""
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PER_CASE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    means = {k: _nanmean([r[k] for r in rows]) for k in ("dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm")}
    record = {
        "metrics": means,
        "n_cases": len(rows),
        "n_empty_pred": sum(r["empty_pred"] for r in rows),
        "eval": {
            **eval_settings,
            "postprocess_lcc": False,
            "hd95": "pooled (medpy)",
            "asd": "directed pred->gt (medpy)",
            "surface_connectivity": 1,
            "decision": "argmax / p > 0.5",
        },
        "run_info": run_info,
    }
    write_json_atomic(json_path, record)


def _nanmean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None
