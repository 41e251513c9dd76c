"""The `nifti` source (harness.data.nifti): MSD and nnU-Net v2 raw datasets become prepared `case_h5` datasets.

The fakes (nifti_fakes.py) draw every case in RAS+ and store it with permuted and flipped axes, so the prepared arrays
can be checked against the drawn ones: reorientation, foreground mapping, resampling and normalisation are each
compared with numbers computed here from the drawing, not from the module's own helpers.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from nifti_fakes import (
    STORED_AXCODES,
    TEST_IMAGE_ID,
    canonical_case,
    case_files,
    case_geometry,
    case_id,
    fault_4d,
    fault_affine,
    fault_duplicate,
    fault_empty_foreground,
    fault_label_value,
    fault_missing_file,
    fault_nan,
    fault_shape,
    fault_unsafe_id,
    write_msd,
    write_nnunet,
)

from harness.cli import main
from harness.config import ConfigError
from harness.data import nifti, nifti_case
from harness.data.download import DataError, sha256_file
from harness.data.nifti import plan_dataset, prepare_case, write_manifest
from harness.data.nifti_layout import NiftiSettings, find_cases, split_cases
from harness.data.prepared import PreparedData
from harness.data.synthetic import write_synthetic_la

SPACING_0 = case_geometry(0)[1]  # case 0's voxel size: a target spacing that leaves case 0 unresampled


def _index(cid: str) -> int:
    return int(cid.rsplit("_", 1)[1])


def _prepare_all(settings: NiftiSettings, out: Path) -> dict:
    """Plan, prepare every case, write the manifest; returns the plan."""
    plan = plan_dataset(settings, out)
    for entry in plan["cases"]:
        prepare_case(entry["id"], plan, out)
    write_manifest(out)
    return plan


def _h5(out: Path, cid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, label, spacing) of a prepared case."""
    with h5py.File(out / "cases" / f"{cid}.h5", "r") as f:
        return f["image"][...], f["label"][...], f.attrs["spacing"][...]


def _zscore(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.mean()) / x.std()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _case_outputs(out: Path, cid: str) -> list[Path]:
    """The files of case `cid` under `out`, temporary ones included."""
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name.startswith(cid))


