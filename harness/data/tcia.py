"""NIH Pancreas-CT from TCIA: the public NBIA REST API, local DICOM copies, DICOM series reading, the label archive.

NBIA Search REST API v1 (public collections, no login; base URL = `data.<ds>.tcia.api_url`):

* `GET <api_url>/getSeries?Collection=Pancreas-CT` → JSON list, one object per series with `SeriesInstanceUID`,
  `PatientID` (`PANCREAS_0001` …), `Modality` and `ImageCount`.
* `GET <api_url>/getImage?SeriesInstanceUID=<uid>` → a zip of the series' DICOM files (an unknown UID may give an
  empty zip, so the file count is checked against `ImageCount`).

A local copy (e.g. from the NBIA Data Retriever) is used instead where `dicom_root` holds `PANCREAS_<nnnn>/`
(directly or under `Pancreas-CT/`). DICOM reading is MC-Net's step A (docs/protocol.md §2.3): keep
`Modality == 'CT'`, sort by `InstanceNumber`, HU = pixel × RescaleSlope (only if ≠ 1) + RescaleIntercept, float32,
stacked as (z, y, x); the harness adds checks for missing and irregular slices.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import numpy as np

from harness.data.download import (
    DataError,
    DownloadError,
    ManualStepRequired,
    fetch_url,
    join_url,
    safe_extract_zip,
    sha256_file,
    verify_file,
)
from harness.io import atomic_path, write_json_atomic

logger = logging.getLogger(__name__)

COLLECTION_PAGE = "https://www.cancerimagingarchive.net/collection/pancreas-ct/"
CASE_RE = re.compile(r"^image(\d{4})$")
PATIENT_RE = re.compile(r"^PANCREAS_(\d{4})$")
LABEL_RE = re.compile(r"(?:^|/)label(\d{4})\.nii\.gz$")


def case_number(case_id: str) -> str:
    """`image0007` → `0007`; ValueError for anything else (the ID reaches file names and shell commands)."""
    m = CASE_RE.match(case_id)
    if not m:
        raise ValueError(f"case_id must look like 'image0001'; got {case_id!r}")
    return m.group(1)


def patient_id(case_id: str) -> str:
    """`image0007` → `PANCREAS_0007` (TCIA's PatientID)."""
    return f"PANCREAS_{case_number(case_id)}"


# -- the series index -------------------------------------------------------------------------------------------
def list_series(api_url: str, collection: str, *, retries: int = 3, timeout: float = 60.0) -> list[dict[str, Any]]:
    """`getSeries?Collection=<collection>` as a list of dicts (empty answer → []).

    Raises:
        ManualStepRequired: TCIA refused anonymous access (HTTP 401/403). DownloadError: other failures.
    """
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    url = join_url(api_url, "getSeries")
    session = requests.Session()
    retry = Retry(total=retries, backoff_factor=1.0, status_forcelist=(500, 502, 503, 504), allowed_methods=["GET"])
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    try:
        resp = session.get(url, params={"Collection": collection, "format": "json"}, timeout=timeout)
    except requests.RequestException as err:
        raise DownloadError(f"TCIA series list: {url} failed: {err}") from err
    if resp.status_code in (401, 403):
        raise ManualStepRequired(
            f"TCIA answered HTTP {resp.status_code} for {resp.url}: the collection needs a login. Download the "
            f"{collection} DICOM series with the NBIA Data Retriever from {COLLECTION_PAGE}, set "
            "data.<dataset>.tcia.dicom_root to the folder holding PANCREAS_0001 ... PANCREAS_0082, and rerun"
        )
    if resp.status_code != 200:
        raise DownloadError(f"TCIA series list: HTTP {resp.status_code} for {resp.url}")
    try:
        return list(resp.json()) if resp.text.strip() else []
    except ValueError as err:
        raise DownloadError(f"TCIA series list: {resp.url} did not return JSON ({resp.text[:80]!r})") from err


def _tcia_cases(series: list[dict[str, Any]]) -> tuple[dict[str, dict], list[dict]]:
    """CT series per case (the one with most images if a patient has several); every other series is skipped."""
    cases: dict[str, dict] = {}
    skipped = []
    for s in series:
        m = PATIENT_RE.match(str(s.get("PatientID", "")))
        if s.get("Modality") != "CT" or not m:
            reason = f"modality {s.get('Modality')!r}" if m else "PatientID not PANCREAS_<nnnn>"
            skipped.append({"uid": s.get("SeriesInstanceUID"), "patient": s.get("PatientID"), "reason": reason})
            continue
        entry = {"source": "tcia", "uid": s["SeriesInstanceUID"], "image_count": s.get("ImageCount")}
        case = f"image{m.group(1)}"
        if case in cases:
            keep, drop = sorted([cases[case], entry], key=lambda e: -(e["image_count"] or 0))
            skipped.append({"uid": drop["uid"], "patient": s["PatientID"], "reason": "second CT series (fewer images)"})
            entry = keep
        cases[case] = entry
    return cases, skipped


def local_cases(dicom_root: str | Path) -> dict[str, dict]:
    """`PANCREAS_<nnnn>` folders under `dicom_root` or `dicom_root/Pancreas-CT` → {case: {"source": "local", ...}}."""
    cases = {}
    for base in (Path(dicom_root), Path(dicom_root) / "Pancreas-CT"):
        if not base.is_dir():
            continue
        for folder in sorted(base.iterdir()):
            m = PATIENT_RE.match(folder.name)
            if m and folder.is_dir():
                cases[f"image{m.group(1)}"] = {"source": "local", "path": str(folder.resolve())}
    return cases


def build_series_index(
    out: str | Path, *, api_url: str | None, collection: str, dicom_root: str | None, retries: int = 3
) -> dict[str, Any]:
    """Write the case → series index: TCIA's CT series, overridden by local folders under `dicom_root`.

    Args:
        out: the index JSON to write.
        api_url: NBIA API base URL; empty or None skips TCIA (local copy only).
        collection: TCIA collection name (`Pancreas-CT`).
        dicom_root: optional local DICOM folder.
        retries: extra attempts after a server error.
    """
    if not api_url and not dicom_root:
        raise ValueError("api_url or dicom_root must be set")
    cases, skipped = _tcia_cases(list_series(api_url, collection, retries=retries)) if api_url else ({}, [])
    local = local_cases(dicom_root) if dicom_root else {}
    index = {"collection": collection, "cases": dict(sorted({**cases, **local}.items())), "skipped": skipped}
    write_json_atomic(out, index)
    logger.info("series index: %d TCIA CT series, %d local, %d skipped", len(cases), len(local), len(skipped))
    return index


# -- one series on disk -----------------------------------------------------------------------------------------
def _missing_series(case_id: str, where: str) -> DataError:
    return DataError(
        f"{patient_id(case_id)} ({case_id}) is not served by {where}. If it is case 0025 or 0070: TCIA's current "
        "download lacks them (protocol §2.2); the MC-Net author offers them by e-mail (ycwu1997/MC-Net issue #6). "
        "Put their DICOM series under <dicom_root>/PANCREAS_<nnnn>/ (data.<dataset>.tcia.dicom_root), or set "
        "data.<dataset>.tcia.duplicates to auto or drop"
    )


def _check_count(archive: Path, entry: dict[str, Any], case_id: str) -> None:
    """DataError if the zip holds fewer files than getSeries' `ImageCount` (an empty or cut-off series); extra files
    (a licence text) are harmless: the reader skips non-CT files and checks the slices itself."""
    if entry.get("image_count") is None or not zipfile.is_zipfile(archive):
        return  # not a zip: safe_extract_zip says so
    with zipfile.ZipFile(archive) as zf:
        n = sum(not i.is_dir() for i in zf.infolist())
    if n < int(entry["image_count"]):
        raise DataError(
            f"{patient_id(case_id)}: TCIA sent {n} files for series {entry['uid']}, getSeries says "
            f"{entry['image_count']}; rerun to download it again"
        )


def fetch_series(
    index_path: str | Path, case_id: str, out_dir: str | Path, *, api_url: str, retries: int = 3, progress: bool = True
) -> Path:
    """Put the case's DICOM files into `out_dir`: symbolic links to a local copy, or TCIA's zip extracted.

    The TCIA zip goes to `<out_dir>.zip`, is checked (a zip, at least `ImageCount` files), extracted with
    `safe_extract_zip` and deleted. `out_dir` appears only when complete.
    """
    out_dir = Path(out_dir)
    index = json.loads(Path(index_path).read_text())
    entry = index["cases"].get(case_id)
    if entry is None:
        raise _missing_series(case_id, f"the series index {index_path}")
    if entry["source"] == "local":
        files = sorted(p for p in Path(entry["path"]).rglob("*") if p.is_file())
        with atomic_path(out_dir, directory=True) as tmp:
            for k, p in enumerate(files):
                os.symlink(p.resolve(), tmp / f"{k:05d}_{p.name}")
        return out_dir
    url = f"{join_url(api_url, 'getImage')}?SeriesInstanceUID={entry['uid']}"
    archive = out_dir.with_name(out_dir.name + ".zip")
    archive.unlink(missing_ok=True)
    fetch_url(url, archive, what=f"{patient_id(case_id)} DICOM series", retries=retries, progress=progress)
    try:
        _check_count(archive, entry, case_id)
        safe_extract_zip(archive, out_dir)
    finally:
        archive.unlink(missing_ok=True)
    return out_dir


@dataclass(frozen=True)
class CtSeries:
    """A CT series read as MC-Net does, with its geometry from the DICOM headers."""

    hu: np.ndarray
    """float32 (z, y, x) Hounsfield units, slices in InstanceNumber order."""
    spacing: tuple[float, float, float]
    """(x, y, z) mm: PixelSpacing column and row spacing, |Δz| of ImagePositionPatient."""
    first_position: tuple[float, float, float]
    """ImagePositionPatient of the first slice (mm)."""
    skipped: int
    """Files skipped (not DICOM, or Modality ≠ CT)."""


def _ct_headers(folder: Path, what: str) -> tuple[list[tuple[int, Path, Any]], int]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    headers, skipped = [], 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError):
            skipped += 1
            continue
        if getattr(ds, "Modality", None) != "CT":
            skipped += 1
            continue
        headers.append((int(ds.InstanceNumber), path, ds))
    if not headers:
        raise DataError(f"{what}: no CT DICOM file in {folder}")
    return sorted(headers, key=lambda h: h[0]), skipped


