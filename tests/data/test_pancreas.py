"""Pancreas-CT: the split and the 0025/0070 policy, DICOM reading, the MC-Net preprocessing against hand-computed
values, and the bad inputs (each a readable error with nothing half-written)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from data_fakes import (
    A_BRIGHT_IN,
    A_LABEL,
    B_SPACING,
    SHARED,
    need,
    phantom_a,
    phantom_b,
    write_ct_series,
    write_label,
    write_non_ct,
)

from harness.config import ConfigError, DataConfig
from harness.data import pancreas
from harness.data.dataset import pancreas_case_path
from harness.data.download import DataError, sha256_file
from harness.data.prepared import PreparedData
from harness.data.tcia import read_ct_series
from harness.method.build import resolve_run
from harness.run.folder import RunId
from harness.train.loop import Bookkeeping
from harness.workflow.grid import cell_params, check_grid, data_block, grid_cells, pancreas_split

BOOK = Bookkeeping(log_every=1, checkpoint_every=2)  # bookkeeping: never part of a run's identity

REPO = Path(__file__).resolve().parents[2]


# -- split and policy --------------------------------------------------------------------------------------------
def test_mcnet_lists_are_the_pinned_ones(tmp_path):
    # the project's harness/data/manifests/pancreas_split.csv equals the copy kept beside the checkout
    assert pancreas.SPLIT_CSV.read_bytes() == need(SHARED / "spec" / "pancreas_split.csv").read_bytes()
    lists = pancreas.mcnet_lists()
    assert len(lists["train.list"]) == 62 and len(lists["test.list"]) == 20
    assert sorted(lists["train.list"] + lists["test.list"]) == [f"image{i:04d}" for i in range(1, 83)]
    for name, ids in lists.items():
        (tmp_path / name).write_text("".join(f"{i}\n" for i in ids))
        assert sha256_file(tmp_path / name) == pancreas.LIST_SHA256[name]
    assert lists["train.list"][10] == "image0070" and lists["test.list"][16] == "image0025"  # protocol §2.2


def test_minus_variant_drops_the_two_cases_and_shifts_image0048_into_the_first_12():
    full, minus = pancreas.split_lists("mcnet"), pancreas.split_lists("mcnet_minus_0025_0070")
    assert (len(minus["train.list"]), len(minus["test.list"])) == (61, 19)
    assert minus["train.list"][:6] == full["train.list"][:6]
    assert "image0070" in full["train.list"][:12] and "image0070" not in minus["train.list"][:12]
    assert minus["train.list"][11] == "image0048"
    with pytest.raises(ValueError, match="split must be"):
        pancreas.split_lists("random")


def paper() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["methods"] = ["supervised"]
    return cfg


def test_duplicates_policy_resolves_when_the_dag_is_built(tmp_path):
    assert pancreas_split({"duplicates": "require"}) == "mcnet"
    assert pancreas_split({"duplicates": "drop", "dicom_root": None}) == "mcnet_minus_0025_0070"
    assert pancreas_split({"duplicates": "auto", "dicom_root": None}) == "mcnet_minus_0025_0070"
    (tmp_path / "Pancreas-CT" / "PANCREAS_0025").mkdir(parents=True)
    assert pancreas_split({"duplicates": "auto", "dicom_root": str(tmp_path)}) == "mcnet_minus_0025_0070"
    (tmp_path / "PANCREAS_0070").mkdir()
    assert pancreas_split({"duplicates": "auto", "dicom_root": str(tmp_path)}) == "mcnet"
    with pytest.raises(ConfigError, match="duplicates"):
        pancreas_split({"duplicates": "sometimes"})


def test_the_split_tag_and_n_train_reach_every_run():
    cfg = paper()
    check_grid(cfg, ["supervised"])
    assert data_block(cfg, "pancreas")["n_train"] == 61
    upper = [c for c in grid_cells(cfg) if c.dataset == "pancreas" and c.n_labeled > 12]
    assert {c.n_labeled for c in upper} == {61}
    params = cell_params(cfg, RunId("pancreas", "supervised", 12, 1337))
    assert params["data"]["split"] == "mcnet_minus_0025_0070" and params["data"]["source"] == "tcia"
    assert params["data"]["format"] == "pancreas_h5" and params["data"]["n_train"] == 61
    assert "split" not in cell_params(cfg, RunId("la", "supervised", 8, 1337))["data"]  # LA: one split only
    required = copy.deepcopy(cfg)
    required["data"]["pancreas"]["tcia"]["duplicates"] = "require"
    assert cell_params(required, RunId("pancreas", "supervised", 12, 1337))["data"]["split"] == "mcnet"
    assert {c.n_labeled for c in grid_cells(required) if c.dataset == "pancreas"} == {6, 12, 62}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("pancreas", "n_train"), 60, "source 'tcia' has 62 training IDs"),
        (("pancreas", "format"), "la_h5", "source 'tcia' writes 'pancreas_h5'"),
        (("la", "n_train"), 70, "source 'released_h5' has 80 training IDs"),
        (("la", "source"), "raw_nrrd", "raw_nrrd.raw_root: required"),
    ],
)
def test_check_grid_names_bad_data_settings(path, value, message):
    cfg = paper()
    cfg["data"][path[0]][path[1]] = value
    with pytest.raises(ConfigError, match=message):
        check_grid(cfg, ["supervised"])


def test_data_config_checks_format_against_source():
    with pytest.raises(ConfigError, match="source 'tcia' writes 'pancreas_h5'"):
        DataConfig(root="x", source="tcia", format="la_h5")
    assert DataConfig(root="x", source="tcia", format="pancreas_h5", split="mcnet").split == "mcnet"


# -- DICOM -------------------------------------------------------------------------------------------------------
def test_dicom_series_reads_hu_in_instance_order(tmp_path):
    hu, _ = phantom_b()
    order = [5, 0, 19, 3, 11, 1, 2, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18]
    write_ct_series(tmp_path / "s", hu, spacing_xyz=B_SPACING, patient="PANCREAS_0002", order=order)
    write_non_ct(tmp_path / "s", "PANCREAS_0002")
    (tmp_path / "s" / "LICENSE.txt").write_text("not DICOM")
    series = read_ct_series(tmp_path / "s", "case")
    np.testing.assert_array_equal(series.hu, hu.astype(np.float32))  # slope 2 / intercept −2049 slices included
    assert series.spacing == (0.75, 0.8, 0.5) and series.skipped == 2
    assert series.first_position == (-50.0, -40.0, 100.0)  # InstanceNumber 1


def test_missing_slices_are_refused(tmp_path):
    hu, _ = phantom_b()
    files = write_ct_series(tmp_path / "s", hu, spacing_xyz=B_SPACING, patient="P")
    files[3].unlink()  # InstanceNumber 4
    with pytest.raises(DataError, match=r"case: missing or repeated slices: InstanceNumber jumps 3->5 \(19 CT files\)"):
        read_ct_series(tmp_path / "s", "case")


def test_unevenly_spaced_slices_are_refused(tmp_path):
    import pydicom

    hu, _ = phantom_b()
    files = write_ct_series(tmp_path / "s", hu, spacing_xyz=B_SPACING, patient="P")
    ds = pydicom.dcmread(files[9])
    ds.ImagePositionPatient = [-50.0, -40.0, 100.0 - 9 * 0.5 - 0.4]
    ds.save_as(files[9])
    with pytest.raises(DataError, match="not evenly spaced .* missing slices"):
        read_ct_series(tmp_path / "s", "case")


# -- the preprocessing by hand -----------------------------------------------------------------------------------
def test_window_and_crop_by_hand():
    np.testing.assert_allclose(
        pancreas.window(np.array([-1000.0, -125.0, 75.0, 175.0, 275.0, 3000.0])), [0, 0, 0.5, 0.75, 1, 1]
    )
    label = np.zeros((300, 100, 5), np.uint8)
    label[100:151, 10:20, 2] = 1  # x extent 50 → pad 23; y extent 9 → pad 43
    xs, ys = pancreas.xy_crop(label)
    assert (xs.start, xs.stop) == (100 - 23 - 25, 150 + 23 + 25)
    assert (ys.start, ys.stop) == (0, 19 + 43 + 25)  # 10 − 43 − 25 < 0: clipped; the end is exclusive
    label[:] = 0
    label[0:200, 0:100, :] = 1  # larger than the 96 patch: no pad; clipped at both ends
    xs, ys = pancreas.xy_crop(label)
    assert (xs.start, xs.stop, ys.start, ys.stop) == (0, 199 + 25, 0, 100)


def _case(tmp_path: Path, hu: np.ndarray, label: np.ndarray, spacing, label_spacing=None, label_zyx=None, num="0001"):
    write_ct_series(tmp_path / "dicom", hu, spacing_xyz=spacing, patient=f"PANCREAS_{num}")
    write_label(
        tmp_path / "labels" / f"label{num}.nii.gz", label if label_zyx is None else label_zyx, label_spacing or spacing
    )
    return tmp_path / "dicom", tmp_path / "labels"


def test_phantom_a_hand_computed(tmp_path):
    """1 mm voxels: resampling is the identity; window, crop and z-score follow from counting voxels."""
    hu, label = phantom_a()
    dicom, labels = _case(tmp_path, hu, label, (1.0, 1.0, 1.0))
    record = pancreas.prepare_case("image0001", dicom, labels, tmp_path / "root")
    # label x 70-99 (extent 29, pad 33): 12 .. 157; y 60-79 (extent 19, pad 38): 60 − 63 < 0 → 0 .. 142; z kept
    assert record["crop_x"] == [12, 157] and record["crop_y"] == [0, 142] and record["shape"] == [145, 142, 8]
    n = 145 * 142 * 8
    mean = (30 * 20 * 8 * 0.5 + 10 * 10 * 8 * 1.0) / n  # −201 HU → 0, 75 HU → 0.5, 1001 HU → 1; the other box is cut
    std = np.sqrt((30 * 20 * 8 * 0.25 + 10 * 10 * 8 * 1.0) / n - mean**2)
    with h5py.File(pancreas_case_path(tmp_path / "root", "image0001")) as f:
        image, lab = f["image"][...], f["label"][...]
        np.testing.assert_allclose(f.attrs["spacing"], [1.0, 1.0, 1.0])
        assert image.dtype == np.float32 and lab.dtype == np.float32
    xyz = np.zeros((180, 170, 8))  # expected windowed volume (x, y, z)
    xyz[A_LABEL[2], A_LABEL[1]] = 0.5
    xyz[A_BRIGHT_IN[2], A_BRIGHT_IN[1]] = 1.0
    np.testing.assert_allclose(image, (xyz[12:157, 0:142] - mean) / std, atol=2e-4)
    expected_label = np.zeros((180, 170, 8), np.float32)
    expected_label[70:100, 60:80] = 1
    np.testing.assert_array_equal(lab, expected_label[12:157, 0:142])
    assert abs(float(image.mean())) < 1e-4 and abs(float(image.std()) - 1) < 1e-4
    assert (tmp_path / "root" / "qa" / "image0001.png").stat().st_size > 0


def test_phantom_b_resampling_geometry(tmp_path):
    """Anisotropic voxels: new size int(size × spacing), new spacing size × spacing / new size (x, y, z)."""
    hu, label = phantom_b()
    dicom, labels = _case(tmp_path, hu, label, B_SPACING, num="0002")
    record = pancreas.prepare_case("image0002", dicom, labels, tmp_path / "root")
    assert record["resampled_shape"] == [30, 28, 10]  # int(40·0.75), int(36·0.8) = int(28.8), int(20·0.5)
    label_y = float(np.float32(0.8))  # the NIfTI header stores float32
    np.testing.assert_allclose(record["spacing"], [1.0, 36 * label_y / 28, 1.0], rtol=1e-12)
    with h5py.File(pancreas_case_path(tmp_path / "root", "image0002")) as f:
        np.testing.assert_allclose(f.attrs["spacing"], record["spacing"])
        lab = f["label"][...]
    assert set(np.unique(lab)) == {0.0, 1.0} and lab.shape == (30, 28, 10)
    # nearest neighbour: x voxels 14-27 (0.75 mm, from 0) cover 10.5-21 mm → centres 11-20 of 1 mm voxels (±1)
    xs = np.flatnonzero(lab.any(axis=(1, 2)))
    assert 10 <= xs[0] <= 11 and 20 <= xs[-1] <= 21


# -- bad inputs: readable errors, nothing half-written ------------------------------------------------------------
def _nothing_written(root: Path) -> bool:
    return not root.exists() or not any(p.is_file() for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("shape", r"label size \(x, y, z\) \(40, 36, 19\) differs from the DICOM series \(40, 36, 20\): misaligned"),
        ("affine", r"label spacing .* \(0.75, 0.8, 2.5\) mm differs from the DICOM series .*affine disagrees"),
        ("empty", "label label0002.nii.gz is empty"),
        ("values", r"label values must be in \{0, 1\}; label0002.nii.gz has \[0, 2\]"),
    ],
)
def test_bad_label_is_refused(tmp_path, change, message):
    hu, label = phantom_b()
    spacing, zyx = B_SPACING, label
    if change == "shape":
        zyx = label[:19]
    elif change == "affine":
        spacing = (0.75, 0.8, 2.5)
    elif change == "empty":
        zyx = np.zeros_like(label)
    elif change == "values":
        zyx = label * 2
    dicom, labels = _case(tmp_path, hu, label, B_SPACING, label_spacing=spacing, label_zyx=zyx, num="0002")
    with pytest.raises(DataError, match=f"Pancreas case image0002: {message}"):
        pancreas.prepare_case("image0002", dicom, labels, tmp_path / "root")
    assert _nothing_written(tmp_path / "root")


def test_nan_in_an_image_is_refused():
    import SimpleITK as sitk

    arr = np.zeros((6, 8, 8), np.float32)
    arr[2, 3, 3] = np.nan
    lab = np.zeros((6, 8, 8), np.uint8)
    lab[2:4, 2:5, 2:5] = 1
    with pytest.raises(DataError, match="case x: image contains non-finite values"):
        pancreas.preprocess(sitk.GetImageFromArray(arr), sitk.GetImageFromArray(lab), "case x")
    with pytest.raises(DataError, match="case x: image size"):
        pancreas.preprocess(sitk.GetImageFromArray(arr[:5]), sitk.GetImageFromArray(lab), "case x")


# -- the dataset manifest ----------------------------------------------------------------------------------------
@pytest.fixture
def two_cases(tmp_path) -> Path:
    root = tmp_path / "root"
    for num, (hu, label), spacing in (("0001", phantom_a(), (1.0, 1.0, 1.0)), ("0002", phantom_b(), B_SPACING)):
        dicom, labels = _case(tmp_path / num, hu, label, spacing, num=num)
        pancreas.prepare_case(f"image{num}", dicom, labels, root)
    return root


LISTS = {"train.list": ["image0002"], "test.list": ["image0001"]}


def test_manifest_records_the_split_tag(two_cases):
    manifest = pancreas.write_manifest(two_cases, split="mcnet_minus_0025_0070", policy="auto", lists=LISTS)
    assert manifest["split"] == manifest["pancreas_split"] == "mcnet_minus_0025_0070"
    assert manifest["excluded"] == ["image0025", "image0070"] and manifest["duplicates_policy"] == "auto"
    assert (two_cases / "train.list").read_text() == "image0002\n" and manifest["n_test"] == 1
    assert manifest["cases"]["image0001"]["shape"] == [145, 142, 8]
    assert manifest["near_duplicates"] == [] and "image0002" in manifest["qa_warnings"]
    assert {cid: c["split"] for cid, c in manifest["cases"].items()} == {"image0002": "train", "image0001": "test"}
    assert manifest["cases"]["image0001"]["sha256"] == sha256_file(pancreas_case_path(two_cases, "image0001"))
    data = PreparedData.open(two_cases, "pancreas_h5")  # the prepared root as training and evaluation open it
    assert (data.train_ids, data.test_ids) == (("image0002",), ("image0001",))
    assert int(data.load("image0001", with_label=True)[1].sum()) == 4800


def test_near_duplicates_are_flagged():
    rng = np.random.default_rng(0)
    a, b = rng.random(4096), rng.random(4096)
    found = pancreas.near_duplicates({"image0001": a, "image0002": b, "image0010": a * 2 + 0.01})
    assert found == [{"cases": ["image0001", "image0010"], "r": 1.0}]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_label", "no dataset 'label'"),
        ("shape", r"label shape \(30, 28, 9\) differs from image shape \(30, 28, 10\)"),
        ("nan", "image contains non-finite values"),
        ("empty", "label is empty"),
        ("no_file", r"1 case\(s\) listed in .* have no file \(image0002: "),
    ],
)
def test_manifest_refuses_a_bad_case_file_and_writes_nothing(two_cases, damage, message):
    path = pancreas_case_path(two_cases, "image0002")
    if damage == "no_file":
        path.unlink()
    else:
        with h5py.File(path, "a") as f:
            image, label = f["image"][...], f["label"][...]
            del f["label"]
            if damage == "shape":
                f["label"] = label[:, :, :9]
            elif damage == "nan":
                image[0, 0, 0] = np.nan
                del f["image"]
                f["image"] = image
                f["label"] = label
            elif damage == "empty":
                f["label"] = np.zeros_like(label)
    with pytest.raises(DataError, match=message):
        pancreas.write_manifest(two_cases, split="mcnet", policy="require", lists=LISTS)
    assert not (two_cases / "manifest.json").exists() and not (two_cases / "train.list").exists()


def test_prepared_files_load_through_the_training_loader(two_cases):
    from harness.data.dataset import case_path, load_case

    assert pancreas.pancreas_case_path("/r", "image0001") == case_path("/r", "image0001", "pancreas_h5")
    with pytest.raises(ValueError, match=r"fmt must be one of \('la_h5', 'pancreas_h5', 'case_h5'\); got 'nifti'"):
        case_path("/r", "image0001", "nifti")

    image, label = load_case(case_path(two_cases, "image0001", "pancreas_h5"), with_label=True)
    assert image.dtype == np.float32 and label.dtype == np.uint8 and int(label.sum()) == 4800
    shutil.rmtree(two_cases / "qa")
    pancreas.write_manifest(two_cases, split="mcnet", policy="require", lists=LISTS)  # QA files are optional


def test_a_prepared_pancreas_root_trains_and_evaluates(two_cases, tmp_path):
    """The `pancreas_h5` format through the training loop and evaluation (tiny: 2 iterations, 16³ patches)."""
    import torch

    from harness.evaluate.predict import predict_cases
    from harness.evaluate.score import evaluate_cases
    from harness.train.loop import train

    pancreas.write_manifest(two_cases, split="mcnet", policy="require", lists=LISTS)
    config = {
        "datasets": {"pancreas": {"labeled": [1]}},
        "data": {
            "pancreas": {
                "source": "tcia",
                "format": "pancreas_h5",
                "n_train": 1,
                "patch_size": [16, 16, 16],
                "augment": "crop",
            }
        },
        "protocol": {
            "iterations": 2,
            "n_filters": 2,
        },
    }
    params = cell_params(config, RunId("pancreas", "supervised", 1, 1))
    params["data"].update(root=str(two_cases), n_train=1)
    cfg = resolve_run(params)
    assert cfg.data.split == "mcnet_minus_0025_0070"  # the tag travels with the run config (auto, no local copy)
    cpu = torch.device("cpu")
    info = train(cfg, tmp_path / "run", device=cpu, bookkeeping=BOOK)
    assert info["config"]["data"]["split"] == "mcnet_minus_0025_0070" and info["config"]["data"]["source"] == "tcia"
    predict_cases(
        cfg,
        tmp_path / "run" / "model.pt",
        tmp_path / "pred",
        stride=(16, 16, 16),
        windows_per_batch=32,
        spacing_mm=(1.0, 1.0, 1.0),
        device=cpu,
    )
    rows = evaluate_cases(cfg, tmp_path / "pred", spacing_mm=(1.0, 1.0, 1.0), empty_pred="worst_case", run_info=info)
    assert [r["case"] for r in rows] == ["image0001"] and 0.0 <= rows[0]["dice"] <= 1.0
