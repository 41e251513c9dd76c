"""Left Atrium (2018 Atrial Segmentation Challenge): fetch the released h5 files, or preprocess the raw nrrd.

Sources (docs/protocol.md §1):

* `released_h5` (default, §1.2): the 100 `mri_norm2.h5` files and the two lists that yulequan/UA-MT committed at
  `88ed29ad794f877122e542a7fa9505a76fa83515`, each checked against the byte count and sha256 of the project's
  manifest (`manifests/la_manifest.csv`, see its README) and the pinned list sha256 values.
* `raw_nrrd` (§1.5): `<raw_root>/<ID>/lgemri.nrrd` + `laendo.nrrd` preprocessed as UA-MT's
  `la_heart_processing.py` does (§1.4), except that the crop margins come from a generator seeded with a global seed
  and the case ID; the margins are written to `raw_margins/<ID>.json`. QA: z = 88 and the label sum equals
  `fg_voxels` of the manifest. The lists are rebuilt from the manifest (their sha256 is checked).

Both write the released layout (`<root>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5`, `train.list`, `test.list`) and
end with `<root>/manifest.json`, whose content depends only on the data (no time stamps, no URLs), so its sha256
identifies the data in every run's provenance.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.case_files import write_h5
from harness.data.download import (
    DataError,
    fetch_url,
    join_url,
    missing_case_files,
    sha256_file,
    verify_file,
    write_list,
)
from harness.data.prepared import H5_NAME, TRAINING_DIR, la_case_path
from harness.data.splits import read_list
from harness.io import write_json_atomic

logger = logging.getLogger(__name__)

REPOSITORY, COMMIT = "yulequan/UA-MT", "88ed29ad794f877122e542a7fa9505a76fa83515"
#: sha256 of the released list files (protocol §1.2).
LIST_SHA256 = {
    "train.list": "e88c3f0bae70edcca4bc16eca890673eee2bf3f7b74418249cb01b8cde2f924e",
    "test.list": "e55b18069e27d6eab3dc21b8d1dc05a99ef83110fedc789f81c461d7bb152199",
}
MANIFEST_CSV = Path(__file__).resolve().parent / "manifests" / "la_manifest.csv"
#: The released layout; the same constants as harness.data.dataset (not imported: that module imports torch, and
#: every download job would pay for it; tests/data/test_la_data.py checks that both agree).
PATCH = (112, 112, 80)  # the patch size the crop padding aims at (la_heart_processing.py output_size)
XY_MARGIN, Z_MARGIN = (10, 20), (5, 10)  # margins drawn as rng.integers(lo, hi): 10-19 and 5-9 voxels
Z_SIZE = 88  # every LA MRI has 88 slices (protocol §1.1)


@dataclass(frozen=True)
class LaCase:
    """One row of the project's LA manifest."""

    id: str
    split: str
    index: int
    role: str
    shape: tuple[int, int, int]
    fg_voxels: int
    bytes: int
    sha256: str


