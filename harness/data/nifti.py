"""Any 3D binary segmentation dataset in the Medical Segmentation Decathlon (MSD) or nnU-Net v2 raw layout as a dataset
of the DAG (source `nifti`, on-disk format `case_h5`; docs/data.md).

Input layouts (`layout: auto` tells them apart by dataset.json's keys):

* MSD: `<root>/dataset.json` with `"training": [{"image": "./imagesTr/<case>.nii.gz", "label":
  "./labelsTr/<case>.nii.gz"}, ...]` and `"labels": {"0": "background", "1": ...}` (values as strings); case ID = the
  image file name without `.nii.gz`; a multi-channel image holds its channels on the 4th axis.
* nnU-Net v2 raw: `<root>/dataset.json` with `"channel_names"`, `"labels": {"background": 0, ...}` (values as ints),
  `"numTraining"` and `"file_ending"`; `labelsTr/<case><ending>` and one `imagesTr/<case>_<XXXX><ending>` per channel.

`imagesTr/` and `labelsTr/` give the labeled cases; `imagesTs/` (images without labels) is never read.

Three jobs (harness/cli.py):

1. `nifti-plan` → `plan_dataset`: the cases (`find_cases`, from dataset.json and file names only), the train/test
   split (`split_cases`, a function of the case IDs and the `test` settings only, never of a training seed), the target
   spacing (configured, or the per-axis median of the training cases) and, for CT, the dataset's intensity statistics;
   writes `<out>/plan.json`.
2. `nifti-case`, one per case → `prepare_case`: reorient to RAS+, check the image/label pair, map the configured
   foreground label values to 1 and the rest to 0, resample to the target spacing, normalise; writes
   `<out>/cases/<ID>.h5`, then the QA files `<out>/qa/<ID>.png` and, last, `<out>/qa/<ID>.json`.
3. `nifti-manifest` → `write_manifest`: checks every case, writes `train.list`, `test.list` and, last,
   `<out>/manifest.json` (the contract of `harness.data.prepared`, plus `spacing_mm`).

Normalisation (`modality`): `mri` z-scores each case over its whole volume; `ct` clips to the 0.5 and 99.5 percentiles
of the training cases' foreground intensities and z-scores with the mean and std of the clipped values (nnU-Net's CT
scheme), so every case is normalised with the same dataset-level numbers.

The cases and the split come from `harness.data.nifti_layout`, one case's arrays from `harness.data.nifti_case`. No
torch import.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from harness.data.case_files import write_case_h5, write_overlay
from harness.data.download import DataError, sha256_file, write_list
from harness.data.nifti_case import (
    SPACING_RTOL,
    CaseArrays,
    ct_statistics,
    normalise,
    read_case,
    read_header,
    resample,
    sample_foreground,
)
from harness.data.nifti_layout import (
    NiftiSettings,
    SourceCase,
    find_cases,
    label_values,
    read_dataset_json,
    split_cases,
)
from harness.data.prepared import MANIFEST, case_h5_path, load_case
from harness.io import write_json_atomic

logger = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"
PLAN = "plan.json"
PLAN = "plan.json"
QA_DIR = "qa"
REQUIRED_KEYS = {"msd": ("training", "labels"), "nnunet": ("channel_names", "labels", "numTraining", "file_ending")}
#: QA warns when a side of a prepared case has fewer voxels (the training loader zero-pads smaller volumes).
MIN_SIDE = 16


def _dataset_ct_statistics(cases: list[SourceCase], settings: NiftiSettings, layout: str, allowed: list[int]) -> dict:
    """CT statistics over the training cases' foreground, reading one case at a time."""
    samples = []
    for case in cases:
        arrays = read_case(case, settings, layout, allowed)
        foreground = np.isin(arrays.label, settings.foreground)
        if not foreground.any():
            raise DataError(_empty_foreground(case, settings))
        samples.append(sample_foreground(arrays.image[foreground], case.case_id))
        logger.info("CT statistics: case %s, %d foreground voxels", case.case_id, int(foreground.sum()))
    return ct_statistics(samples)


def _empty_foreground(case: SourceCase, settings: NiftiSettings, split: str = "train") -> str:
    return (
        f"{'training' if split == 'train' else 'test'} case {case.case_id}: the label {case.label} has no voxel of the "
        "foreground values "
        f"{list(settings.foreground)}; remove the case from the dataset, or correct nifti.foreground"
    )


# -- the plan --------------------------------------------------------------------------------------------------------
def _relative(path: Path, root: Path) -> str:
    """`path` relative to the dataset root, with forward slashes."""
    return Path(os.path.relpath(path, root)).as_posix()


