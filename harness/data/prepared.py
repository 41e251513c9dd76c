"""The prepared dataset as training and evaluation see it: the manifest, the verified lists and sha256-verified case
files.

Every data source ends its preparation with `<root>/manifest.json` (written last, atomically). Its common contract::

    "format": "la_h5" | "pancreas_h5" | "case_h5"
    "lists":  {"train.list": <sha256 of the file>, "test.list": <sha256 of the file>}
    "cases":  {<ID>: {"split": "train" | "test", "sha256": <sha256 of the case file>, ...}}
    "spacing_mm": [x, y, z]   (optional: the voxel size shared by every case, e.g. the `nifti` source's target spacing)

with exactly the IDs of the two lists. `PreparedData.open` checks the lists against it (safe IDs, unchanged bytes, no
ID in both lists, the same IDs per split) and `PreparedData.load` reads a case file only if its bytes still have the
sha256 recorded at preparation. So training and evaluation only ever read the data that was prepared and recorded.

This module does not import torch: the torch-free pieces of case loading (paths of the on-disk layouts, h5 parsing)
live here and are re-exported by `harness.data.dataset`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

import h5py
import numpy as np

from harness.data.download import DataError
from harness.data.splits import read_list

TRAINING_DIR = "2018LA_Seg_Training Set"
H5_NAME = "mri_norm2.h5"
PANCREAS_DIR = "h5"
PANCREAS_SUFFIX = "_norm.h5"
CASE_H5_DIR = "cases"
FORMATS = ("la_h5", "pancreas_h5", "case_h5")
MANIFEST = "manifest.json"
LISTS = {"train": "train.list", "test": "test.list"}
_SHOWN_IDS = 10  # IDs named in an error message


# -- case paths ------------------------------------------------------------------------------------------------------
def la_case_path(root: str | Path, case_id: str) -> Path:
    """Path of an LA case file: `<root>/2018LA_Seg_Training Set/<case_id>/mri_norm2.h5`."""
    return Path(root) / TRAINING_DIR / case_id / H5_NAME


def pancreas_case_path(root: str | Path, case_id: str) -> Path:
    """Path of a Pancreas case file: `<root>/h5/<case_id>_norm.h5` (MC-Net naming, protocol §2.3)."""
    return Path(root) / PANCREAS_DIR / f"{case_id}{PANCREAS_SUFFIX}"


def case_h5_path(root: str | Path, case_id: str) -> Path:
    """Path of a case file of the `case_h5` format: `<root>/cases/<case_id>.h5` (the `nifti` source)."""
    return Path(root) / CASE_H5_DIR / f"{case_id}.h5"


def case_path(root: str | Path, case_id: str, fmt: str) -> Path:
    """Path of a case file in the on-disk layout `fmt` of `DataConfig.format`.

    Args:
        root: the dataset root (holds `train.list` and `test.list` in every format).
        case_id: an ID from the lists.
        fmt: `la_h5` (`<root>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5`), `pancreas_h5` (`<root>/h5/<ID>_norm.h5`)
            or `case_h5` (`<root>/cases/<ID>.h5`).
    """
    if fmt == "la_h5":
        return la_case_path(root, case_id)
    if fmt == "pancreas_h5":
        return pancreas_case_path(root, case_id)
    if fmt == "case_h5":
        return case_h5_path(root, case_id)
    raise ValueError(f"fmt must be one of {FORMATS}; got {fmt!r}")


# -- h5 parsing ------------------------------------------------------------------------------------------------------
def _rebuild_fix(path: Path, manifest: Path | None) -> str:
    """The fix for a damaged or changed case file: delete it and the manifest, rerun the preparation."""
    where = manifest if manifest is not None else "the dataset's manifest.json (in its root folder)"
    return f"Delete {path} and {where}, then rerun the workflow: the preparation rules rebuild what is missing."


def _read_dataset(f: h5py.File, path: Path, name: str) -> np.ndarray:
    if name not in f:
        raise ValueError(f"{path}: no dataset {name!r} (found {sorted(f.keys())})")
    arr = f[name][...]
    if arr.ndim != 3:
        raise ValueError(f"{path}: dataset {name!r} must be 3D (x, y, z); got shape {arr.shape}")
    return arr


def _check_arrays(path: Path, image: np.ndarray, label: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Finite image, label of the image's shape with values in {0, 1}; returns (float32 image, uint8 label or None)."""
    if not np.isfinite(image).all():
        raise ValueError(f"{path}: image contains non-finite values")
    if label is None:
        return image, None
    if label.shape != image.shape:
        raise ValueError(f"{path}: label shape {label.shape} differs from image shape {image.shape}")
    if not ((label == 0) | (label == 1)).all():
        raise ValueError(f"{path}: label values must be in {{0, 1}}; found {np.unique(label)[:10].tolist()}")
    return image, label.astype(np.uint8, copy=False)