def read_manifest(path: str | Path = MANIFEST_CSV) -> dict[str, LaCase]:
    """The LA manifest: case ID → `LaCase`, in file order (100 rows for the project's copy)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        r["id"]: LaCase(
            r["id"],
            r["split"],
            int(r["index"]),
            r["role"],
            (int(r["shape_x"]), int(r["shape_y"]), int(r["shape_z"])),
            int(r["fg_voxels"]),
            int(r["bytes"]),
            r["sha256"],
        )
        for r in rows
    }


def manifest_lists(cases: dict[str, LaCase]) -> dict[str, list[str]]:
    """`{"train.list": [...], "test.list": [...]}` in list order (the manifest's `index` column)."""
    return {
        f"{split}.list": [c.id for c in sorted((c for c in cases.values() if c.split == split), key=lambda c: c.index)]
        for split in ("train", "test")
    }


def manifest_case(cases: dict[str, LaCase], case_id: str) -> LaCase:
    """The manifest row of `case_id`; DataError (a ValueError) naming it if the manifest has no such case."""
    if case_id not in cases:
        raise DataError(f"case_id {case_id!r} is not one of the {len(cases)} LA cases of {MANIFEST_CSV.name}")
    return cases[case_id]


def case_url(base_url: str, case_id: str) -> str:
    """`<base_url>/2018LA_Seg_Training%20Set/<ID>/mri_norm2.h5` (the space percent-encoded for remote URLs)."""
    return join_url(base_url, TRAINING_DIR, case_id, H5_NAME)


def fetch_case(root: str | Path, case_id: str, base_url: str, *, retries: int = 3, progress: bool = True) -> Path:
    """Download and verify one released case into `<root>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5`.

    Raises:
        ValueError: unknown ID. DownloadError / ChecksumError: see `harness.data.download.fetch_url`.
    """
    case = manifest_case(read_manifest(), case_id)
    return fetch_url(
        case_url(base_url, case_id),
        la_case_path(root, case_id),
        what=f"LA case {case_id}",
        sha256=case.sha256,
        size=case.bytes,
        retries=retries,
        progress=progress,
    )


def fetch_lists(root: str | Path, base_url: str, *, retries: int = 3, progress: bool = False) -> list[Path]:
    """Download `train.list` and `test.list` into `root`, each checked against its pinned sha256."""
    return [
        fetch_url(
            join_url(base_url, name),
            Path(root) / name,
            what=f"LA {name}",
            sha256=digest,
            retries=retries,
            progress=progress,
        )
        for name, digest in LIST_SHA256.items()
    ]


def write_lists_from_manifest(root: str | Path) -> list[Path]:
    """Write `train.list`/`test.list` rebuilt from the manifest and check them against the pinned sha256."""
    paths = []
    for name, ids in manifest_lists(read_manifest()).items():
        path = write_list(Path(root) / name, ids)
        try:
            verify_file(path, what=f"LA {name}", url=str(MANIFEST_CSV), sha256=LIST_SHA256[name])
        except DataError:
            path.unlink()
            raise
        paths.append(path)
    return paths


def _list_ids(root: Path) -> dict[str, list[str]]:
    return {name: read_list(root / name) for name in LIST_SHA256}


def write_manifest(
    root: str | Path, *, source: str, crop_seed: int | None = None, list_sha256: dict[str, str] | None = None
) -> dict[str, Any]:
    """Verify a complete LA root and write `<root>/manifest.json` (last, atomically).

    Checks: both lists have their pinned sha256; every listed ID is a manifest case with a file; `released_h5`
    files match their byte count and sha256; `raw_nrrd` files have their margin record.

    Args:
        root: the dataset root.
        source: `released_h5` or `raw_nrrd`.
        crop_seed: the margin seed (raw_nrrd only).
        list_sha256: the lists' expected sha256 (default: the pinned public lists, `LIST_SHA256`).

    Returns:
        The manifest written.
    """
    if source not in ("released_h5", "raw_nrrd"):
        raise ValueError(f"source must be 'released_h5' or 'raw_nrrd'; got {source!r}")
    root, cases = Path(root), read_manifest()
    list_sha256 = LIST_SHA256 if list_sha256 is None else list_sha256
    for name, digest in list_sha256.items():
        verify_file(root / name, what=f"LA {name}", url=str(root / name), sha256=digest)
    lists = _list_ids(root)
    ids = lists["train.list"] + lists["test.list"]
    missing_case_files(root, ids, la_case_path)
    entries = {}
    for cid in ids:
        case, path = manifest_case(cases, cid), la_case_path(root, cid)
        if source == "released_h5":
            verify_file(path, what=f"LA case {cid}", url=str(path), sha256=case.sha256, size=case.bytes)
            entries[cid] = {"split": case.split, "bytes": case.bytes, "sha256": case.sha256}
        else:
            margins = root / "raw_margins" / f"{cid}.json"
            if not margins.is_file():
                raise DataError(f"LA case {cid}: {margins} is missing; preprocess the raw case again")
            entries[cid] = {"split": case.split, "sha256": sha256_file(path), "margins_sha256": sha256_file(margins)}
    manifest = {
        "dataset": "la",
        "source": source,
        "la_source": source,
        "format": "la_h5",
        "split": "",
        "origin": {"repository": REPOSITORY, "commit": COMMIT} if source == "released_h5" else {"crop_seed": crop_seed},
        "n_train": len(lists["train.list"]),
        "n_test": len(lists["test.list"]),
        "lists": dict(list_sha256),
        "cases": entries,
    }
    write_json_atomic(root / "manifest.json", manifest)
    logger.info("LA (%s): %d cases verified; wrote %s", source, len(entries), root / "manifest.json")
    return manifest


# -- raw nrrd (protocol §1.4, §1.5) ---------------------------------------------------------------------------------
def draw_margins(case_id: str, seed: int) -> dict[str, int]:
    """Crop margins of one case from `default_rng([seed, <first 8 bytes of sha256(case_id)>])`.

    Draw order as in la_heart_processing.py: x low, x high, y low, y high (each 10-19), z low, z high (each 5-9;
    drawn but never applied, §1.4 step 4).
    """
    word = int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "little")
    rng = np.random.default_rng([int(seed), word])
    xy = [int(rng.integers(*XY_MARGIN)) for _ in range(4)]
    z = [int(rng.integers(*Z_MARGIN)) for _ in range(2)]
    return dict(zip(("x_lo", "x_hi", "y_lo", "y_hi", "z_lo", "z_hi"), xy + z, strict=True))