def _check_slices(headers: list[tuple[int, Path, Any]], what: str) -> float:
    """Check InstanceNumbers are consecutive and slice positions evenly spaced; returns |Δz| in mm."""
    numbers = [h[0] for h in headers]
    gaps = [(a, b) for a, b in zip(numbers, numbers[1:], strict=False) if b - a != 1]
    if gaps:
        shown = ", ".join(f"{a}->{b}" for a, b in gaps[:5])
        raise DataError(f"{what}: missing or repeated slices: InstanceNumber jumps {shown} ({len(numbers)} CT files)")
    if len(headers) < 2:
        raise DataError(f"{what}: a single CT slice is not a volume")
    z = np.array([float(h[2].ImagePositionPatient[2]) for h in headers])
    dz = np.diff(z)
    step = float(np.median(dz))
    bad = np.flatnonzero(np.abs(dz - step) > 0.01 * abs(step) + 1e-3)
    if step == 0 or bad.size:
        at = ", ".join(f"{numbers[i]}->{numbers[i + 1]}: {dz[i]:.3f} mm" for i in bad[:5])
        raise DataError(f"{what}: slice positions are not evenly spaced (step {step:.3f} mm; {at}): missing slices?")
    shapes = {(int(h[2].Rows), int(h[2].Columns)) for h in headers}
    if len(shapes) != 1:
        raise DataError(f"{what}: slices differ in size: {sorted(shapes)}")
    return abs(step)


