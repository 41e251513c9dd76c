"""A dataset in the Medical Segmentation Decathlon (MSD) or nnU-Net v2 raw layout as the DAG sees it when it is
built: the `data.<ds>.nifti` settings, the labeled cases (from dataset.json and file names only: no image is opened)
and the train/test split (a function of the case IDs and the `test` settings, never of a training seed).

Input layouts (`layout: auto` tells them apart by dataset.json's keys):

* MSD: `<root>/dataset.json` with `"training": [{"image": "./imagesTr/<case>.nii.gz", "label":
  "./labelsTr/<case>.nii.gz"}, ...]` and `"labels": {"0": "background", "1": ...}` (values as strings); case ID = the
  image file name without `.nii.gz`; a multi-channel image holds its channels on the 4th axis.
* nnU-Net v2 raw: `<root>/dataset.json` with `"channel_names"`, `"labels": {"background": 0, ...}` (values as ints),
  `"numTraining"` and `"file_ending"`; `labelsTr/<case><ending>` and one `imagesTr/<case>_<XXXX><ending>` per channel.

`imagesTr/` and `labelsTr/` give the labeled cases; `imagesTs/` (images without labels) is never read. No torch, no
image library: `harness.workflow.grid` imports this module when the DAG is built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.config import ConfigError
from harness.data.download import DataError
from harness.data.splits import SAFE_CASE_ID, SAFE_CASE_ID_RULE

LAYOUTS = ("msd", "nnunet")
LAYOUTS = ("msd", "nnunet")
MODALITIES = ("mri", "ct")
MODALITIES = ("mri", "ct")
DATASET_JSON = "dataset.json"
QA_DIR = "qa"
NIFTI_ENDINGS = (".nii.gz", ".nii")
NIFTI_ENDINGS = (".nii.gz", ".nii")
#: dataset.json keys each layout needs.
REQUIRED_KEYS = {"msd": ("training", "labels"), "nnunet": ("channel_names", "labels", "numTraining", "file_ending")}
SPACING_DECIMALS = 6
_BLOCK_KEYS = ("root", "layout", "foreground", "modality", "target_spacing", "test", "channel")
_BLOCK_KEYS = ("root", "layout", "foreground", "modality", "target_spacing", "test", "channel")
_TEST_KEYS = ("fraction", "seed", "list")
_TEST_KEYS = ("fraction", "seed", "list")
_SHOWN = 10  # values named in an error message


# -- settings --------------------------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and bool(np.isfinite(value))


def _foreground(value: Any) -> tuple[int, ...]:
    """`foreground` as a sorted tuple of label values >= 1; ConfigError naming the key otherwise."""
    values = [value] if _is_int(value) else value
    if not (isinstance(values, Sequence) and not isinstance(values, str) and values and all(map(_is_int, values))):
        raise ConfigError(f"nifti.foreground: give the label values of the foreground, e.g. [1]; got {value!r}")
    if min(values) < 1:
        raise ConfigError(f"nifti.foreground: label value 0 is the background; got {list(values)}")
    return tuple(sorted({int(v) for v in values}))


def _target_spacing(value: Any) -> tuple[float, float, float]:
    """`target_spacing` as 3 positive floats (x, y, z mm); ConfigError naming the key otherwise."""
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3
    if not (ok and all(_is_number(v) and v > 0 for v in value)):
        raise ConfigError(f"nifti.target_spacing: null or 3 positive numbers [x, y, z] in mm; got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


@dataclass(frozen=True)
class NiftiSettings:
    """The `data.<dataset>.nifti` block of the configuration, checked on construction (ConfigError naming the key).

    Attributes:
        root: the dataset folder (dataset.json, imagesTr/, labelsTr/).
        layout: `auto` (from dataset.json's keys), `msd` or `nnunet`.
        foreground: the label values that form the foreground of the binary task (the others become 0).
        modality: `mri` (per-case z-score) or `ct` (dataset-level clipping and z-score, nnU-Net's CT scheme).
        target_spacing: voxel size (x, y, z) in mm of the prepared cases; None: the per-axis median of the training
            cases' spacings.
        test_fraction: share of the cases in the test set (when `test_list` is None).
        test_seed: seed of the permutation that draws the test set (independent of every training seed).
        test_list: a file with the test case IDs, one per line (replaces fraction and seed).
        channel: which channel of a multi-channel image (MSD: index on the 4th axis; nnU-Net: the `_000<i>` file);
            None for single-channel datasets.
    """

    root: Path
    layout: str = "auto"
    foreground: tuple[int, ...] = (1,)
    modality: str = "mri"
    target_spacing: tuple[float, float, float] | None = None
    test_fraction: float = 0.2
    test_seed: int = 0
    test_list: Path | None = None
    channel: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())
        if self.test_list is not None:
            object.__setattr__(self, "test_list", Path(self.test_list).expanduser())
        if self.layout not in ("auto", *LAYOUTS):
            raise ConfigError(f"nifti.layout: one of auto, {', '.join(LAYOUTS)}; got {self.layout!r}")
        if self.modality not in MODALITIES:
            raise ConfigError(f"nifti.modality: one of {', '.join(MODALITIES)}; got {self.modality!r}")
        object.__setattr__(self, "foreground", _foreground(self.foreground))
        if self.target_spacing is not None:
            object.__setattr__(self, "target_spacing", _target_spacing(self.target_spacing))
        if not (_is_number(self.test_fraction) and 0 < self.test_fraction < 1):
            raise ConfigError(f"nifti.test.fraction: a number between 0 and 1 (exclusive); got {self.test_fraction!r}")
        if not (_is_int(self.test_seed) and self.test_seed >= 0):
            raise ConfigError(f"nifti.test.seed: an integer >= 0; got {self.test_seed!r}")
        if self.channel is not None and not (_is_int(self.channel) and self.channel >= 0):
            raise ConfigError(f"nifti.channel: null or an integer >= 0 (the channel index); got {self.channel!r}")

    @classmethod
    def from_block(cls, block: Mapping[str, Any]) -> NiftiSettings:
        """Settings from the YAML block (`test: {fraction, seed}` or `test: {list}`); a key set to null = its default.

        Raises:
            ConfigError: an unknown key, a missing `root`, `test` with both `list` and `fraction`/`seed`, or a bad value
                (each message names the key).
        """
        if not isinstance(block, Mapping):
            raise ConfigError(f"nifti: a mapping with the keys {', '.join(_BLOCK_KEYS)}; got {block!r}")
        unknown = sorted(set(block) - set(_BLOCK_KEYS))
        if unknown:
            raise ConfigError(f"nifti: unknown key(s) {unknown}; the known keys are {', '.join(_BLOCK_KEYS)}")
        if not block.get("root"):
            raise ConfigError("nifti.root: required: the folder holding dataset.json, imagesTr/ and labelsTr/")
        test = block.get("test") or {}
        if not isinstance(test, Mapping) or set(test) - set(_TEST_KEYS):
            raise ConfigError(f"nifti.test: {{fraction: 0.2, seed: 0}} or {{list: path/to/test.txt}}; got {test!r}")
        if test.get("list") is not None and (test.get("fraction") is not None or test.get("seed") is not None):
            raise ConfigError("nifti.test: give either `list` or `fraction`/`seed`, not both")
        given = {k: block.get(k) for k in ("layout", "foreground", "modality", "target_spacing", "channel")}
        given |= {"test_fraction": test.get("fraction"), "test_seed": test.get("seed"), "test_list": test.get("list")}
        return cls(root=Path(block["root"]), **{k: v for k, v in given.items() if v is not None})

    def to_block(self) -> dict[str, Any]:
        """The YAML block of these settings (JSON-ready; `from_block(to_block())` gives them back)."""
        test = (
            {"list": str(self.test_list)}
            if self.test_list
            else {"fraction": self.test_fraction, "seed": self.test_seed}
        )
        return {
            "root": str(self.root),
            "layout": self.layout,
            "foreground": list(self.foreground),
            "modality": self.modality,
            "target_spacing": list(self.target_spacing) if self.target_spacing else None,
            "test": test,
            "channel": self.channel,
        }


# -- finding the cases (dataset.json and file names only) ------------------------------------------------------------
@dataclass(frozen=True)
class SourceCase:
    """A labeled training case of the source dataset: its ID, the image file to read and the label file."""

    case_id: str
    image: Path
    label: Path


def read_dataset_json(root: Path) -> dict[str, Any]:
    """`<root>/dataset.json`; DataError naming the folder or file and the fix when either is missing or unreadable."""
    path = Path(root) / DATASET_JSON
    if not Path(root).is_dir():
        raise DataError(f"nifti.root: {root} is not a folder; set it to the dataset folder (dataset.json, imagesTr/)")
    if not path.is_file():
        raise DataError(f"{path} does not exist: nifti.root must be an MSD or nnU-Net v2 raw dataset folder")
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not readable JSON ({err}); correct or restore the file") from err
    if not isinstance(meta, dict):
        raise DataError(f"{path} must hold a JSON object; got {type(meta).__name__}")
    return meta


def detect_layout(meta: Mapping[str, Any], settings: NiftiSettings) -> str:
    """The layout: the configured one, or `msd` (a `training` list) / `nnunet` (`channel_names`, `file_ending`).

    Raises:
        DataError: dataset.json lacks a key the layout needs, or `auto` finds both layouts' keys or neither.
    """
    path = settings.root / DATASET_JSON
    layout = settings.layout
    if layout == "auto":
        msd, nnunet = "training" in meta, "channel_names" in meta or "file_ending" in meta
        if msd == nnunet:
            found = "keys of both layouts" if msd else "neither a 'training' list (MSD) nor 'channel_names' (nnU-Net)"
            raise DataError(f"{path}: cannot tell the layout ({found}); set nifti.layout to msd or nnunet")
        layout = "msd" if msd else "nnunet"
    missing = [k for k in REQUIRED_KEYS[layout] if k not in meta]
    if missing:
        raise DataError(
            f"{path}: the {layout} layout needs the keys {missing}, which this file lacks; correct dataset.json, or "
            f"set nifti.layout to the dataset's layout ({', '.join(LAYOUTS)})"
        )
    return layout


def _case_id(file: Path, ending: str, where: str) -> str:
    """The case ID of a file (its name without `ending`); DataError naming the file unless it is a safe ID."""
    case_id = file.name[: -len(ending)]
    if not SAFE_CASE_ID.fullmatch(case_id):
        raise DataError(
            f"{where}: {file} gives the case ID {case_id!r}, which is not a safe ID ({SAFE_CASE_ID_RULE}); rename "
            "the file (and its dataset.json entry)"
        )
    return case_id


def _nifti_ending(name: str, where: str) -> str:
    """The NIfTI ending of a file name; DataError naming the entry for any other file type."""
    for ending in NIFTI_ENDINGS:
        if name.endswith(ending):
            return ending
    raise DataError(f"{where}: {name} is not a NIfTI file ({' or '.join(NIFTI_ENDINGS)})")


def _check_channel(names: Any, settings: NiftiSettings, where: str) -> None:
    """The configured channel against dataset.json's channel list (MSD `modality`, nnU-Net `channel_names`)."""
    if not isinstance(names, Mapping) or not names:
        return
    shown = ", ".join(f"{k}: {v}" for k, v in names.items())
    if settings.channel is None and len(names) > 1:
        raise DataError(
            f"{where} lists {len(names)} channels ({shown}); set nifti.channel to the index of the one to use"
        )
    if settings.channel is not None and settings.channel >= len(names):
        raise DataError(f"nifti.channel = {settings.channel}, but {where} lists {len(names)} channel(s) ({shown})")


def _msd_cases(meta: Mapping[str, Any], settings: NiftiSettings) -> list[SourceCase]:
    """The `training` entries of an MSD dataset.json; DataError naming the entry for a bad, duplicate or missing one."""
    path = settings.root / DATASET_JSON
    _check_channel(meta.get("modality"), settings, f"{path} ('modality')")
    cases, seen = [], {}
    for index, entry in enumerate(meta["training"]):
        where = f"{path}, training[{index}]"
        if not (
            isinstance(entry, dict) and isinstance(entry.get("image"), str) and isinstance(entry.get("label"), str)
        ):
            raise DataError(
                f"{where}: an entry is {{'image': './imagesTr/<case>.nii.gz', 'label': "
                f"'./labelsTr/<case>.nii.gz'}}; got {entry!r}"
            )
        image, label = settings.root / entry["image"], settings.root / entry["label"]
        case_id = _case_id(image, _nifti_ending(image.name, where), where)
        if case_id in seen:
            raise DataError(
                f"{where}: duplicate case {case_id!r} (training[{seen[case_id]}] has the same image file name "
                f"{image.name}); remove one of the two entries from dataset.json"
            )
        for kind, file in (("image", image), ("label", label)):
            if not file.is_file():
                raise DataError(
                    f"{where} (case {case_id}): the {kind} file {file} does not exist; restore the file "
                    "or remove the entry from dataset.json"
                )
        seen[case_id] = index
        cases.append(SourceCase(case_id, image, label))
    return cases


def _nnunet_cases(meta: Mapping[str, Any], settings: NiftiSettings) -> list[SourceCase]:
    """The cases of `labelsTr/` with the image file of the configured channel; DataError naming a missing file."""
    path = settings.root / DATASET_JSON
    ending = meta["file_ending"]
    if ending not in NIFTI_ENDINGS:
        raise DataError(f"{path}: file_ending {ending!r} is not NIfTI; the nifti source reads {NIFTI_ENDINGS}")
    if "dataset" in meta:
        raise DataError(
            f"{path}: the 'dataset' key (explicit file lists) is not supported; use the imagesTr/ and labelsTr/ folders"
        )
    _check_channel(meta["channel_names"], settings, f"{path} ('channel_names')")
    channel = settings.channel or 0
    labels_dir = settings.root / "labelsTr"
    if not labels_dir.is_dir():
        raise DataError(f"{labels_dir} does not exist: an nnU-Net v2 raw dataset keeps its labels there")
    cases = []
    for label in sorted(p for p in labels_dir.iterdir() if p.name.endswith(ending) and not p.name.startswith(".")):
        case_id = _case_id(label, ending, "nnU-Net label")
        image = settings.root / "imagesTr" / f"{case_id}_{channel:04d}{ending}"
        if not image.is_file():
            raise DataError(
                f"nnU-Net case {case_id}: {label} has no image {image} (channel {channel}); restore the "
                "file or remove the label"
            )
        cases.append(SourceCase(case_id, image, label))
    if meta["numTraining"] != len(cases):
        raise DataError(
            f"{path} says numTraining = {meta['numTraining']}, but {labels_dir} holds {len(cases)} "
            f"label files ending in {ending}; restore the missing files or correct numTraining"
        )
    return cases


def find_cases(settings: NiftiSettings) -> tuple[str, list[SourceCase]]:
    """(layout, every labeled training case in case-ID order), from dataset.json and file names only.

    No image is opened: the DAG calls this when it is built, so it is fast and torch-free.

    Raises:
        DataError: no dataset folder or dataset.json; the layout cannot be told; an entry points to a missing file; a
            duplicate case; an unsafe case ID; a multi-channel dataset without `channel`; no case at all.
    """
    meta = read_dataset_json(settings.root)
    layout = detect_layout(meta, settings)
    cases = _msd_cases(meta, settings) if layout == "msd" else _nnunet_cases(meta, settings)
    if not cases:
        raise DataError(f"{settings.root / DATASET_JSON}: the {layout} dataset has no labeled training case")
    return layout, sorted(cases, key=lambda c: c.case_id)


def label_values(meta: Mapping[str, Any], layout: str, path: Path) -> list[int]:
    """The label values dataset.json (`path`) declares (MSD: the keys of `labels`; nnU-Net v2: its values, regions
    included); DataError naming the file for anything else."""
    labels = meta["labels"]
    if not isinstance(labels, Mapping):
        raise DataError(f"{path}: 'labels' must be a mapping; got {labels!r}")
    raw = list(labels) if layout == "msd" else list(labels.values())
    values: set[int] = set()
    for item in raw:
        for v in item if isinstance(item, list) else [item]:
            if not (_is_int(v) or (isinstance(v, str) and v.strip().isdigit())):
                raise DataError(f"{path}: 'labels' holds {v!r}, not a label value (an integer); correct the file")
            values.add(int(v))
    return sorted(values)


# -- the split -------------------------------------------------------------------------------------------------------
def _read_test_list(path: Path, known: set[str]) -> set[str]:
    """The IDs of a test list file; DataError naming the file and line for an unknown or repeated ID."""
    if not path.is_file():
        raise DataError(f"nifti.test.list: {path} does not exist")
    test: set[str] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        case_id = line.strip()
        if not case_id:
            continue
        if case_id not in known:
            raise DataError(
                f"test list {path}, line {number}: {case_id!r} is not a labeled case of the dataset "
                f"(e.g. {sorted(known)[:3]}); correct that line"
            )
        if case_id in test:
            raise DataError(f"test list {path}, line {number}: {case_id!r} is listed twice; remove one line")
        test.add(case_id)
    if not test:
        raise DataError(f"test list {path} holds no case ID; list the test cases, one per line")
    return test


def split_cases(case_ids: list[str], settings: NiftiSettings) -> tuple[list[str], list[str]]:
    """(train IDs, test IDs), each sorted; deterministic and independent of every training seed.

    With `test_list`: those IDs are the test set. Otherwise the sorted IDs are permuted by
    `numpy.random.default_rng(test_seed)` and the first `max(1, round(test_fraction * n))` form the test set.

    Raises:
        DataError: fewer than 2 cases; an ID of the test list that is not a case (file and line named); a split that
            leaves no training case.
    """
    ids = sorted(set(case_ids))
    if settings.test_list is not None:
        test = _read_test_list(settings.test_list, set(ids))
    else:
        if len(ids) < 2:
            raise DataError(f"a train/test split needs at least 2 labeled cases; the dataset has {len(ids)}")
        order = np.random.default_rng(settings.test_seed).permutation(len(ids))
        test = {ids[i] for i in order[: max(1, round(settings.test_fraction * len(ids)))]}
    train = [i for i in ids if i not in test]
    if not train:
        raise DataError(
            f"the test set takes all {len(ids)} cases, none is left for training; lower "
            "nifti.test.fraction or shorten nifti.test.list"
        )
    return train, sorted(test)