def crop_box(label: np.ndarray, margins: dict[str, int]) -> tuple[slice, slice]:
    """x/y crop of §1.4 steps 2-4: bbox ± (margin + pad), pad = max(patch − extent, 0) // 2, clipped to the volume.

    The upper ends are exclusive slice ends, as in the reference (max index + margin + pad).
    """
    nz = np.nonzero(label)
    (x0, x1), (y0, y1) = (int(nz[0].min()), int(nz[0].max())), (int(nz[1].min()), int(nz[1].max()))
    px, py = max(PATCH[0] - (x1 - x0), 0) // 2, max(PATCH[1] - (y1 - y0), 0) // 2
    w, h = label.shape[:2]
    xs = slice(max(x0 - margins["x_lo"] - px, 0), min(x1 + margins["x_hi"] + px, w))
    ys = slice(max(y0 - margins["y_lo"] - py, 0), min(y1 + margins["y_hi"] + py, h))
    return xs, ys


def _read_raw(raw_dir: Path, case_id: str, z_size: int) -> tuple[np.ndarray, np.ndarray]:
    import nrrd

    paths = [raw_dir / "lgemri.nrrd", raw_dir / "laendo.nrrd"]
    for p in paths:
        if not p.is_file():
            raise DataError(f"LA case {case_id}: {p} is missing (expected <raw_root>/<ID>/lgemri.nrrd and laendo.nrrd)")
    image, _ = nrrd.read(str(paths[0]))  # index order F: (x, y, z)
    mask, _ = nrrd.read(str(paths[1]))
    if image.shape != mask.shape or image.ndim != 3:
        raise DataError(f"LA case {case_id}: image shape {image.shape} and mask shape {mask.shape} must be equal, 3D")
    if image.shape[2] != z_size:
        raise DataError(f"LA case {case_id}: {image.shape[2]} slices, expected {z_size} (protocol §1.1)")
    if not np.isfinite(image).all():
        raise DataError(f"LA case {case_id}: {paths[0]} contains non-finite values")
    return image, (mask == 255).astype(np.uint8)  # 255 = LA (protocol §1.1)


def preprocess_raw_case(
    raw_dir: str | Path, root: str | Path, case_id: str, *, seed: int, expected_fg: int | None, z_size: int = Z_SIZE
) -> dict[str, Any]:
    """UA-MT preprocessing of one raw case with seeded margins; writes the h5 file and `raw_margins/<ID>.json`.

    Steps (§1.4): binarise the mask (== 255); z-score the whole uncropped image (mean/std over all voxels); crop x
    and y with `crop_box`; keep all z slices; write gzip `image` float32 and `label` uint8 (x, y, z).

    Args:
        raw_dir: `<raw_root>/<ID>` holding `lgemri.nrrd` and `laendo.nrrd`.
        root: the dataset root.
        case_id: the case ID (also seeds the margins).
        seed: the global margin seed (`data.<ds>.raw_nrrd.crop_seed`).
        expected_fg: foreground voxels the label must keep (`fg_voxels` of the manifest; None skips the check).
        z_size: required number of slices (88 for LA).

    Returns:
        The margin record (also written to `<root>/raw_margins/<ID>.json`).
    """
    image, label = _read_raw(Path(raw_dir), case_id, z_size)
    if not label.any():
        raise DataError(f"LA case {case_id}: the mask has no voxel equal to 255")
    margins = draw_margins(case_id, seed)
    xs, ys = crop_box(label, margins)
    norm = ((image - image.mean()) / image.std()).astype(np.float32)
    image_c, label_c = norm[xs, ys], label[xs, ys]
    if expected_fg is not None and int(label_c.sum()) != expected_fg:
        raise DataError(f"LA case {case_id}: label has {int(label_c.sum())} voxels, the manifest says {expected_fg}")
    write_h5(la_case_path(root, case_id), image_c, label_c)
    record = {
        "case": case_id,
        "seed": seed,
        "margins": margins,
        "crop_x": [xs.start, xs.stop],
        "crop_y": [ys.start, ys.stop],
        "raw_shape": list(image.shape),
        "shape": list(image_c.shape),
        "fg_voxels": int(label_c.sum()),
    }
    write_json_atomic(Path(root) / "raw_margins" / f"{case_id}.json", record)
    logger.info(
        "LA case %s: margins %s, crop x %s y %s -> %s",
        case_id,
        margins,
        record["crop_x"],
        record["crop_y"],
        record["shape"],
    )
    return record
