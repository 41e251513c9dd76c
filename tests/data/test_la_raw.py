"""LA raw nrrd source (protocol §1.4-1.5): seeded margins, the x/y crop rule, whole-volume z-score, QA errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from harness.data import la
from harness.data.dataset import la_case_path, load_case
from harness.data.download import DataError

CASE = "06SR5RBREL16DQ6M8LWS"


def _raw(tmp_path, shape=(300, 150, 88), box=((60, 210), (10, 50), (30, 60)), mask_value=255):
    """Raw case folder: uint8 image with a bright box, mask 255 in the same box (x, y, z)."""
    import nrrd

    rng = np.random.default_rng(3)
    image = rng.integers(0, 60, shape).astype(np.uint8)
    mask = np.zeros(shape, np.uint8)
    (x0, x1), (y0, y1), (z0, z1) = box
    mask[x0:x1, y0:y1, z0:z1] = mask_value
    image[mask > 0] += 120
    folder = tmp_path / "raw" / CASE
    folder.mkdir(parents=True)
    nrrd.write(str(folder / "lgemri.nrrd"), image)
    nrrd.write(str(folder / "laendo.nrrd"), mask)
    return folder, image, mask


def test_margins_are_seeded_per_case_and_in_range():
    a = la.draw_margins(CASE, 0)
    assert a == la.draw_margins(CASE, 0)
    assert all(10 <= a[k] <= 19 for k in ("x_lo", "x_hi", "y_lo", "y_hi")) and all(
        5 <= a[k] <= 9 for k in ("z_lo", "z_hi")
    )
    others = [la.draw_margins(CASE, s) for s in range(1, 6)] + [la.draw_margins("0RZDK210BSMWAA6467LU", 0)]
    assert any(o != a for o in others)


def test_crop_box_by_hand():
    label = np.zeros((300, 150, 88), np.uint8)
    label[60:210, 10:50, 30:60] = 1  # x 60-209 (extent 149 > 112: no pad), y 10-49 (extent 39: pad (112-39)//2 = 36)
    m = {"x_lo": 11, "x_hi": 12, "y_lo": 13, "y_hi": 14, "z_lo": 5, "z_hi": 6}
    xs, ys = la.crop_box(label, m)
    assert (xs.start, xs.stop) == (60 - 11, 209 + 12)
    assert (ys.start, ys.stop) == (0, 49 + 14 + 36)  # 10 − 13 − 36 < 0: clipped


def test_preprocess_raw_case(tmp_path):
    folder, image, mask = _raw(tmp_path)
    fg = int((mask == 255).sum())
    record = la.preprocess_raw_case(folder, tmp_path / "root", CASE, seed=7, expected_fg=fg)
    m = la.draw_margins(CASE, 7)
    xs = slice(60 - m["x_lo"], 209 + m["x_hi"])
    ys = slice(0, 49 + m["y_hi"] + 36)
    assert record["margins"] == m and record["crop_x"] == [xs.start, xs.stop] and record["crop_y"] == [0, ys.stop]
    img, lab = load_case(la_case_path(tmp_path / "root", CASE), with_label=True)
    expected = ((image - image.mean()) / image.std()).astype(np.float32)[xs, ys]  # z-score before the crop
    np.testing.assert_allclose(img, expected, rtol=1e-6, atol=1e-6)
    assert img.shape[2] == 88 and int(lab.sum()) == fg and lab.dtype == np.uint8
    with h5py.File(la_case_path(tmp_path / "root", CASE)) as f:
        assert sorted(f) == ["image", "label"] and f["image"].dtype == np.float32 and not dict(f.attrs)
    assert json.loads((tmp_path / "root" / "raw_margins" / f"{CASE}.json").read_text()) == record


@pytest.mark.parametrize(
    ("kwargs", "expected_fg", "message"),
    [
        ({"shape": (120, 100, 80), "box": ((40, 80), (30, 60), (10, 40))}, None, "80 slices, expected 88"),
        ({}, 1, "label has 180000 voxels, the manifest says 1"),
        ({"mask_value": 1}, None, "no voxel equal to 255"),
    ],
)
def test_raw_qa_errors_write_nothing(tmp_path, kwargs, expected_fg, message):
    folder, *_ = _raw(tmp_path, **kwargs)
    with pytest.raises(DataError, match=message):
        la.preprocess_raw_case(folder, tmp_path / "root", CASE, seed=0, expected_fg=expected_fg)
    assert not (tmp_path / "root").exists()


def test_missing_raw_file_is_named(tmp_path):
    folder, *_ = _raw(tmp_path)
    (folder / "laendo.nrrd").unlink()
    with pytest.raises(DataError, match=r"laendo.nrrd is missing"):
        la.preprocess_raw_case(folder, tmp_path / "root", CASE, seed=0, expected_fg=None)


def test_raw_manifest_needs_the_margin_records(tmp_path):
    from harness.data.download import sha256_file, write_list

    root = tmp_path / "root"
    ids = ["06SR5RBREL16DQ6M8LWS", "UPT6DX9IQY9JAZ7HJKA7"]  # one train, one test case of the manifest
    for case_id in ids:
        folder, *_ = _raw(tmp_path / case_id)
        la.preprocess_raw_case(folder, root, case_id, seed=7, expected_fg=None)
    write_list(root / "train.list", ids[:1])
    write_list(root / "test.list", ids[1:])
    hashes = {n: sha256_file(root / n) for n in ("train.list", "test.list")}
    manifest = la.write_manifest(root, source="raw_nrrd", crop_seed=7, list_sha256=hashes)
    assert manifest["la_source"] == "raw_nrrd" and manifest["origin"] == {"crop_seed": 7}
    assert manifest["cases"][ids[1]]["split"] == "test" and len(manifest["cases"][ids[0]]["margins_sha256"]) == 64
    (root / "manifest.json").unlink()
    (root / "raw_margins" / f"{ids[1]}.json").unlink()
    with pytest.raises(DataError, match=f"LA case {ids[1]}: .*raw_margins/{ids[1]}.json is missing"):
        la.write_manifest(root, source="raw_nrrd", crop_seed=7, list_sha256=hashes)
    assert not (root / "manifest.json").exists()