def plan_dataset(settings: NiftiSettings, out_root: Path) -> dict[str, Any]:
    """Find the cases, fix the split, the target spacing and the normalisation; write `<out_root>/plan.json`.

    The target spacing is the configured one, or the per-axis median of the training cases' voxel sizes (RAS+ order,
    from the headers). For `ct`, every training case is read once, one at a time (`CT_SAMPLES_PER_CASE`).

    Args:
        settings: the `data.<dataset>.nifti` block.
        out_root: the prepared dataset's folder (resources/<dataset>).

    Returns:
        The plan: `settings` (the block, absolute paths), `layout`, `dataset_json_sha256`, `labels` (dataset.json's),
        `label_values`, `target_spacing` [x, y, z] mm and `target_spacing_from`, `normalisation` (`{"scheme":
        "zscore_per_case"}` or `ct_statistics`), `n_train`, `n_test` and `cases`: per case (ID order) `id`, `image` and
        `label` (relative to the root), `split`, and from the headers `shape` and `spacing` (RAS+) and `orientation`.

    Raises:
        DataError: anything `find_cases`, `split_cases` or `read_header` refuses; foreground values that dataset.json's
            labels lack; (ct) a training case without foreground. A refused plan leaves no plan.json.
    """
    out_root = Path(out_root)
    (out_root / PLAN).unlink(missing_ok=True)
    test_list = settings.test_list.resolve() if settings.test_list else None
    settings = replace(settings, root=settings.root.resolve(), test_list=test_list)  # case jobs may run elsewhere
    layout, cases = find_cases(settings)
    meta = read_dataset_json(settings.root)
    allowed = label_values(meta, layout, settings.root / DATASET_JSON)
    absent = sorted(set(settings.foreground) - set(allowed))
    if absent:
        raise DataError(
            f"nifti.foreground: {absent} are not label values of {settings.root / DATASET_JSON} "
            f"(labels: {meta['labels']}); correct nifti.foreground"
        )
    train_ids, test_ids = split_cases([c.case_id for c in cases], settings)
    headers = {c.case_id: read_header(c, settings, layout) for c in cases}
    train = [c for c in cases if c.case_id in set(train_ids)]
    if settings.target_spacing is not None:
        target, source = list(settings.target_spacing), "configured"
    else:
        spacings = np.array([headers[c.case_id]["spacing"] for c in train])
        target, source = [float(v) for v in np.median(spacings, axis=0)], "median of the training cases"
    if settings.modality == "ct":
        normalisation = _dataset_ct_statistics(train, settings, layout, allowed)
    else:
        normalisation = {"scheme": "zscore_per_case"}
    split = {cid: "train" for cid in train_ids} | {cid: "test" for cid in test_ids}
    plan = {
        "settings": settings.to_block(),
        "layout": layout,
        "dataset_json_sha256": sha256_file(settings.root / DATASET_JSON),
        "labels": meta["labels"],
        "label_values": allowed,
        "target_spacing": target,
        "target_spacing_from": source,
        "normalisation": normalisation,
        "n_train": len(train_ids),
        "n_test": len(test_ids),
        "cases": [
            {
                "id": c.case_id,
                "image": _relative(c.image, settings.root),
                "label": _relative(c.label, settings.root),
                "split": split[c.case_id],
                **headers[c.case_id],
            }
            for c in cases
        ],
    }
    write_json_atomic(out_root / PLAN, plan)
    logger.info(
        "nifti plan: %s layout, %d train + %d test cases, target spacing %s mm (%s), normalisation %s",
        layout,
        len(train_ids),
        len(test_ids),
        target,
        source,
        normalisation["scheme"],
    )
    return plan


def read_plan(out_root: Path) -> dict[str, Any]:
    """`<out_root>/plan.json`; DataError with the command that writes it when it is missing."""
    path = Path(out_root) / PLAN
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: run `python -m harness nifti-plan --out {out_root} --settings ...` "
            "(the workflow's nifti plan rule) first"
        )
    return json.loads(path.read_text())


def _plan_case(plan: Mapping[str, Any], case_id: str, settings: NiftiSettings) -> tuple[SourceCase, str]:
    """(source case, split) of a case of the plan; DataError for an ID the plan does not hold."""
    for entry in plan["cases"]:
        if entry["id"] == case_id:
            return SourceCase(case_id, settings.root / entry["image"], settings.root / entry["label"]), entry["split"]
    raise DataError(f"case {case_id!r} is not in the plan ({len(plan['cases'])} cases); use an ID of plan.json")


