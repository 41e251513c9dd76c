"""The TCIA side against a local fake of the NBIA endpoints: series index, series download and extraction, the
label archive (and the manual step), a local DICOM copy, and download → convert → preprocess end to end."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from data_fakes import API, LABELS_PATH, phantom_a, write_ct_series, write_non_ct

from harness.data import pancreas, tcia
from harness.data.dataset import pancreas_case_path
from harness.data.download import ChecksumError, DataError, DownloadError, ManualStepRequired, sha256_file


def _index(tmp_path, server, dicom_root=None):
    return tcia.build_series_index(
        tmp_path / "raw" / "series.json",
        api_url=server.url + API,
        collection="Pancreas-CT",
        dicom_root=dicom_root,
        retries=0,
    )


def test_case_ids_are_validated():
    assert tcia.patient_id("image0007") == "PANCREAS_0007"
    for bad in ("image7", "image0007; rm -rf /", "PANCREAS_0007", "../image0001"):
        with pytest.raises(ValueError, match="case_id must look like 'image0001'"):
            tcia.case_number(bad)


def test_series_index_keeps_ct_and_skips_the_rest(tmp_path, tcia_server):
    index = _index(tmp_path, tcia_server)
    assert sorted(index["cases"]) == ["image0001", "image0002"]
    assert index["cases"]["image0001"] == {"source": "tcia", "uid": "1.2.826.0.1.3680043.8.498.0001", "image_count": 8}
    assert index["skipped"] == [
        {"uid": "1.2.826.0.1.3680043.8.498.99", "patient": "PANCREAS_0001", "reason": "modality 'SEG'"}
    ]
    assert json.loads((tmp_path / "raw" / "series.json").read_text()) == index


def test_a_login_wall_is_a_manual_step(tmp_path, tcia_server):
    tcia_server.faults[f"{API}/getSeries"] = 401
    with pytest.raises(ManualStepRequired, match="NBIA Data Retriever .* set data.<dataset>.tcia.dicom_root"):
        _index(tmp_path, tcia_server)
    assert not (tmp_path / "raw").exists()


def test_series_download_extracts_every_file_and_removes_the_zip(tmp_path, tcia_server):
    _index(tmp_path, tcia_server)
    out = tcia.fetch_series(
        tmp_path / "raw" / "series.json",
        "image0001",
        tmp_path / "raw" / "dicom" / "image0001",
        api_url=tcia_server.url + API,
        retries=0,
        progress=False,
    )
    assert len(list(out.iterdir())) == 8 and tcia_server.hits[f"{API}/getImage"] == 1
    assert sorted(p.name for p in (tmp_path / "raw" / "dicom").iterdir()) == ["image0001"]
    np.testing.assert_array_equal(tcia.read_ct_series(out, "x").hu, phantom_a()[0].astype(np.float32))


def test_a_case_tcia_does_not_serve_names_the_way_out(tmp_path, tcia_server):
    _index(tmp_path, tcia_server)
    with pytest.raises(DataError, match=r"PANCREAS_0025 \(image0025\) is not served .* MC-Net author offers them"):
        tcia.fetch_series(tmp_path / "raw" / "series.json", "image0025", tmp_path / "d", api_url=tcia_server.url + API)
    assert not (tmp_path / "d").exists()


def test_an_incomplete_series_zip_is_refused(tmp_path, tcia_server):
    index = _index(tmp_path, tcia_server)
    index["cases"]["image0001"]["image_count"] = 9
    (tmp_path / "raw" / "series.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="TCIA sent 8 files for series .*, getSeries says 9"):
        tcia.fetch_series(
            tmp_path / "raw" / "series.json",
            "image0001",
            tmp_path / "raw" / "dicom" / "image0001",
            api_url=tcia_server.url + API,
            retries=0,
            progress=False,
        )
    assert not (tmp_path / "raw" / "dicom").exists() or list((tmp_path / "raw" / "dicom").iterdir()) == []


def test_local_dicom_copy_wins_and_non_ct_files_are_skipped(tmp_path, tcia_server):
    hu, _ = phantom_a()
    local = tmp_path / "local" / "Pancreas-CT" / "PANCREAS_0001" / "study" / "series"
    write_ct_series(local, hu, spacing_xyz=(1.0, 1.0, 1.0), patient="PANCREAS_0001")
    write_non_ct(local, "PANCREAS_0001")
    index = _index(tmp_path, tcia_server, dicom_root=str(tmp_path / "local"))
    assert index["cases"]["image0001"]["source"] == "local" and index["cases"]["image0002"]["source"] == "tcia"
    out = tcia.fetch_series(
        tmp_path / "raw" / "series.json", "image0001", tmp_path / "dicom" / "image0001", api_url=tcia_server.url + API
    )
    assert tcia_server.hits[f"{API}/getImage"] == 0 and all(p.is_symlink() for p in out.iterdir())
    series = tcia.read_ct_series(out, "x")
    assert series.skipped == 1 and series.hu.shape == hu.shape


def test_label_archive_extracts_only_label_files(tmp_path, tcia_server, tcia_data):
    labels = tcia.fetch_labels(tcia_server.url + LABELS_PATH, tmp_path / "raw", retries=0, progress=False)
    assert sorted(p.name for p in labels.iterdir()) == ["index.json", "label0001.nii.gz", "label0002.nii.gz"]
    index = json.loads((labels / "index.json").read_text())
    assert index["archive_sha256"] == sha256_file(tmp_path / "raw" / "TCIA_pancreas_labels-02-05-2017.zip")
    assert sorted(index["labels"]) == ["image0001", "image0002"]
    tcia.fetch_labels(tcia_server.url + LABELS_PATH, tmp_path / "raw", retries=0, progress=False)
    assert tcia_server.hits[LABELS_PATH] == 1  # the archive is kept: a rerun downloads nothing


def test_label_archive_manual_step(tmp_path, tcia_server, tcia_data):
    url = tcia_server.url + "/wiki/moved/TCIA_pancreas_labels-02-05-2017.zip"
    archive = tmp_path / "raw" / "TCIA_pancreas_labels-02-05-2017.zip"
    with pytest.raises(ManualStepRequired) as err:
        tcia.fetch_labels(url, tmp_path / "raw", retries=0, progress=False)
    msg = str(err.value)
    assert "HTTP 404" in msg and f"put it at {archive}" in msg and tcia.COLLECTION_PAGE in msg
    assert not (tmp_path / "raw").exists()
    archive.parent.mkdir(parents=True)
    archive.write_bytes(tcia_data["labels_zip"])  # the user's manual download
    labels = tcia.fetch_labels(url, tmp_path / "raw", retries=0, progress=False)
    assert (labels / "label0002.nii.gz").is_file()
    assert tcia_server.hits["/wiki/moved/TCIA_pancreas_labels-02-05-2017.zip"] == 1  # no download the second time


def test_label_archive_that_is_a_web_page_or_has_the_wrong_hash(tmp_path, tcia_server):
    tcia_server.faults[LABELS_PATH] = "truncate"  # not a readable zip any more
    with pytest.raises(ManualStepRequired, match="not a zip archive"):
        tcia.fetch_labels(tcia_server.url + LABELS_PATH, tmp_path / "a", retries=0, progress=False)
    assert not (tmp_path / "a" / "TCIA_pancreas_labels-02-05-2017.zip").exists()
    tcia_server.faults.clear()
    with pytest.raises(ChecksumError, match="label archive: sha256 mismatch for http.* expected 0{64}, got"):
        tcia.fetch_labels(tcia_server.url + LABELS_PATH, tmp_path / "b", sha256="0" * 64, retries=0, progress=False)
    assert not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "TCIA_pancreas_labels-02-05-2017.zip").write_bytes(b"hand-placed but wrong")
    with pytest.raises(ChecksumError, match="Pancreas-CT label archive: sha256 mismatch"):
        tcia.fetch_labels(tcia_server.url + LABELS_PATH, tmp_path / "c", sha256="0" * 64, retries=0)


def test_download_convert_preprocess_end_to_end(tmp_path, tcia_server):
    raw = tmp_path / "pancreas" / "raw"
    _index(tmp_path / "pancreas", tcia_server)
    labels = tcia.fetch_labels(tcia_server.url + LABELS_PATH, raw, retries=0, progress=False)
    dicom = tcia.fetch_series(
        raw / "series.json",
        "image0001",
        raw / "dicom" / "image0001",
        api_url=tcia_server.url + API,
        retries=0,
        progress=False,
    )
    record = pancreas.prepare_case("image0001", dicom, labels, tmp_path / "pancreas")
    assert record["crop_x"] == [12, 157] and record["crop_y"] == [0, 142] and record["spacing"] == [1.0, 1.0, 1.0]
    with h5py.File(pancreas_case_path(tmp_path / "pancreas", "image0001")) as f:
        image = f["image"][...]
    n = 145 * 142 * 8
    mean = (4800 * 0.5 + 800 * 1.0) / n
    std = np.sqrt((4800 * 0.25 + 800) / n - mean**2)
    assert image[80, 70, 4] == pytest.approx((0.5 - mean) / std, abs=2e-4)  # inside the label box (75 HU)
    assert image[0, 0, 0] == pytest.approx((0.0 - mean) / std, abs=2e-4)  # −201 HU, clipped to 0
    assert image[25 - 12, 105, 0] == pytest.approx((1.0 - mean) / std, abs=2e-4)  # 1001 HU, clipped to 1


def test_unreachable_api_is_a_download_error(tmp_path):
    with pytest.raises(DownloadError, match="TCIA series list: http://127.0.0.1:9/getSeries failed"):
        tcia.list_series("http://127.0.0.1:9", "Pancreas-CT", retries=0, timeout=2)
