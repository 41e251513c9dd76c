"""NIH Pancreas-CT: MC-Net preprocessing, checks, the 62/20 split and the 0025/0070 policy (docs/protocol.md §2).

Per case (`prepare_case`):

* Step A: the CT series (`harness.data.tcia.read_ct_series`) becomes an image with the label NIfTI's origin,
  direction and spacing, after checking that the label has the series' size and voxel spacing and values {0, 1}.
* Step B: resample to 1 mm (new size per axis = int(size × spacing / 1.0), truncated; output spacing =
  size × spacing / new size; origin and direction kept; B-spline image, nearest-neighbour label); transpose to
  (x, y, z); window [−125, 275] HU → [0, 1]; crop x and y around the label (pad = max(96 − extent, 0) // 2, from
  min − pad − 25 to max + pad + 25, clipped, upper end exclusive; z kept); z-score inside the crop; write
  `<root>/h5/image<nnnn>_norm.h5` with gzip `image` float32, `label` float32 and the attribute `spacing` (x, y, z).
* QA: `<root>/qa/image<nnnn>.json` (shapes, spacings, crop, warnings, a 16³ fingerprint for near-duplicate search)
  and `<root>/qa/image<nnnn>.png` (label contour over the central slice, for a visual alignment check).

`write_manifest` then checks every listed case, writes the lists of the split variant and `manifest.json`, whose
`split` field (`mcnet` or `mcnet_minus_0025_0070`) is the tag that the run configs also carry (`data.split`).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from harness.data.case_files import write_case_h5, write_overlay
from harness.data.download import DataError, missing_case_files, sha256_file, verify_file, write_list
from harness.data.prepared import load_case, pancreas_case_path
from harness.data.splits import PANCREAS_DUPLICATES, SPLIT_MCNET, SPLIT_MCNET_MINUS
from harness.data.tcia import CtSeries, case_number, read_ct_series
from harness.io import write_json_atomic

logger = logging.getLogger(__name__)

SPLIT_CSV = Path(__file__).resolve().parent / "manifests" / "pancreas_split.csv"
#: sha256 of ycwu1997/MC-Net @ fee453ca `data/Pancreas/{train,test}.list` (protocol §2.5).
LIST_SHA256 = {
    "train.list": "96e54f3254f359a10ce5fa8a99ead8735f56660392d45f1f871dfc327d6383cf",
    "test.list": "e55da970a819580907e86de9a2d65dd2a1ab13c24721a5ba6acfa7b4d3a84ebb",
}
HU_WINDOW = (-125.0, 275.0)  # level 75, width 400
MARGIN, PATCH_XY, SPACING_MM = 25, 96, 1.0
#: Final h5 shape ranges seen in MC-Net's notebook output; outside them QA warns (protocol §2.3).
QA_RANGES = ((145, 225), (145, 159), (181, 310))
NEAR_DUPLICATE_R = 0.98
FINGERPRINT = (16, 16, 16)


# -- split ------------------------------------------------------------------------------------------------------
def mcnet_lists(path: str | Path = SPLIT_CSV) -> dict[str, list[str]]:
    """The MC-Net lists `{"train.list": [...62], "test.list": [...20]}` in file order."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        f"{s}.list": [r["id"] for r in sorted((r for r in rows if r["split"] == s), key=lambda r: int(r["index"]))]
        for s in ("train", "test")
    }


def split_lists(split: str) -> dict[str, list[str]]:
    """Lists of a split variant: `mcnet` unchanged, `mcnet_minus_0025_0070` without the two cases (order kept)."""
    if split not in (SPLIT_MCNET, SPLIT_MCNET_MINUS):
        raise ValueError(f"split must be {SPLIT_MCNET!r} or {SPLIT_MCNET_MINUS!r}; got {split!r}")
    lists = mcnet_lists()
    if split == SPLIT_MCNET:
        return lists
    return {name: [i for i in ids if i not in PANCREAS_DUPLICATES] for name, ids in lists.items()}


