"""A run's predictions folder: `<case>.nii.gz` label maps and `predictions.json`, the record of where they come from.

The record names the sha256 of the model file and of the data manifest the predictions were computed from, the
test cases and the evaluation settings (window, stride, windows per pass, voxel size). Every reader of a predictions
folder (evaluation, the protocol-sensitivity table) checks it against the run's `run_info.json` and data with
`check_record`, so metrics are never computed from predictions of another model, data version or voxel size.

No torch import (numpy and nibabel only).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from harness.data.download import DataError
from harness.data.prepared import PreparedData
from harness.io import write_json_atomic
from harness.run.lineage import LineageError

RECORD = "predictions.json"


def save_nifti(label: np.ndarray, spacing: Sequence[float], path: Path) -> None:
    """A label map (x, y, z) as NIfTI with the voxel size on the affine's diagonal."""
    img = nib.Nifti1Image(label.astype(np.uint8), np.diag([*spacing, 1.0]))
    img.header.set_zooms(tuple(spacing))
    nib.save(img, path)


def voxel_size(spacing_mm: Sequence[float] | None, data: PreparedData) -> tuple[float, float, float]:
    """The voxel size of the mm metrics and NIfTI headers: the configured one, or (None) the one the prepared data
    records (source nifti: its target spacing)."""
    if spacing_mm is not None:
        return tuple(float(v) for v in spacing_mm)
    if data.spacing_mm is None:
        raise DataError(f"{data.root / 'manifest.json'} records no spacing_mm: set data.<dataset>.spacing_mm")
    return tuple(float(v) for v in data.spacing_mm)


def make_record(
    *, model_sha256: str, config_sha256: str, data: PreparedData, settings: dict[str, Any]
) -> dict[str, Any]:
    """The content of predictions.json; `settings` holds at least `stride`, `windows_per_batch`, `spacing_mm`."""
    missing = {"stride", "windows_per_batch", "spacing_mm"} - set(settings)
    if missing:
        raise ValueError(f"prediction settings lack {sorted(missing)}")
    return {
        "model_sha256": model_sha256,
        "config_sha256": config_sha256,
        "data_manifest_sha256": data.manifest_sha256,
        "cases": list(data.test_ids),
        "settings": settings,
    }


def write_record(pred_dir: Path, record: dict[str, Any]) -> None:
    write_json_atomic(Path(pred_dir) / RECORD, record)


def read_record(pred_dir: Path) -> dict[str, Any]:
    """The predictions folder's record; LineageError if absent (not written by `harness predict`: predict again)."""
    path = Path(pred_dir) / RECORD
    if not path.is_file():
        raise LineageError(f"{path} is missing: {pred_dir} was not written by `harness predict`; predict again")
    return json.loads(path.read_text())


def check_record(
    record: dict[str, Any], pred_dir: Path, run_info: dict[str, Any], data: PreparedData, spacing_mm: Sequence[float]
) -> None:
    """Refuse predictions that do not come from the run's model, its data and this voxel size (LineageError)."""
    fix = f"predict again (`snakemake --forcerun {pred_dir}` plus your usual options)"
    if record.get("model_sha256") != run_info.get("model_sha256"):
        raise LineageError(f"{pred_dir} comes from another model.pt than the one run_info.json describes: {fix}")
    if record.get("data_manifest_sha256") != data.manifest_sha256:
        raise LineageError(f"{pred_dir} was predicted on another version of {data.root}: {fix}")
    if record.get("cases") != list(data.test_ids):
        raise LineageError(f"{pred_dir} holds other cases than {data.root / 'test.list'}: {fix}")
    if [float(v) for v in record["settings"]["spacing_mm"]] != [float(v) for v in spacing_mm]:
        raise LineageError(f"{pred_dir} was written with voxel size {record['settings']['spacing_mm']}: {fix}")


def provenance_columns(record: dict[str, Any], run_info: dict[str, Any]) -> dict[str, Any]:
    """The settings and hash columns of `metrics_per_case.csv` rows (harness.report.aggregate.PROVENANCE_COLUMNS)."""
    return {
        "stride": "x".join(str(v) for v in record["settings"]["stride"]),
        "windows_per_batch": record["settings"]["windows_per_batch"],
        "config_sha256": run_info["config_sha256"],
        "code_sha256": run_info["code_sha256"],
        "data_sha256": record["data_manifest_sha256"],
        "model_sha256": record["model_sha256"],
        "method_version": run_info["method_version"],
        "git_commit": run_info["git_commit"],
    }
