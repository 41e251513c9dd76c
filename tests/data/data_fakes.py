"""Test helpers: a real HTTP server on 127.0.0.1 with fault injection, synthetic DICOM series and label NIfTIs.

Nothing here reaches the network: the servers bind 127.0.0.1 on a free port.
"""

from __future__ import annotations

import collections
import http.server
import io
import json
import os
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

SHARED = Path(__file__).resolve().parents[3] / "shared"
LA_MINI_ROOT = SHARED / "data" / "la-mini"
LA_COMMIT = "88ed29ad794f877122e542a7fa9505a76fa83515"
LA_PREFIX = f"/yulequan/UA-MT/{LA_COMMIT}/data"

Response = tuple[int, bytes, str]
App = Callable[[str, dict[str, list[str]]], Response | None]


def need(path: Path) -> Path:
    """`path`, or fail under CI=true / skip elsewhere when the shared test data is missing."""
    import pytest

    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: CI needs ../shared/data beside the checkout")
        pytest.skip(f"{path} not found (../shared/data is not beside this checkout)")
    return path


class FakeServer:
    """A threading HTTP server on 127.0.0.1 answering through `app(path, query)`.

    `faults[path]` changes one answer: an int status, "truncate" (serve the first half as if complete),
    "flip" (one byte changed), "drop" (announce the full length, send half, close the connection).
    `hits[path]` counts requests.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.faults: dict[str, object] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                parsed = urlparse(self.path)
                path = unquote(parsed.path)
                server.hits[path] += 1
                answer = server.app(path, parse_qs(parsed.query))
                fault = server.faults.get(path)
                if isinstance(fault, int):
                    answer = (fault, b"error", "text/plain")
                if answer is None:
                    answer = (404, b"not found", "text/plain")
                status, body, ctype = answer
                if fault == "truncate":
                    body = body[: len(body) // 2]
                elif fault == "flip":
                    body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def static_app(root: Path) -> App:
    """Serve the files below `root` under their relative paths."""

    def app(path: str, query: dict) -> Response | None:
        target = (root / path.lstrip("/")).resolve()
        if root.resolve() not in target.parents or not target.is_file():
            return None
        return 200, target.read_bytes(), "application/octet-stream"

    return app


# -- synthetic DICOM / NIfTI -------------------------------------------------------------------------------------
def write_ct_series(
    folder: Path,
    hu: np.ndarray,
    *,
    spacing_xyz: tuple[float, float, float],
    patient: str,
    z0: float = 100.0,
    order: list[int] | None = None,
    modality: str = "CT",
) -> list[Path]:
    """Write HU (z, y, x) as one DICOM file per slice; returns the files in the order they were written.

    Slice k (0-based) gets InstanceNumber k + 1 and ImagePositionPatient z = z0 − k·dz (z decreasing, as on many
    scanners). Odd InstanceNumbers store HU with slope 1 / intercept −1024, even ones with slope 2 / intercept
    −2049 (so HU must be odd there). `order` permutes the writing order and the file names.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    dx, dy, dz = spacing_xyz
    paths = []
    for k in order if order is not None else range(hu.shape[0]):
        slope, intercept = (1.0, -1024.0) if (k + 1) % 2 else (2.0, -2049.0)
        stored = (hu[k] - intercept) / slope
        if not np.allclose(stored, np.round(stored)) or stored.min() < 0:
            raise ValueError("HU values not representable with this slope/intercept")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = modality, patient, study, series
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-50.0, -40.0, z0 - k * dz]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [dy, dx]  # row spacing (y), column spacing (x)
        ds.SliceThickness, ds.SliceLocation = dz, z0 - k * dz
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = np.round(stored).astype(np.uint16).tobytes()
        path = folder / f"1-{(k * 7919) % 1000:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_non_ct(folder: Path, patient: str) -> Path:
    """A DICOM file with Modality SR (a structured report, no pixels) that the CT reader must skip."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.InstanceNumber = "SR", patient, 1
    path = folder / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_label(path: Path, label_zyx: np.ndarray, spacing_xyz: tuple[float, float, float], origin=(0, 0, 0)) -> Path:
    """A label NIfTI written with SimpleITK from a (z, y, x) array."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(label_zyx.astype(np.uint8))
    img.SetSpacing(tuple(float(v) for v in spacing_xyz))
    img.SetOrigin(tuple(float(v) for v in origin))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