# -- one case --------------------------------------------------------------------------------------------------------
def qa_paths(out_root: Path, case_id: str) -> tuple[Path, Path, Path]:
    """(case h5, QA PNG, QA JSON) of a case."""
    qa = Path(out_root) / QA_DIR
    return case_h5_path(out_root, case_id), qa / f"{case_id}.png", qa / f"{case_id}.json"


def _qa_warnings(shape: Sequence[int], split: str, fg_voxels: int) -> list[str]:
    warnings = [
        f"{axis} side is {n} voxels (< {MIN_SIDE}); the training loader zero-pads patches larger than the volume"
        for axis, n in zip("xyz", shape, strict=True)
        if n < MIN_SIDE
    ]
    return warnings


def _preprocess(
    arrays: CaseArrays, case: SourceCase, split: str, settings: NiftiSettings, plan: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(binary label before resampling, prepared image, prepared label): map the foreground to 1, resample to the
    plan's target spacing, normalise. Every case must keep some foreground: a training case to learn from, a test
    case because Dice, HD95 and ASD are undefined against an empty reference."""
    binary = np.isin(arrays.label, settings.foreground).astype(np.uint8)
    if not binary.any():
        raise DataError(_empty_foreground(case, settings, split))
    target = plan["target_spacing"]
    label = resample(binary, arrays.affine, target, is_label=True)
    if not label.any():
        raise DataError(
            f"{split} case {case.case_id}: the foreground of {case.label} vanishes when resampled to {target} mm; "
            "set a finer nifti.target_spacing or remove the case"
        )
    resampled = resample(arrays.image, arrays.affine, target, is_label=False)
    image = normalise(resampled, plan["normalisation"], f"case {case.case_id} ({case.image})")
    return binary, image, label


def prepare_case(case_id: str, plan: Mapping[str, Any], out_root: Path) -> dict[str, Any]:
    """Prepare one case: reorient, check, map the foreground, resample, normalise, write the h5 and QA files.

    Writes `<out_root>/cases/<ID>.h5` (gzip `image` float32 and `label` uint8 {0, 1}, (x, y, z), attribute `spacing`
    (x, y, z) mm), then `<out_root>/qa/<ID>.png` (label contour over the central label slice) and, last,
    `<out_root>/qa/<ID>.json`. Earlier files of the case are deleted first, so a refused case leaves none.

    Args:
        case_id: an ID of the plan.
        plan: `read_plan(out_root)`.
        out_root: the prepared dataset's folder.

    Returns:
        The QA record (shapes, spacings before and after, orientation before, foreground voxels, h5 sha256, warnings).

    Raises:
        DataError: an ID not in the plan; anything `read_case` refuses; a training case whose foreground is empty
            (before or after resampling); a constant MRI image.
    """
    outputs = qa_paths(out_root, case_id)
    for path in outputs:
        path.unlink(missing_ok=True)
    settings = NiftiSettings.from_block(plan["settings"])
    case, split = _plan_case(plan, case_id, settings)
    arrays = read_case(case, settings, plan["layout"], plan["label_values"])
    binary, image, label = _preprocess(arrays, case, split, settings, plan)
    target = plan["target_spacing"]
    record = {
        "case": case_id,
        "split": split,
        "image": _relative(case.image, settings.root),
        "label": _relative(case.label, settings.root),
        "source_shape": list(arrays.source_shape),
        "orientation_before": arrays.orientation,
        "shape_before": list(arrays.image.shape),
        "spacing_before": list(arrays.spacing),
        "shape": list(image.shape),
        "spacing": list(target),
        "label_values": list(arrays.label_values),
        "fg_voxels_before": int(binary.sum()),
        "fg_voxels": int(label.sum()),
        "warnings": _qa_warnings(image.shape, split, int(label.sum())),
    }
    h5, png, qa_json = outputs
    try:
        write_case_h5(h5, image, label, tuple(target), label_dtype=np.uint8)
        write_overlay(png, image, label, f"{case_id} ({split})")
        record["h5_sha256"] = sha256_file(h5)
        write_json_atomic(qa_json, record)
    except BaseException:
        for path in outputs:
            path.unlink(missing_ok=True)
        raise
    for warning in record["warnings"]:
        logger.warning("case %s: %s", case_id, warning)
    logger.info(
        "case %s (%s): %s %s mm -> %s %s mm, %d foreground voxels",
        case_id,
        arrays.orientation,
        record["shape_before"],
        np.round(arrays.spacing, 3).tolist(),
        record["shape"],
        target,
        record["fg_voxels"],
    )
    return record


# -- the manifest ----------------------------------------------------------------------------------------------------
def _rerun_case(case_id: str, out_root: Path) -> str:
    return f"rerun `python -m harness nifti-case --out {out_root} --case {case_id}` (or the workflow)"


def _check_case(out_root: Path, entry: Mapping[str, Any], target: Sequence[float]) -> tuple[dict[str, Any], list[str]]:
    """(manifest record, QA warnings) of a prepared case after checking its files; DataError naming the case, the
    file and the fix."""
    case_id, split = entry["id"], entry["split"]
    h5, _, qa_json = qa_paths(out_root, case_id)
    if not h5.is_file() or not qa_json.is_file():
        raise DataError(
            f"case {case_id}: {h5 if not h5.is_file() else qa_json} is missing; {_rerun_case(case_id, out_root)}"
        )
    try:
        image, label = load_case(h5, with_label=True)
    except ValueError as err:  # DataError (unreadable) included
        raise DataError(f"case {case_id}: {err}; delete {h5} and {_rerun_case(case_id, out_root)}") from err
    with h5py.File(h5, "r") as f:
        spacing = [float(v) for v in f.attrs.get("spacing", [])]
    if len(spacing) != 3 or not np.allclose(spacing, target, rtol=SPACING_RTOL, atol=0):
        raise DataError(
            f"case {case_id}: {h5} has spacing {spacing} mm, the plan {list(target)} mm (prepared with an "
            f"older plan?); {_rerun_case(case_id, out_root)}"
        )
    if split == "train" and not label.any():
        raise DataError(f"training case {case_id}: {h5} has an empty label; {_rerun_case(case_id, out_root)}")
    digest, qa = sha256_file(h5), json.loads(qa_json.read_text())
    if qa.get("h5_sha256") != digest:
        raise DataError(
            f"case {case_id}: {h5} is not the file its QA record {qa_json} describes (sha256 differs); "
            f"{_rerun_case(case_id, out_root)}"
        )
    return {
        "split": split,
        "sha256": digest,
        "shape": list(image.shape),
        "fg_voxels": int(label.sum()),
        "image": entry["image"],
        "label": entry["label"],
    }, qa["warnings"]


def write_manifest(out_root: Path) -> dict[str, Any]:
    """Check every case of plan.json, write `train.list`, `test.list` and, last, `manifest.json`.

    The manifest holds the contract of `harness.data.prepared` (`format: case_h5`, `lists`, `cases` with split and
    sha256) plus `spacing_mm` (the target spacing) and the settings that shaped the data. Its content depends only on
    the data and the settings (no time stamps, no absolute paths), so its sha256 is the data's identity.

    Raises:
        DataError: no plan.json; a case file missing, unreadable, of another spacing, or (training) with an empty label;
            a QA record that does not describe its case file. Each message names the case, the file and the fix. A
            refused dataset leaves no manifest.json.
    """
    out_root = Path(out_root)
    (out_root / MANIFEST).unlink(missing_ok=True)
    plan = read_plan(out_root)
    target = plan["target_spacing"]
    checked = {entry["id"]: _check_case(out_root, entry, target) for entry in plan["cases"]}
    lists = {
        f"{split}.list": sorted(cid for cid, (c, _) in checked.items() if c["split"] == split)
        for split in ("train", "test")
    }
    hashes = {name: sha256_file(write_list(out_root / name, ids)) for name, ids in lists.items()}
    settings = plan["settings"]
    test = settings["test"]
    manifest = {
        "dataset": out_root.resolve().name,
        "source": "nifti",
        "format": "case_h5",
        "layout": plan["layout"],
        "spacing_mm": [float(v) for v in target],
        "spacing_from": plan["target_spacing_from"],
        "foreground": settings["foreground"],
        "modality": settings["modality"],
        "channel": settings["channel"],
        "normalisation": plan["normalisation"],
        "test_split": {"list": Path(test["list"]).name} if "list" in test else test,
        "labels": plan["labels"],
        "dataset_json_sha256": plan["dataset_json_sha256"],
        "n_train": len(lists["train.list"]),
        "n_test": len(lists["test.list"]),
        "lists": hashes,
        "cases": {cid: record for cid, (record, _) in sorted(checked.items())},
        "qa_warnings": {cid: warnings for cid, (_, warnings) in sorted(checked.items()) if warnings},
    }
    write_json_atomic(out_root / MANIFEST, manifest)
    logger.info(
        "nifti dataset %s: %d train + %d test cases verified; wrote %s",
        manifest["dataset"],
        manifest["n_train"],
        manifest["n_test"],
        out_root / MANIFEST,
    )
    return manifest