@pytest.fixture(scope="module")
def msd(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An MSD MRI dataset of 8 cases prepared with the defaults (target = median spacing); never modified."""
    root = tmp_path_factory.mktemp("msd")
    ds = write_msd(root / "src")
    out = root / "resources" / "fake"
    plan = _prepare_all(NiftiSettings(ds), out)
    return {"ds": ds, "out": out, "plan": plan}


# -- layouts ---------------------------------------------------------------------------------------------------------
def test_find_cases_detects_msd_and_nnunet_and_ignores_imagesTs(tmp_path: Path) -> None:
    ids = [case_id(i) for i in range(4)]
    msd, nnunet = write_msd(tmp_path, 4), write_nnunet(tmp_path, 4)
    assert (msd / "imagesTs" / f"{TEST_IMAGE_ID}.nii.gz").is_file()

    layout, cases = find_cases(NiftiSettings(msd))
    assert layout == "msd" and [c.case_id for c in cases] == ids
    assert cases[0].image == msd / "imagesTr" / "fake_000.nii.gz"
    assert cases[0].label == msd / "labelsTr" / "fake_000.nii.gz"

    layout, cases = find_cases(NiftiSettings(nnunet))
    assert layout == "nnunet" and [c.case_id for c in cases] == ids
    assert cases[2].image == nnunet / "imagesTr" / "fake_002_0000.nii.gz"
    assert cases[2].label == nnunet / "labelsTr" / "fake_002.nii.gz"
    assert find_cases(NiftiSettings(nnunet, layout="nnunet"))[0] == "nnunet"


def test_layout_refusals_name_dataset_json(tmp_path: Path) -> None:
    ds = write_msd(tmp_path, 3)
    meta_path = ds / "dataset.json"
    with pytest.raises(DataError, match=r"nnunet layout needs the keys \['channel_names'.*set nifti.layout") as err:
        find_cases(NiftiSettings(ds, layout="nnunet"))
    assert str(meta_path) in str(err.value)

    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"channel_names": {"0": "MRI"}}))
    with pytest.raises(DataError, match="cannot tell the layout"):
        find_cases(NiftiSettings(ds))
    assert find_cases(NiftiSettings(ds, layout="msd"))[0] == "msd"

    meta_path.unlink()
    with pytest.raises(DataError, match=f"{re.escape(str(meta_path))} does not exist"):
        find_cases(NiftiSettings(ds))
    with pytest.raises(DataError, match="is not a folder"):
        find_cases(NiftiSettings(tmp_path / "nowhere"))


# -- settings --------------------------------------------------------------------------------------------------------
def test_settings_from_block_round_trip_and_defaults() -> None:
    block = {
        "root": "/data/x",
        "layout": "msd",
        "foreground": [2, 1],
        "modality": "ct",
        "target_spacing": [1, 1, 2.5],
        "test": {"fraction": 0.25, "seed": 3},
        "channel": 1,
    }
    s = NiftiSettings.from_block(block)
    assert (s.root, s.foreground, s.target_spacing, s.test_fraction, s.test_seed, s.channel) == (
        Path("/data/x"),
        (1, 2),
        (1.0, 1.0, 2.5),
        0.25,
        3,
        1,
    )
    assert NiftiSettings.from_block(s.to_block()) == s
    defaults = NiftiSettings.from_block({"root": "r", "layout": None, "test": None, "target_spacing": None})
    assert defaults == NiftiSettings(Path("r"))
    assert NiftiSettings.from_block({"root": "r", "test": {"list": "t.txt"}}).test_list == Path("t.txt")


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"root": "r", "colour": 1}, "colour"),
        ({"layout": "msd"}, "nifti.root"),
        ({"root": "r", "test": {"list": "t.txt", "fraction": 0.2}}, "nifti.test"),
        ({"root": "r", "test": {"fraction": 1.0}}, "nifti.test.fraction"),
        ({"root": "r", "test": {"size": 3}}, "nifti.test"),
        ({"root": "r", "foreground": [0, 1]}, "nifti.foreground"),
        ({"root": "r", "foreground": "1"}, "nifti.foreground"),
        ({"root": "r", "modality": "pet"}, "nifti.modality"),
        ({"root": "r", "layout": "nnunet_v1"}, "nifti.layout"),
        ({"root": "r", "target_spacing": [1, 2]}, "nifti.target_spacing"),
        ({"root": "r", "channel": -1}, "nifti.channel"),
    ],
)
def test_settings_refuse_bad_blocks_naming_the_key(block: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        NiftiSettings.from_block(block)


# -- the split -------------------------------------------------------------------------------------------------------
def test_split_is_deterministic_sorted_and_depends_only_on_the_test_seed(tmp_path: Path) -> None:
    ids = [case_id(i) for i in range(10)]
    s0 = NiftiSettings(tmp_path)
    train, test = split_cases(ids, s0)
    expected = sorted(ids[i] for i in np.random.default_rng(0).permutation(10)[:2])  # round(0.2 × 10) = 2
    assert test == expected and train == sorted(set(ids) - set(test))
    assert split_cases(list(reversed(ids)), s0) == (train, test)  # input order does not matter
    assert split_cases(ids, s0) == (train, test)
    assert split_cases(ids, NiftiSettings(tmp_path, test_seed=1))[1] != test
    assert len(split_cases(ids, NiftiSettings(tmp_path, test_fraction=0.01))[1]) == 1  # at least one test case
    assert len(split_cases(ids, NiftiSettings(tmp_path, test_fraction=0.5))[1]) == 5
    with pytest.raises(DataError, match="none is left for training"):
        split_cases(ids, NiftiSettings(tmp_path, test_fraction=0.96))
    with pytest.raises(DataError, match="at least 2 labeled cases"):
        split_cases(ids[:1], s0)


def test_split_from_a_test_list(tmp_path: Path) -> None:
    ids = [case_id(i) for i in range(6)]
    listed = tmp_path / "test.txt"

    def split(text: str) -> tuple[list[str], list[str]]:
        listed.write_text(text)
        return split_cases(ids, NiftiSettings(tmp_path, test_list=listed))

    assert split("fake_003\n\n  fake_001 \n") == (
        ["fake_000", "fake_002", "fake_004", "fake_005"],
        ["fake_001", "fake_003"],
    )
    with pytest.raises(DataError, match=rf"test list {re.escape(str(listed))}, line 2: 'fake_1' is not a labeled"):
        split("fake_001\nfake_1\n")
    with pytest.raises(DataError, match="line 3: 'fake_001' is listed twice"):
        split("fake_001\nfake_002\nfake_001\n")
    with pytest.raises(DataError, match="holds no case ID"):
        split("\n\n")
    with pytest.raises(DataError, match="none is left for training"):
        split("\n".join(ids))
    listed.unlink()
    with pytest.raises(DataError, match="does not exist"):
        split_cases(ids, NiftiSettings(tmp_path, test_list=listed))


def test_plan_fixes_split_and_spacing_and_is_reproducible(tmp_path: Path) -> None:
    ds = write_msd(tmp_path / "src")
    out = tmp_path / "out"
    plan = plan_dataset(NiftiSettings(ds), out)
    first = (out / "plan.json").read_bytes()
    ids = [case_id(i) for i in range(8)]
    train, test = split_cases(ids, NiftiSettings(ds))
    assert [c["id"] for c in plan["cases"] if c["split"] == "train"] == train
    assert [c["id"] for c in plan["cases"] if c["split"] == "test"] == test
    assert (plan["n_train"], plan["n_test"]) == (6, 2)
    median = np.median([case_geometry(_index(c))[1] for c in train], axis=0)
    assert plan["target_spacing"] == pytest.approx(median.tolist(), abs=1e-9)
    assert plan["cases"][0]["orientation"] == "".join(STORED_AXCODES)
    assert plan["cases"][0]["shape"] == list(case_geometry(0)[0])  # RAS+ order, although stored permuted

    assert plan_dataset(NiftiSettings(ds), out) == plan
    assert (out / "plan.json").read_bytes() == first  # same inputs, same bytes
    other = plan_dataset(NiftiSettings(ds, test_seed=5), out)
    assert [c["split"] for c in other["cases"]] != [c["split"] for c in plan["cases"]]


def test_plan_refuses_foreground_values_that_dataset_json_lacks(tmp_path: Path) -> None:
    ds = write_msd(tmp_path, 3)
    with pytest.raises(DataError, match=r"nifti.foreground: \[5\] are not label values"):
        plan_dataset(NiftiSettings(ds, foreground=(1, 5)), tmp_path / "out")
    assert not (tmp_path / "out" / "plan.json").exists()


# -- one case: orientation, foreground, resampling, normalisation ----------------------------------------------------
def test_reorientation_gives_the_canonical_arrays(tmp_path: Path) -> None:
    canonical = write_msd(tmp_path / "a", 3, axcodes=("R", "A", "S"))
    stored = write_msd(tmp_path / "b", 3)
    assert nib.load(case_files(stored, "fake_001")[0]).shape != nib.load(case_files(canonical, "fake_001")[0]).shape
    outs = []
    for ds in (canonical, stored):
        out = ds.parent / "out"
        plan_dataset(NiftiSettings(ds, target_spacing=SPACING_0), out)
        plan = nifti.read_plan(out)
        records = {c["id"]: prepare_case(c["id"], plan, out) for c in plan["cases"]}
        outs.append((out, records))
    assert {r["orientation_before"] for r in outs[0][1].values()} == {"RAS"}
    assert {r["orientation_before"] for r in outs[1][1].values()} == {"".join(STORED_AXCODES)}
    for cid in ("fake_000", "fake_001", "fake_002"):  # cases 1 and 2 are resampled (z 2.5 and 3.0 mm → 2.0 mm)
        a, b = _h5(outs[0][0], cid), _h5(outs[1][0], cid)
        np.testing.assert_allclose(a[0], b[0], atol=1e-5)
        np.testing.assert_array_equal(a[1], b[1])
    # case 0 is at the target spacing: the prepared arrays are the drawn RAS+ arrays (label 1 → 1, label 2 → 0)
    image, label, affine = canonical_case(0)
    got_image, got_label, spacing = _h5(outs[1][0], "fake_000")
    np.testing.assert_array_equal(got_label, (label == 1).astype(np.uint8))
    np.testing.assert_allclose(got_image, _zscore(image), atol=1e-5)
    assert got_label.dtype == np.uint8 and got_image.dtype == np.float32
    assert spacing.tolist() == list(SPACING_0)


def test_resampling_follows_the_median_spacing(msd: dict) -> None:
    out, plan = msd["out"], msd["plan"]
    target = np.array(plan["target_spacing"])
    train = [c["id"] for c in plan["cases"] if c["split"] == "train"]
    assert target.tolist() == pytest.approx(np.median([case_geometry(_index(c))[1] for c in train], axis=0))
    assert len({case_geometry(i)[1] for i in range(8)}) == 3  # the cases really differ in spacing
    for entry in plan["cases"]:
        shape, spacing = case_geometry(_index(entry["id"]))
        image, label, stored = _h5(out, entry["id"])
        expected = [round(n * s / t) for n, s, t in zip(shape, spacing, target, strict=True)]
        assert list(label.shape) == list(image.shape) == expected
        assert stored.tolist() == target.tolist()


def test_resampling_grid_is_centred_on_the_field_of_view() -> None:
    """A linear ramp of the z coordinate (mm) stays exact under linear interpolation, so each output voxel must hold
    the z of its own centre: 20 slices of 2 mm cover 9..49 mm; 18 slices of 2.25 mm centred on it start at 8.75 mm."""
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[2, 3] = 10.0  # first slice centre at z = 10 mm
    ramp = np.broadcast_to(10.0 + 2.0 * np.arange(20), (3, 3, 20)).astype(np.float32)
    out = nifti_case.resample(ramp, affine, (1.0, 1.0, 2.25), is_label=False)
    assert out.shape == (3, 3, 18)
    centres = 8.75 + 2.25 * (np.arange(18) + 0.5)
    np.testing.assert_allclose(out[1, 1, 1:-1], centres[1:-1], atol=1e-4)  # the end slices lie beyond 10 and 48 mm
    assert nifti_case.resample(ramp, affine, (1.0, 1.0, 2.0), is_label=False) is ramp  # at the target: unchanged


def test_configured_target_spacing(tmp_path: Path) -> None:
    ds = write_msd(tmp_path, 3)
    out = tmp_path / "out"
    plan = plan_dataset(NiftiSettings(ds, target_spacing=(2.0, 2.0, 2.0)), out)
    assert plan["target_spacing"] == [2.0, 2.0, 2.0] and plan["target_spacing_from"] == "configured"
    for i in range(3):
        prepare_case(case_id(i), plan, out)
        shape, spacing = case_geometry(i)
        assert _h5(out, case_id(i))[0].shape == tuple(round(n * s / 2.0) for n, s in zip(shape, spacing, strict=True))


@pytest.mark.parametrize(("foreground", "drawn"), [((2,), [2]), ((1, 2), [1, 2])])
def test_foreground_values_map_to_one_and_the_others_to_zero(tmp_path: Path, foreground, drawn) -> None:
    ds = write_msd(tmp_path, 3)
    plan = plan_dataset(NiftiSettings(ds, foreground=foreground, target_spacing=SPACING_0), tmp_path / "out")
    prepare_case("fake_000", plan, tmp_path / "out")
    label = _h5(tmp_path / "out", "fake_000")[1]
    np.testing.assert_array_equal(label, np.isin(canonical_case(0)[1], drawn).astype(np.uint8))


def test_normalise_hand_numbers() -> None:
    column = np.array([1, 2, 3, 4, 5], np.float32).reshape(5, 1, 1)  # mean 3, std sqrt(2)
    mri = nifti_case.normalise(column, {"scheme": "zscore_per_case"}, "case x")
    np.testing.assert_allclose(mri.ravel(), np.array([-2, -1, 0, 1, 2]) / np.sqrt(2), rtol=1e-6)
    ct = {"scheme": "ct_dataset", "clip": [-100.0, 100.0], "mean": 0.0, "std": 50.0}
    hu = np.array([-200, 0, 50, 300], np.float32).reshape(4, 1, 1)
    np.testing.assert_array_equal(nifti_case.normalise(hu, ct, "case x").ravel(), [-2, 0, 1, 2])
    with pytest.raises(DataError, match="case x: the image is constant"):
        nifti_case.normalise(np.ones((2, 2, 2), np.float32), {"scheme": "zscore_per_case"}, "case x")
    stats = nifti_case.ct_statistics([np.arange(0, 501), np.arange(501, 1001)])  # 0..1000: percentiles 5 and 995
    assert stats["clip"] == [5.0, 995.0] and stats["mean"] == pytest.approx(500.0) and stats["n_samples"] == 1001


def test_foreground_sample_is_capped_and_fixed_per_case() -> None:
    values = np.arange(50_000, dtype=np.float64)
    a = nifti_case.sample_foreground(values, "case_a")
    assert a.size == nifti_case.CT_SAMPLES_PER_CASE and np.isin(a, values).all() and np.unique(a).size == a.size
    np.testing.assert_array_equal(a, nifti_case.sample_foreground(values, "case_a"))
    assert not np.array_equal(a, nifti_case.sample_foreground(values, "case_b"))
    np.testing.assert_array_equal(nifti_case.sample_foreground(values[:100], "case_a"), values[:100])


def test_ct_uses_the_training_cases_statistics(tmp_path: Path) -> None:
    ds = write_nnunet(tmp_path / "src", 5)  # CT by default
    (tmp_path / "test.txt").write_text("fake_000\n")
    settings = NiftiSettings(ds, modality="ct", target_spacing=SPACING_0, test_list=tmp_path / "test.txt")
    plan = plan_dataset(settings, tmp_path / "out")
    fg = [canonical_case(i, modality="ct") for i in range(1, 5)]  # the training cases only: no test-set leakage
    values = np.concatenate([image[label == 1] for image, label, _ in fg]).astype(np.float64)
    assert all((label == 1).sum() < nifti_case.CT_SAMPLES_PER_CASE for _, label, _ in fg)  # so every voxel counts
    lo, hi = np.percentile(values, [0.5, 99.5])
    clipped = np.clip(values, lo, hi)
    stats = plan["normalisation"]
    assert stats["scheme"] == "ct_dataset" and stats["n_samples"] == values.size
    assert stats["clip"] == pytest.approx([lo, hi]) and stats["clip"][1] < 500  # bone (label 2) is not foreground
    assert (stats["mean"], stats["std"]) == pytest.approx((clipped.mean(), clipped.std()))
    prepare_case("fake_000", plan, tmp_path / "out")  # the test case, at the target spacing
    image = _h5(tmp_path / "out", "fake_000")[0]
    hu = canonical_case(0, modality="ct")[0].astype(np.float64)
    np.testing.assert_allclose(image, (np.clip(hu, lo, hi) - clipped.mean()) / clipped.std(), atol=1e-5)


def test_channel_of_a_4d_image(tmp_path: Path) -> None:
    ds = write_msd(tmp_path, 3, channels=2)
    with pytest.raises(DataError, match=r"lists 2 channels \(0: MRI0, 1: MRI1\); set nifti.channel"):
        find_cases(NiftiSettings(ds))
    with pytest.raises(DataError, match="nifti.channel = 2, but"):
        find_cases(NiftiSettings(ds, channel=2))
    plan = plan_dataset(NiftiSettings(ds, channel=1, target_spacing=SPACING_0), tmp_path / "out")
    record = prepare_case("fake_000", plan, tmp_path / "out")
    assert record["source_shape"][3] == 2 and record["shape"] == list(case_geometry(0)[0])
    image = _h5(tmp_path / "out", "fake_000")[0]
    channels = canonical_case(0, channels=2)[0]
    np.testing.assert_allclose(image, _zscore(channels[..., 1]), atol=1e-5)
    assert not np.allclose(image, _zscore(channels[..., 0]), atol=1e-2)

    nnunet = write_nnunet(tmp_path, 3, channels=2)
    with pytest.raises(DataError, match="lists 2 channels"):
        find_cases(NiftiSettings(nnunet))
    cases = find_cases(NiftiSettings(nnunet, channel=1))[1]
    assert [c.image.name for c in cases] == [f"fake_00{i}_0001.nii.gz" for i in range(3)]


# -- faults ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("layout", "fault", "message"),
    [
        ("msd", fault_missing_file, r"training\[1\] \(case fake_001\): the image file .*fake_001.nii.gz does not"),
        ("nnunet", fault_missing_file, r"nnU-Net case fake_001: .*has no image .*fake_001_0000.nii.gz"),
        ("msd", fault_duplicate, r"training\[4\]: duplicate case 'fake_001' \(training\[1\]"),
        ("msd", fault_unsafe_id, r"imagesTr/fake.bad.nii.gz.*case ID 'fake.bad', which is not a safe ID"),
        ("nnunet", fault_unsafe_id, r"labelsTr/fake.bad.nii.gz.*case ID 'fake.bad', which is not a safe ID"),
    ],
)
def test_bad_dataset_entries_are_refused_before_any_file_is_read(tmp_path: Path, layout, fault, message) -> None:
    ds = (write_msd if layout == "msd" else write_nnunet)(tmp_path / "src", 4)
    fault(ds, "fake_001")
    with pytest.raises(DataError, match=message):
        find_cases(NiftiSettings(ds))
    with pytest.raises(DataError, match=message):
        plan_dataset(NiftiSettings(ds), tmp_path / "out")
    assert not (tmp_path / "out" / "plan.json").exists()


HEADER_FAULTS = [  # refused when the plan is made (from the headers) and when a case is prepared
    (fault_shape, r"image .*fake_001.nii.gz has shape \(\d+, \d+, \d+\), label .*fake_001.nii.gz has shape"),
    (fault_affine, r"the affines of image .*fake_001.nii.gz and label .*fake_001.nii.gz differ by up to 2 mm"),
    (fault_4d, r"fake_001.nii.gz is 4D with 2 channels on its 4th axis \(shape \(\d+, \d+, \d+, 2\)\); set nifti"),
]
DATA_FAULTS = [  # refused when a case is prepared (from the voxels)
    (fault_nan, r"case fake_001: .*imagesTr/fake_001.nii.gz holds 1 non-finite voxel values"),
    (fault_label_value, r"case fake_001: the label .*labelsTr/fake_001.nii.gz holds values \[7\] that dataset"),
    (fault_empty_foreground, r"training case fake_001: the label .*fake_001.nii.gz has no voxel of the foreground"),
]


@pytest.mark.parametrize(("fault", "message"), HEADER_FAULTS)
def test_header_faults_stop_the_plan(tmp_path: Path, fault, message) -> None:
    ds = write_msd(tmp_path / "src", 4)
    fault(ds, "fake_001")
    with pytest.raises(DataError, match=message):
        plan_dataset(NiftiSettings(ds), tmp_path / "out")
    assert not (tmp_path / "out" / "plan.json").exists()


@pytest.mark.parametrize(("fault", "message"), HEADER_FAULTS + DATA_FAULTS)
def test_a_refused_case_leaves_none_of_its_files(tmp_path: Path, fault, message) -> None:
    ds = write_msd(tmp_path / "src", 4)
    out = tmp_path / "out"
    plan = plan_dataset(NiftiSettings(ds, test_list=_write(tmp_path / "t.txt", "fake_000\n")), out)
    for entry in plan["cases"]:  # files of an earlier, successful preparation
        prepare_case(entry["id"], plan, out)
    assert [p.name for p in _case_outputs(out, "fake_001")] == ["fake_001.h5", "fake_001.json", "fake_001.png"]
    fault(ds, "fake_001")  # the source changes after the plan
    with pytest.raises(DataError, match=message):
        prepare_case("fake_001", plan, out)
    assert _case_outputs(out, "fake_001") == []
    assert not list(out.rglob("*.tmp*"))
    with pytest.raises(DataError, match=r"case fake_001: .*fake_001.h5 is missing; rerun .*nifti-case"):
        write_manifest(out)
    assert not (out / "manifest.json").exists()


def test_a_test_case_without_foreground_is_refused_by_name(tmp_path: Path) -> None:
    """Dice, HD95 and ASD are undefined against an empty reference: refused when the case is prepared, naming the
    case, its label file and the fix, instead of a traceback when it is evaluated."""
    ds = write_msd(tmp_path / "src", 4)
    fault_empty_foreground(ds, "fake_000")
    out = tmp_path / "out"
    plan = plan_dataset(NiftiSettings(ds, test_list=_write(tmp_path / "t.txt", "fake_000\n")), out)
    with pytest.raises(
        DataError, match=r"test case fake_000: the label .*fake_000.nii.gz has no voxel .*remove the case"
    ):
        prepare_case("fake_000", plan, out)
    assert _case_outputs(out, "fake_000") == []


def test_qa_warns_about_sides_below_16_voxels(tmp_path: Path) -> None:
    ds = write_msd(tmp_path / "src", 3)
    out = tmp_path / "out"
    _prepare_all(NiftiSettings(ds, target_spacing=(3.0, 3.0, 3.0)), out)
    record = json.loads((out / "qa" / "fake_000.json").read_text())
    assert record["shape"] == [9, 10, 13]  # 28 × 1.0 / 3, 24 × 1.2 / 3, 20 × 2.0 / 3
    assert [w.split(" side")[0] for w in record["warnings"]] == ["x", "y", "z"]
    assert PreparedData.open(out, "case_h5").spacing_mm == (3.0, 3.0, 3.0)  # still a valid dataset


# -- the manifest ----------------------------------------------------------------------------------------------------
def test_manifest_satisfies_the_prepared_data_contract(msd: dict) -> None:
    out, plan = msd["out"], msd["plan"]
    data = PreparedData.open(out, "case_h5")
    assert data.spacing_mm == tuple(plan["target_spacing"])
    assert list(data.train_ids) == [c["id"] for c in plan["cases"] if c["split"] == "train"]
    assert list(data.test_ids) == [c["id"] for c in plan["cases"] if c["split"] == "test"]
    image, label = data.load(data.train_ids[0], with_label=True)
    assert image.dtype == np.float32 and label.dtype == np.uint8 and label.any()
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: manifest[k] for k in ("dataset", "source", "format", "layout", "foreground", "modality")} == {
        "dataset": "fake",
        "source": "nifti",
        "format": "case_h5",
        "layout": "msd",
        "foreground": [1],
        "modality": "mri",
    }
    assert manifest["spacing_mm"] == plan["target_spacing"] and manifest["normalisation"] == plan["normalisation"]
    assert (manifest["n_train"], manifest["n_test"]) == (6, 2)
    assert manifest["dataset_json_sha256"] == sha256_file(msd["ds"] / "dataset.json")
    for cid, case in manifest["cases"].items():
        qa = json.loads((out / "qa" / f"{cid}.json").read_text())
        assert qa["h5_sha256"] == case["sha256"] and (out / "qa" / f"{cid}.png").stat().st_size > 0
        assert case["image"] == f"imagesTr/{cid}.nii.gz"
    text = (out / "manifest.json").read_text()
    assert str(msd["ds"].parent) not in text and str(out) not in text  # no path of this machine


def test_spacing_mm_is_optional_checked_and_pickled(msd: dict, tmp_path: Path) -> None:
    write_synthetic_la(tmp_path / "la", n_train=2, n_test=1, seed=0, shape_xy=((18, 20), (17, 19)), shape_z=16)
    assert PreparedData.open(tmp_path / "la", "la_h5").spacing_mm is None  # a manifest without spacing_mm
    data = PreparedData.open(msd["out"], "case_h5")
    assert pickle.loads(pickle.dumps(data)).spacing_mm == data.spacing_mm
    out = Path(shutil.copytree(msd["out"], tmp_path / "fake"))
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(manifest | {"spacing_mm": [1.0, 0.0, 2.0]}))
    with pytest.raises(DataError, match=r"manifest.json: 'spacing_mm' must be 3 positive numbers"):
        PreparedData.open(out, "case_h5")


def test_manifest_is_byte_identical_when_rebuilt(msd: dict, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "fake"
    _prepare_all(NiftiSettings(msd["ds"]), out)
    for name in ("manifest.json", "train.list", "test.list"):
        assert (out / name).read_bytes() == (msd["out"] / name).read_bytes(), name


def test_manifest_refuses_changed_cases(msd: dict, tmp_path: Path) -> None:
    out = Path(shutil.copytree(msd["out"], tmp_path / "fake"))
    cid = PreparedData.open(out, "case_h5").train_ids[0]
    with h5py.File(out / "cases" / f"{cid}.h5", "r+") as f:
        f["label"][...] = 0
    with pytest.raises(DataError, match=rf"training case {cid}: .*{cid}.h5 has an empty label; rerun"):
        write_manifest(out)
    assert not (out / "manifest.json").exists()
    shutil.copy(msd["out"] / "cases" / f"{cid}.h5", out / "cases" / f"{cid}.h5")
    other = PreparedData.open(msd["out"], "case_h5").train_ids[1]
    shutil.copy(msd["out"] / "qa" / f"{other}.json", out / "qa" / f"{cid}.json")
    with pytest.raises(DataError, match=rf"case {cid}: .* is not the file its QA record"):
        write_manifest(out)


# -- the commands ----------------------------------------------------------------------------------------------------
def test_cli_commands_prepare_a_dataset(tmp_path: Path) -> None:
    ds = write_nnunet(tmp_path / "src", 4, modality="mri")
    out = tmp_path / "fake"
    settings = json.dumps({"root": str(ds), "test": {"fraction": 0.25, "seed": 1}})
    assert main(["nifti-plan", "--settings", settings, "--out", str(out)]) == 0
    for cid in (case_id(i) for i in range(4)):
        assert main(["nifti-case", "--out", str(out), "--case", cid, "--threads", "1"]) == 0
    assert main(["nifti-manifest", "--out", str(out)]) == 0
    data = PreparedData.open(out, "case_h5")
    assert len(data.train_ids) == 3 and len(data.test_ids) == 1 and data.spacing_mm is not None
    assert main(["nifti-case", "--out", str(out), "--case", "fake_042"]) == 2
    assert main(["nifti-plan", "--settings", "{root: x}", "--out", str(out)]) == 2


def test_the_module_does_not_import_torch() -> None:
    code = "import sys, harness.data.nifti; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