# -- the two phantom cases ---------------------------------------------------------------------------------------
#: Case A (image0001): 1 mm voxels, so resampling is the identity and every number can be computed by hand.
A_SHAPE_ZYX = (8, 170, 180)
A_LABEL = (slice(None), slice(60, 80), slice(70, 100))  # (z, y, x): x 70-99, y 60-79, all 8 slices
A_BRIGHT_IN = (slice(None), slice(100, 110), slice(20, 30))  # inside the crop
A_BRIGHT_OUT = (slice(None), slice(150, 160), slice(165, 175))  # outside the crop (x >= 157)
#: Case B (image0002): anisotropic voxels for the resampling geometry.
B_SHAPE_ZYX, B_SPACING = (20, 36, 40), (0.75, 0.8, 0.5)


def phantom_a() -> tuple[np.ndarray, np.ndarray]:
    """HU (z, y, x): −201 background, 75 in the label box, 1001 in two bright boxes; label (z, y, x)."""
    hu = np.full(A_SHAPE_ZYX, -201.0)
    hu[A_LABEL] = 75.0
    hu[A_BRIGHT_IN] = 1001.0
    hu[A_BRIGHT_OUT] = 1001.0
    label = np.zeros(A_SHAPE_ZYX, np.uint8)
    label[A_LABEL] = 1
    return hu, label


def phantom_b() -> tuple[np.ndarray, np.ndarray]:
    hu = np.full(B_SHAPE_ZYX, -201.0)
    label = np.zeros(B_SHAPE_ZYX, np.uint8)
    label[6:14, 12:24, 14:28] = 1
    hu[label == 1] = 75.0
    return hu, label


def build_tcia(tmp: Path) -> dict:
    """Series zips, getSeries JSON and a label archive for PANCREAS_0001 (A) and PANCREAS_0002 (B).

    Returns {"series": [...], "zips": {uid: bytes}, "labels_zip": bytes, "labels": {case: (z, y, x) array}}.
    """
    series, zips, labels, members = [], {}, {}, {}
    for num, (hu, label), spacing in (("0001", phantom_a(), (1.0, 1.0, 1.0)), ("0002", phantom_b(), B_SPACING)):
        folder = tmp / f"PANCREAS_{num}"
        order = list(np.random.default_rng(int(num)).permutation(hu.shape[0]))  # InstanceNumbers out of order
        files = write_ct_series(folder, hu, spacing_xyz=spacing, patient=f"PANCREAS_{num}", order=order)
        uid = f"1.2.826.0.1.3680043.8.498.{num}"
        zips[uid] = zip_bytes({p.name: p.read_bytes() for p in files})
        series.append(
            {
                "SeriesInstanceUID": uid,
                "PatientID": f"PANCREAS_{num}",
                "Modality": "CT",
                "Collection": "Pancreas-CT",
                "ImageCount": len(files),
            }
        )
        path = write_label(tmp / f"label{num}.nii.gz", label, spacing)
        members[f"TCIA_pancreas_labels-02-05-2017/label{num}.nii.gz"] = path.read_bytes()
        labels[f"image{num}"] = label
    series.append(
        {
            "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.99",
            "PatientID": "PANCREAS_0001",
            "Modality": "SEG",
            "Collection": "Pancreas-CT",
            "ImageCount": 1,
        }
    )  # a non-CT series
    members["TCIA_pancreas_labels-02-05-2017/README.txt"] = b"labels"
    return {"series": series, "zips": zips, "labels_zip": zip_bytes(members), "labels": labels}


API = "/nbia-api/services/v1"
LABELS_PATH = "/labels/TCIA_pancreas_labels-02-05-2017.zip"


def tcia_app(data: dict) -> App:
    """The fake NBIA endpoints getSeries and getImage, and the label archive."""

    def app(path: str, query: dict) -> Response | None:
        if path == f"{API}/getSeries" and query.get("Collection") == ["Pancreas-CT"]:
            return 200, json.dumps(data["series"]).encode(), "application/json"
        if path == f"{API}/getImage":
            body = data["zips"].get(query.get("SeriesInstanceUID", [""])[0])
            return None if body is None else (200, body, "application/zip")
        if path == LABELS_PATH:
            return 200, data["labels_zip"], "application/zip"
        return None

    return app