def read_ct_series(folder: str | Path, what: str) -> CtSeries:
    """Read a DICOM series folder (files in any order, sub-folders allowed) into HU, MC-Net step A (§2.3)."""
    headers, skipped = _ct_headers(Path(folder), what)
    dz = _check_slices(headers, what)
    import pydicom

    slices = []
    for _, path, _ in headers:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)
        slope, intercept = float(getattr(ds, "RescaleSlope", 1.0)), float(getattr(ds, "RescaleIntercept", 0.0))
        if slope != 1:
            pixels = pixels * np.float32(slope)
        slices.append(pixels + np.float32(intercept))
    first = headers[0][2]
    row_sp, col_sp = (float(v) for v in first.PixelSpacing)
    return CtSeries(
        hu=np.stack(slices).astype(np.float32),
        spacing=(col_sp, row_sp, dz),
        first_position=tuple(float(v) for v in first.ImagePositionPatient),
        skipped=skipped,
    )


# -- the label archive ------------------------------------------------------------------------------------------
def _manual_labels(url: str, archive: Path, why: str) -> ManualStepRequired:
    return ManualStepRequired(
        f"the Pancreas-CT label archive could not be fetched ({why}). Download {archive.name} (the NIfTI "
        f"segmentations) from {COLLECTION_PAGE} (or {url}), put it at {archive}, and rerun snakemake"
    )


def fetch_labels(
    url: str, raw_dir: str | Path, *, sha256: str | None = None, retries: int = 3, progress: bool = True
) -> Path:
    """Fetch (unless already placed by hand) and extract the label archive into `<raw_dir>/labels/label<nnnn>.nii.gz`.

    Writes `<raw_dir>/labels/index.json` ({case: {"file", "sha256"}} and the archive's sha256).

    Raises:
        ManualStepRequired: the archive could not be downloaded or is not a zip; the message says what to put where.
    """
    raw_dir = Path(raw_dir)
    archive = raw_dir / PurePosixPath(urlparse(url).path).name
    placed = archive.is_file()
    if placed and sha256:
        verify_file(archive, what="Pancreas-CT label archive", url=str(archive), sha256=sha256)
    if not placed:
        try:
            fetch_url(url, archive, what="Pancreas-CT label archive", sha256=sha256, retries=retries, progress=progress)
        except DownloadError as err:
            raise _manual_labels(url, archive, str(err)) from err
    try:
        files = safe_extract_zip(archive, raw_dir / "labels", select=lambda n: bool(LABEL_RE.search(n)), flatten=True)
    except DataError as err:
        if not placed:
            archive.unlink(missing_ok=True)
        raise _manual_labels(url, archive, str(err)) from err
    digest = sha256_file(archive)
    labels = {f"image{LABEL_RE.search(f.name).group(1)}": {"file": f.name, "sha256": sha256_file(f)} for f in files}
    write_json_atomic(
        raw_dir / "labels" / "index.json",
        {"archive": archive.name, "archive_sha256": digest, "labels": dict(sorted(labels.items()))},
    )
    if not sha256:
        logger.info("label archive sha256 %s (pin it with data.<dataset>.tcia.labels_sha256)", digest)
    logger.info("%d label files extracted from %s", len(labels), archive)
    return raw_dir / "labels"