# -- step A -----------------------------------------------------------------------------------------------------
def read_label(path: str | Path, what: str) -> Any:
    """The label NIfTI as a SimpleITK uint8 image; DataError unless its values are {0, 1} with some 1s."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what}: label file {path} does not exist")
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayViewFromImage(img)
    values = np.unique(arr)
    if not set(values.tolist()) <= {0, 1}:
        raise DataError(f"{what}: label values must be in {{0, 1}}; {path.name} has {values[:10].tolist()}")
    if not (arr == 1).any():
        raise DataError(f"{what}: label {path.name} is empty (no pancreas voxel)")
    return sitk.Cast(img, sitk.sitkUInt8)


def check_geometry(label: Any, series: CtSeries, what: str, rtol: float = 1e-2) -> dict[str, Any]:
    """DataError unless the label's size and voxel spacing equal the series'; returns the origin offset (mm)."""
    size = tuple(int(v) for v in label.GetSize())
    want = (series.hu.shape[2], series.hu.shape[1], series.hu.shape[0])
    if size != want:
        raise DataError(f"{what}: label size (x, y, z) {size} differs from the DICOM series {want}: misaligned pair")
    spacing = np.array(label.GetSpacing(), float)
    if not np.allclose(spacing, series.spacing, rtol=rtol, atol=1e-3):
        shown = [tuple(round(float(v), 4) for v in sp) for sp in (spacing, series.spacing)]
        raise DataError(
            f"{what}: label spacing (x, y, z) {shown[0]} mm differs from the DICOM series {shown[1]} mm "
            "(affine disagrees with its series)"
        )
    offset = np.array(label.GetOrigin(), float) - np.array(series.first_position, float)
    return {
        "label_spacing": spacing.tolist(),
        "series_spacing": list(series.spacing),
        "origin_offset_mm": offset.round(3).tolist(),
    }


def series_to_image(series: CtSeries, label: Any) -> Any:
    """Step A.4: the HU volume (z, y, x) as a SimpleITK image with the label's origin, direction and spacing."""
    import SimpleITK as sitk

    if not np.isfinite(series.hu).all():
        raise DataError("image contains non-finite values")
    image = sitk.GetImageFromArray(series.hu.astype(np.float32))
    image.CopyInformation(label)
    return image


# -- step B -----------------------------------------------------------------------------------------------------
def resample_1mm(image: Any, *, is_label: bool) -> Any:
    """Step B.1: resample to ~1 mm keeping origin and direction; B-spline (image) or nearest neighbour (label).

    New size per axis = int(size × spacing / 1.0) (truncated); new spacing = size × spacing / new size (x, y, z).
    """
    import SimpleITK as sitk

    size, spacing = image.GetSize(), image.GetSpacing()
    new_size = [int(s * sp / SPACING_MM) for s, sp in zip(size, spacing, strict=True)]
    if min(new_size) < 1:
        raise DataError(f"volume of size {size} and spacing {spacing} mm is smaller than one 1 mm voxel")
    new_spacing = [s * sp / n for s, sp, n in zip(size, spacing, new_size, strict=True)]
    f = sitk.ResampleImageFilter()
    f.SetSize(new_size)
    f.SetOutputSpacing(new_spacing)
    f.SetOutputOrigin(image.GetOrigin())
    f.SetOutputDirection(image.GetDirection())
    f.SetTransform(sitk.Transform())
    f.SetDefaultPixelValue(0)
    f.SetInterpolator(sitk.sitkNearestNeighbor if is_label else sitk.sitkBSpline)
    return f.Execute(image)


def window(hu: np.ndarray) -> np.ndarray:
    """Step B.3: clip to [−125, 275] HU and map linearly to [0, 1] (float32)."""
    lo, hi = HU_WINDOW
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def xy_crop(label: np.ndarray) -> tuple[slice, slice]:
    """Step B.4: x and y slices around the label (x, y, z): min − pad − 25 to max + pad + 25, clipped, end exclusive.

    pad = max(96 − (max − min), 0) // 2 per axis, with min/max the first/last label index.
    """
    if not label.any():
        raise DataError("the resampled label is empty")
    out = []
    for axis in (0, 1):
        idx = np.flatnonzero(label.any(axis=tuple(a for a in range(3) if a != axis)))
        lo, hi = int(idx[0]), int(idx[-1])
        pad = max(PATCH_XY - (hi - lo), 0) // 2
        out.append(slice(max(lo - pad - MARGIN, 0), min(hi + pad + MARGIN, label.shape[axis])))
    return out[0], out[1]