def parse_case(
    source: Path | BinaryIO, path: Path, *, with_label: bool, manifest: Path | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse one case h5 (docs/protocol.md §1.3; Pancreas files of §2.3 store the label as float32 {0., 1.}).

    Args:
        source: the file, or its bytes as a file object (`io.BytesIO`).
        path: the file's path, for messages.
        with_label: read the label too; False never reads the `label` dataset (leakage guard).
        manifest: the dataset's manifest.json, named in the fix of a damaged file (None: named generically).

    Returns:
        (image float32 (X, Y, Z), label uint8 (X, Y, Z) in {0, 1} or None).

    Raises:
        DataError: h5py cannot read the file (damaged or incomplete, e.g. truncated).
        ValueError: a dataset is missing, not 3D, of unequal shapes, non-finite (image) or not in {0, 1} (label).
    """
    try:
        with h5py.File(source, "r") as f:
            image = _read_dataset(f, path, "image").astype(np.float32, copy=False)
            label = _read_dataset(f, path, "label") if with_label else None
    except OSError as err:
        raise DataError(
            f"{path} is damaged or incomplete (h5py cannot read it: {err}). {_rebuild_fix(path, manifest)}"
        ) from err
    return _check_arrays(path, image, label)


def load_case(path: str | Path, *, with_label: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one case file, unverified (see `PreparedData.load` for the sha256-checked read).

    Args:
        path: an h5 file with datasets `image` and `label`, both (x, y, z).
        with_label: read the label too; False for unlabeled cases, whose label is never read (leakage guard).

    Returns:
        (image float32 (X, Y, Z), label uint8 (X, Y, Z) in {0, 1} or None).

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: the file is damaged or incomplete (h5py cannot read it).
        ValueError: a dataset is missing, not 3D, of unequal shapes, non-finite (image) or not in {0, 1} (label).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"case file {path} does not exist")
    return parse_case(path, path, with_label=with_label)


# -- the manifest ----------------------------------------------------------------------------------------------------
def _shown(ids: set[str] | list[str]) -> str:
    """Up to `_SHOWN_IDS` sorted IDs, and how many more."""
    ordered = sorted(ids)
    more = f" and {len(ordered) - _SHOWN_IDS} more" if len(ordered) > _SHOWN_IDS else ""
    return f"{ordered[:_SHOWN_IDS]}{more}"


def _reprepare(manifest: Path) -> str:
    return f"delete {manifest} and rerun the workflow to prepare the data again"


def _read_manifest(manifest: Path) -> tuple[dict[str, Any], str]:
    """(parsed manifest, sha256 of its bytes); DataError if it is missing, not JSON or lacks `lists`/`cases`."""
    if not manifest.is_file():
        raise DataError(
            f"{manifest} does not exist: run the data preparation first: snakemake --cores 1 {manifest} "
            f"(it writes {manifest} last, once every case is prepared and checked)"
        )
    data = manifest.read_bytes()
    try:
        content = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{manifest} is not readable JSON ({err}): {_reprepare(manifest)}") from err
    lists, cases = (content.get(k) if isinstance(content, dict) else None for k in ("lists", "cases"))
    if not (isinstance(lists, dict) and set(LISTS.values()) <= set(lists) and isinstance(cases, dict)):
        raise DataError(
            f"{manifest} has no 'lists' (sha256 of train.list and test.list) or no 'cases' (split and sha256 per "
            f"case); it was probably written by an older version of the harness: delete {manifest} and rerun the "
            "workflow, so that the preparation rules rewrite it"
        )
    return content, hashlib.sha256(data).hexdigest()


def _read_lists(root: Path, manifest: Path, digests: Mapping[str, Any]) -> dict[str, list[str]]:
    """split → IDs of `<root>/<split>.list`, checked for safe IDs and against the manifest's sha256."""
    out = {}
    for split, name in LISTS.items():
        path = root / name
        if not path.is_file():
            raise DataError(f"{path} is missing: restore it, or {_reprepare(manifest)}")
        try:
            out[split] = read_list(path)
        except ValueError as err:
            raise DataError(f"{err}; restore the list as prepared, or {_reprepare(manifest)}") from err
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != digests[name]:
            raise DataError(
                f"{path} changed after the data was prepared (sha256 {actual}, {MANIFEST} says {digests[name]}): "
                f"restore it, or {_reprepare(manifest)}"
            )
    return out


def _check_splits(manifest: Path, lists: dict[str, list[str]], cases: Mapping[str, Any]) -> None:
    """No ID in both lists; each list holds exactly the manifest's cases of its split."""
    both = set(lists["train"]) & set(lists["test"])
    if both:
        raise DataError(
            f"test-set leakage: {_shown(both)} are in both train.list and test.list beside {manifest}: a test case "
            f"must never be trained on. Correct the lists, then {_reprepare(manifest)}"
        )
    recorded = {s: {cid for cid, c in cases.items() if isinstance(c, dict) and c.get("split") == s} for s in LISTS}
    for split, ids in lists.items():
        extra, missing = set(ids) - recorded[split], recorded[split] - set(ids)
        if extra or missing:
            raise DataError(
                f"{LISTS[split]} does not match {manifest}: IDs not recorded as {split} cases: {_shown(extra)}; "
                f"{split} cases missing from the list: {_shown(missing)}. Restore the list, or {_reprepare(manifest)}"
            )
    stray = set(cases) - recorded["train"] - recorded["test"]
    if stray:
        raise DataError(
            f"{manifest} records cases without a 'train' or 'test' split: {_shown(stray)}; {_reprepare(manifest)}"
        )


def _case_digests(manifest: Path, ids: list[str], cases: Mapping[str, Any]) -> dict[str, str]:
    """ID → recorded sha256; DataError naming the cases that have none."""
    without = [cid for cid in ids if not isinstance(cases[cid].get("sha256"), str)]
    if without:
        raise DataError(
            f"{manifest} records no sha256 for the cases {_shown(without)}; it was probably written by an older "
            f"version of the harness: {_reprepare(manifest)}"
        )
    return {cid: cases[cid]["sha256"] for cid in ids}


def _spacing_mm(manifest: Path, content: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """The manifest's optional `spacing_mm` (3 positive finite numbers, x y z), None when absent."""
    value = content.get("spacing_mm")
    if value is None:
        return None
    numbers = isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not (numbers and len(value) == 3 and all(np.isfinite(v) and v > 0 for v in value)):
        raise DataError(
            f"{manifest}: 'spacing_mm' must be 3 positive numbers (x, y, z, mm); got {value!r}: {_reprepare(manifest)}"
        )
    return (float(value[0]), float(value[1]), float(value[2]))


@dataclass(frozen=True)
class PreparedData:
    """A prepared dataset whose lists were checked against its manifest; `load` verifies each case file's sha256.

    Attributes:
        root: the dataset root.
        format: the on-disk layout, "la_h5", "pancreas_h5" or "case_h5" (see `case_path`).
        manifest_sha256: sha256 of the manifest.json bytes (the data's identity in provenance).
        train_ids: train.list IDs in file order.
        test_ids: test.list IDs in file order.
        case_sha256: ID → sha256 of the case file recorded at preparation (read-only).
        spacing_mm: the voxel size (x, y, z) in mm shared by every case, from the manifest's optional "spacing_mm"
            (None when the manifest has none).
    """

    root: Path
    format: str
    manifest_sha256: str
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    case_sha256: Mapping[str, str]
    spacing_mm: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "train_ids", tuple(self.train_ids))
        object.__setattr__(self, "test_ids", tuple(self.test_ids))
        object.__setattr__(self, "case_sha256", MappingProxyType(dict(self.case_sha256)))
        if self.spacing_mm is not None:
            object.__setattr__(self, "spacing_mm", tuple(float(v) for v in self.spacing_mm))

    def __reduce__(self) -> tuple[type, tuple]:
        """Pickle support (process pools): the read-only mapping travels as a plain dict."""
        fields = (self.root, self.format, self.manifest_sha256, self.train_ids, self.test_ids, dict(self.case_sha256))
        return type(self), (*fields, self.spacing_mm)

    @classmethod
    def open(cls, root: str | Path, fmt: str) -> PreparedData:
        """Read `<root>/manifest.json` and check the two lists against it.

        Args:
            root: the dataset root (manifest.json, train.list, test.list, the case files).
            fmt: the configured on-disk layout (`DataConfig.format`); must equal the manifest's `format` if it has one.

        Raises:
            DataError: the manifest is missing, unreadable or of an older version; a list is missing, holds an unsafe
                ID or changed after preparation; an ID is in both lists; the lists' IDs differ from the manifest's
                cases per split; a case has no sha256; the formats differ; `spacing_mm` is not 3 positive numbers.
                Each message names the file and the fix.
        """
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {FORMATS}; got {fmt!r}")
        root = Path(root)
        manifest = root / MANIFEST
        content, digest = _read_manifest(manifest)
        recorded = content.get("format")
        if recorded is not None and recorded != fmt:
            raise DataError(
                f"{manifest} records format {recorded!r}, the configuration says {fmt!r}: set data.<dataset>.format "
                f"to {recorded!r}, or {_reprepare(manifest)}"
            )
        lists = _read_lists(root, manifest, content["lists"])
        _check_splits(manifest, lists, content["cases"])
        digests = _case_digests(manifest, lists["train"] + lists["test"], content["cases"])
        spacing = _spacing_mm(manifest, content)
        return cls(root, fmt, digest, tuple(lists["train"]), tuple(lists["test"]), digests, spacing)

    def with_test_cases(self, cases: list[str]) -> PreparedData:
        """The same data with only `cases` (IDs of test.list, in their list order) as its test cases."""
        unknown = [c for c in cases if c not in self.test_ids]
        if unknown:
            raise DataError(
                f"{unknown} are not test cases of {self.root} (test.list holds {', '.join(self.test_ids)}): "
                "give IDs of test.list"
            )
        return dataclasses.replace(self, test_ids=tuple(c for c in self.test_ids if c in cases))

    def path(self, case_id: str) -> Path:
        """The case file of `case_id`; DataError if the manifest has no such case (unknown IDs never become paths)."""
        if case_id not in self.case_sha256:
            raise DataError(
                f"case {case_id!r} is not in the prepared dataset {self.root} ({self.root / MANIFEST} records "
                f"{len(self.case_sha256)} cases): use an ID of train.list or test.list"
            )
        return case_path(self.root, case_id, self.format)

    def load(self, case_id: str, *, with_label: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Read a case file once, check its sha256 against the manifest, then parse it from the bytes in memory.

        Args:
            case_id: an ID of train.list or test.list.
            with_label: read the label too; False never decodes the `label` dataset (leakage guard: its compressed
                bytes are hashed with the rest of the file, but never parsed into an array).

        Returns:
            (image float32 (X, Y, Z), label uint8 (X, Y, Z) in {0, 1} or None), as `load_case`.

        Raises:
            DataError: unknown ID; the file is missing, changed after preparation (sha256) or damaged.
            ValueError: the file's content fails the checks of `parse_case`.
        """
        path, manifest = self.path(case_id), self.root / MANIFEST
        if not path.is_file():
            raise DataError(
                f"{path} is missing (case {case_id} of {manifest}). Delete {manifest}, then rerun the workflow: "
                "the preparation rules rebuild what is missing."
            )
        data = path.read_bytes()
        actual, expected = hashlib.sha256(data).hexdigest(), self.case_sha256[case_id]
        if actual != expected:
            raise DataError(
                f"{path} changed after the data was prepared (sha256 {actual}, {MANIFEST} says {expected}): the "
                f"numbers would not be those of the prepared dataset. {_rebuild_fix(path, manifest)}"
            )
        return parse_case(io.BytesIO(data), path, with_label=with_label, manifest=manifest)