@dataclass(frozen=True)
class Prepared:
    """One case after step B: arrays (x, y, z), the resampled spacing and what QA needs."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    crop: tuple[slice, slice]
    resampled_shape: tuple[int, int, int]
    fingerprint: np.ndarray


def preprocess(image: Any, label: Any, what: str) -> Prepared:
    """Step B on a SimpleITK image/label pair of equal geometry (see the module docstring)."""
    import SimpleITK as sitk
    from skimage.transform import resize

    if image.GetSize() != label.GetSize():
        raise DataError(f"{what}: image size {image.GetSize()} differs from label size {label.GetSize()}")
    if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
        raise DataError(f"{what}: image contains non-finite values (NaN or inf)")
    img_r, lab_r = resample_1mm(image, is_label=False), resample_1mm(label, is_label=True)
    img = sitk.GetArrayFromImage(img_r).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    lab = sitk.GetArrayFromImage(lab_r).transpose(2, 1, 0)
    windowed = window(img)
    try:
        xs, ys = xy_crop(lab)
    except DataError as err:
        raise DataError(f"{what}: {err}") from err
    crop = windowed[xs, ys]
    std = float(crop.std())
    if std == 0:
        raise DataError(f"{what}: the cropped image is constant after windowing")
    out = ((crop - float(crop.mean())) / std).astype(np.float32)
    return Prepared(
        image=out,
        label=lab[xs, ys].astype(np.float32),
        spacing=tuple(float(v) for v in img_r.GetSpacing()),
        crop=(xs, ys),
        resampled_shape=tuple(int(v) for v in img.shape),
        fingerprint=resize(windowed[::4, ::4, ::4], FINGERPRINT, order=1, anti_aliasing=True).astype(np.float32),
    )


def _qa_warnings(shape: tuple[int, ...]) -> list[str]:
    return [
        f"{axis} size {n} outside the {lo}-{hi} range of MC-Net's preprocessed cases"
        for axis, n, (lo, hi) in zip("xyz", shape, QA_RANGES, strict=True)
        if not lo <= n <= hi
    ]


def prepare_case(case_id: str, dicom_dir: str | Path, labels_dir: str | Path, root: str | Path) -> dict[str, Any]:
    """Steps A and B for one case; writes `<root>/h5/<ID>_norm.h5`, then `<root>/qa/<ID>.{png,json}` (last).

    Args:
        case_id: `image<nnnn>`.
        dicom_dir: folder with the case's DICOM files (any order, sub-folders allowed).
        labels_dir: folder with `label<nnnn>.nii.gz`.
        root: the dataset root.

    Returns:
        The QA record.
    """
    what = f"Pancreas case {case_id}"
    label = read_label(Path(labels_dir) / f"label{case_number(case_id)}.nii.gz", what)
    series = read_ct_series(dicom_dir, what)
    geometry = check_geometry(label, series, what)
    prepared = preprocess(series_to_image(series, label), label, what)
    h5 = write_case_h5(
        pancreas_case_path(root, case_id), prepared.image, prepared.label, prepared.spacing, label_dtype=np.float32
    )
    warnings = _qa_warnings(prepared.image.shape)
    for w in warnings:
        logger.warning("%s: %s", what, w)
    qa = Path(root) / "qa"
    qa.mkdir(parents=True, exist_ok=True)
    write_overlay(qa / f"{case_id}.png", prepared.image, prepared.label, what)
    record = {
        "case": case_id,
        "dicom_shape_zyx": list(series.hu.shape),
        "skipped_files": series.skipped,
        **geometry,
        "resampled_shape": list(prepared.resampled_shape),
        "spacing": list(prepared.spacing),
        "crop_x": [prepared.crop[0].start, prepared.crop[0].stop],
        "crop_y": [prepared.crop[1].start, prepared.crop[1].stop],
        "shape": list(prepared.image.shape),
        "fg_voxels": int(prepared.label.sum()),
        "h5_sha256": sha256_file(h5),
        "warnings": warnings,
        "fingerprint": prepared.fingerprint.round(4).ravel().tolist(),
    }
    write_json_atomic(qa / f"{case_id}.json", record)
    logger.info("%s: %s -> %s, spacing %s", what, record["resampled_shape"], record["shape"], record["spacing"])
    return record


# -- the dataset manifest ---------------------------------------------------------------------------------------
def near_duplicates(fingerprints: dict[str, np.ndarray], threshold: float = NEAR_DUPLICATE_R) -> list[dict]:
    """Pairs of cases whose fingerprints (downsampled windowed volumes) correlate above `threshold` (Pearson r)."""
    ids = sorted(fingerprints)
    if len(ids) < 2:
        return []
    r = np.corrcoef(np.stack([np.asarray(fingerprints[i], float).ravel() for i in ids]))
    return [
        {"cases": [ids[a], ids[b]], "r": round(float(r[a, b]), 4)}
        for a in range(len(ids))
        for b in range(a + 1, len(ids))
        if r[a, b] > threshold
    ]


def _check_case(root: Path, case_id: str) -> dict[str, Any]:
    path = pancreas_case_path(root, case_id)
    try:
        image, label = load_case(path, with_label=True)
    except ValueError as err:  # h5 without `label`, shape mismatch, NaN, values outside {0, 1}
        raise DataError(f"Pancreas case {case_id}: {err}") from err
    if not label.any():
        raise DataError(f"{path}: label is empty")
    with h5py.File(path, "r") as f:
        if "spacing" not in f.attrs:
            raise DataError(f"{path}: no `spacing` attribute; preprocess the case again")
        spacing = [float(v) for v in f.attrs["spacing"]]
    return {"shape": list(image.shape), "spacing": spacing, "fg_voxels": int(label.sum()), "sha256": sha256_file(path)}


def _note_served_duplicates(root: Path, split: str, policy: str) -> None:
    """Log when `auto` dropped cases 0025/0070 although the series index (TCIA) lists both."""
    index = root / "raw" / "series.json"
    if split != SPLIT_MCNET_MINUS or policy != "auto" or not index.is_file():
        return
    served = json.loads(index.read_text())["cases"]
    if all(c in served for c in PANCREAS_DUPLICATES):
        logger.warning(
            "the series index lists %s, but duplicates=auto resolved to %s when the DAG was built (no local copy); "
            "set data.<dataset>.tcia.duplicates: require to use the unchanged MC-Net split",
            " and ".join(sorted(PANCREAS_DUPLICATES)),
            split,
        )


def write_manifest(root: str | Path, *, split: str, policy: str, lists: dict[str, list[str]] | None = None) -> dict:
    """Check every listed case, write `train.list`, `test.list` and (last) `manifest.json`.

    Args:
        root: the dataset root (h5/, qa/, raw/labels/index.json, raw/series.json).
        split: the split tag resolved from the policy (`harness.workflow.grid.pancreas_split`).
        policy: the configured `duplicates` value (recorded).
        lists: override the lists (tests); default `split_lists(split)`.

    Returns:
        The manifest written; `cases` maps each ID to {"split": "train" | "test", "shape", "spacing", "fg_voxels",
        "sha256"} (the contract of `harness.data.prepared`).
    """
    root = Path(root)
    lists = split_lists(split) if lists is None else lists
    ids = lists["train.list"] + lists["test.list"]
    missing_case_files(root, ids, pancreas_case_path)
    split_of = {cid: name.removesuffix(".list") for name, names in lists.items() for cid in names}
    cases = {cid: {"split": split_of[cid], **_check_case(root, cid)} for cid in ids}
    qa_files = {cid: root / "qa" / f"{cid}.json" for cid in ids}
    qa = {cid: json.loads(p.read_text()) for cid, p in qa_files.items() if p.is_file()}
    dups = near_duplicates({cid: np.array(r["fingerprint"]) for cid, r in qa.items()})
    for d in dups:
        logger.warning("near-duplicate cases %s (fingerprint r = %.3f): check for leakage", d["cases"], d["r"])
    _note_served_duplicates(root, split, policy)
    hashes = {}
    for name, names in lists.items():
        path = write_list(root / name, names)
        if split == SPLIT_MCNET and lists == mcnet_lists():
            verify_file(path, what=f"Pancreas {name}", url=str(SPLIT_CSV), sha256=LIST_SHA256[name])
        hashes[name] = sha256_file(path)
    labels_index = root / "raw" / "labels" / "index.json"
    manifest = {
        "dataset": "pancreas",
        "source": "tcia",
        "format": "pancreas_h5",
        "preprocessing": "mcnet",
        "split": split,
        "pancreas_split": split,
        "duplicates_policy": policy,
        "excluded": sorted(PANCREAS_DUPLICATES) if split == SPLIT_MCNET_MINUS else [],
        "n_train": len(lists["train.list"]),
        "n_test": len(lists["test.list"]),
        "lists": hashes,
        "labels_archive_sha256": json.loads(labels_index.read_text())["archive_sha256"]
        if labels_index.is_file()
        else None,
        "cases": cases,
        "near_duplicates": dups,
        "qa_warnings": {cid: r["warnings"] for cid, r in qa.items() if r.get("warnings")},
    }
    write_json_atomic(root / "manifest.json", manifest)
    logger.info("Pancreas (%s): %d cases verified; wrote %s", split, len(cases), root / "manifest.json")
    return manifest
