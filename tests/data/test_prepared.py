"""The prepared dataset (harness.data.prepared): every way the data on disk can differ from what was prepared and
recorded in manifest.json is refused with a message naming the file and the fix."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from harness.data.download import DataError
from harness.data.prepared import PreparedData, la_case_path, load_case
from harness.data.splits import read_list
from harness.data.synthetic import write_synthetic_la

SHAPE = {"shape_xy": ((18, 20), (17, 19)), "shape_z": 16}


@pytest.fixture(scope="module")
def prepared_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset of 4 train + 2 test cases with its manifest (copied by `root`, never modified)."""
    root = tmp_path_factory.mktemp("prepared") / "data"
    write_synthetic_la(root, n_train=4, n_test=2, seed=11, **SHAPE)
    return root


@pytest.fixture
def root(prepared_template: Path, tmp_path: Path) -> Path:
    """A private copy of the prepared dataset that a test may damage."""
    return Path(shutil.copytree(prepared_template, tmp_path / "data"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _re(path: Path) -> str:
    """A path as a regular expression that matches it literally."""
    return re.escape(str(path))


def _edit_manifest(root: Path, edit) -> None:
    """Apply `edit(manifest dict)` to `<root>/manifest.json` in place."""
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _record_list(root: Path, name: str) -> None:
    """Record the current sha256 of a list in the manifest, as if the data had been prepared with it."""
    _edit_manifest(root, lambda m: m["lists"].__setitem__(name, _sha(root / name)))


def _record_case(root: Path, case_id: str) -> None:
    """Record the current sha256 of a case file in the manifest."""
    _edit_manifest(root, lambda m: m["cases"][case_id].__setitem__("sha256", _sha(la_case_path(root, case_id))))


# -- the happy path --------------------------------------------------------------------------------------------------
def test_open_reads_the_verified_lists_and_loads_like_load_case(root: Path) -> None:
    data = PreparedData.open(root, "la_h5")
    assert data.root == root and data.format == "la_h5"
    assert data.train_ids == tuple(read_list(root / "train.list")) and len(data.train_ids) == 4
    assert data.test_ids == tuple(read_list(root / "test.list")) and len(data.test_ids) == 2
    assert data.manifest_sha256 == _sha(root / "manifest.json")
    assert set(data.case_sha256) == set(data.train_ids) | set(data.test_ids)
    for cid in data.train_ids + data.test_ids:
        assert data.path(cid) == la_case_path(root, cid)
        assert data.case_sha256[cid] == _sha(data.path(cid))
        image, label = data.load(cid, with_label=True)
        ref_image, ref_label = load_case(data.path(cid), with_label=True)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        np.testing.assert_array_equal(image, ref_image)
        np.testing.assert_array_equal(label, ref_label)
        image_only, none = data.load(cid, with_label=False)
        assert none is None
        np.testing.assert_array_equal(image_only, ref_image)


def test_prepared_data_is_read_only_and_pickles(root: Path) -> None:
    data = PreparedData.open(root, "la_h5")
    with pytest.raises(TypeError):
        data.case_sha256["X"] = "0" * 64  # type: ignore[index]
    again = pickle.loads(pickle.dumps(data))  # process pools (harness.report.sensitivity) send it to workers
    assert again == data and dict(again.case_sha256) == dict(data.case_sha256)
    case = data.test_ids[0]
    np.testing.assert_array_equal(again.load(case, with_label=True)[1], data.load(case, with_label=True)[1])


def test_import_does_not_pull_in_torch() -> None:
    code = "import sys, harness.data.prepared; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the manifest ----------------------------------------------------------------------------------------------------
def test_missing_manifest(root: Path) -> None:
    (root / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"manifest\.json does not exist: run the data preparation.*snakemake"):
        PreparedData.open(root, "la_h5")


def test_unreadable_manifest(root: Path) -> None:
    (root / "manifest.json").write_text('{"lists": ')
    with pytest.raises(DataError, match=r"manifest\.json is not readable JSON.*delete .*manifest\.json and rerun"):
        PreparedData.open(root, "la_h5")


@pytest.mark.parametrize("old", ["empty", "pre_lists"])
def test_old_style_manifest_without_lists(root: Path, old: str) -> None:
    if old == "empty":
        (root / "manifest.json").write_text("{}")  # what tests/conftest.py used to write
    else:  # what `harness make-synthetic` wrote before the manifests carried the list and case sha256
        manifest = json.loads((root / "manifest.json").read_text())
        train, test = read_list(root / "train.list"), read_list(root / "test.list")
        cases = {cid: {k: v for k, v in c.items() if k != "sha256"} for cid, c in manifest["cases"].items()}
        legacy = {"source": "synthetic", "seed": 11, "root": str(root), "train": train, "test": test, "cases": cases}
        (root / "manifest.json").write_text(json.dumps(legacy))
    with pytest.raises(DataError, match=r"no 'lists'.*older version.*delete .*manifest\.json and rerun the workflow"):
        PreparedData.open(root, "la_h5")


def test_case_without_sha256(root: Path) -> None:
    cid = read_list(root / "test.list")[1]
    _edit_manifest(root, lambda m: m["cases"][cid].pop("sha256"))
    with pytest.raises(DataError, match=rf"records no sha256 for the cases \['{cid}'\]"):
        PreparedData.open(root, "la_h5")


def test_format_must_match_the_manifest(root: Path) -> None:
    with pytest.raises(DataError, match=r"records format 'la_h5', the configuration says 'pancreas_h5'"):
        PreparedData.open(root, "pancreas_h5")
    with pytest.raises(ValueError, match="fmt must be one of"):
        PreparedData.open(root, "nifti")


# -- the lists -------------------------------------------------------------------------------------------------------
def test_missing_list(root: Path) -> None:
    (root / "test.list").unlink()
    with pytest.raises(DataError, match=r"test\.list is missing: restore it, or delete .*manifest\.json"):
        PreparedData.open(root, "la_h5")


def test_list_edited_after_preparation(root: Path) -> None:
    ids = read_list(root / "test.list")
    recorded = _sha(root / "test.list")
    (root / "test.list").write_text("".join(f"{i}\n" for i in reversed(ids)))  # same IDs, another order
    message = (
        rf"test\.list changed after the data was prepared \(sha256 {_sha(root / 'test.list')}, manifest\.json says "
        rf"{recorded}\): restore it, or delete .*manifest\.json and rerun the workflow to prepare the data again"
    )
    with pytest.raises(DataError, match=message):
        PreparedData.open(root, "la_h5")


def test_test_id_copied_into_train_list(root: Path) -> None:
    leaked = read_list(root / "test.list")[0]
    with (root / "train.list").open("a") as f:
        f.write(f"{leaked}\n")
    with pytest.raises(DataError, match=r"train\.list changed after the data was prepared"):
        PreparedData.open(root, "la_h5")
    _record_list(root, "train.list")  # even a manifest that records such lists is refused
    with pytest.raises(DataError, match=rf"test-set leakage: \['{leaked}'\] are in both train\.list and test\.list"):
        PreparedData.open(root, "la_h5")


@pytest.mark.parametrize("bad", ["../../x", "../../../../x", "/etc/passwd", "a.b"])
def test_unsafe_id_in_test_list(root: Path, prepared_template: Path, bad: str) -> None:
    with (root / "test.list").open("a") as f:
        f.write(f"{bad}\n")
    with pytest.raises(DataError, match=rf"test\.list, line 3: unsafe case ID {re.escape(repr(bad))}.*dots"):
        PreparedData.open(root, "la_h5")
    data = PreparedData.open(prepared_template, "la_h5")
    with pytest.raises(DataError, match="not in the prepared dataset"):
        data.load(bad, with_label=False)  # an unknown ID never becomes a path


def test_lists_must_hold_the_manifest_cases_per_split(root: Path) -> None:
    train = read_list(root / "train.list")
    (root / "train.list").write_text("".join(f"{i}\n" for i in train[1:]))
    _record_list(root, "train.list")
    message = rf"train\.list does not match .*train cases missing from the list: \['{train[0]}'\]"
    with pytest.raises(DataError, match=message):
        PreparedData.open(root, "la_h5")


def test_case_recorded_under_the_other_split(root: Path) -> None:
    cid = read_list(root / "test.list")[0]
    _edit_manifest(root, lambda m: m["cases"][cid].__setitem__("split", "train"))
    message = (
        r"train\.list does not match .*: IDs not recorded as train cases: \[\]; train cases missing from the list: "
    )
    with pytest.raises(DataError, match=message + rf"\['{cid}'\]"):
        PreparedData.open(root, "la_h5")


def test_manifest_case_outside_both_lists(root: Path) -> None:
    _edit_manifest(root, lambda m: m["cases"].__setitem__("EXTRA0", {"split": "validation", "sha256": "0" * 64}))
    with pytest.raises(DataError, match=r"cases without a 'train' or 'test' split: \['EXTRA0'\]"):
        PreparedData.open(root, "la_h5")


# -- the case files --------------------------------------------------------------------------------------------------
def test_case_file_modified_after_preparation(root: Path) -> None:
    data = PreparedData.open(root, "la_h5")
    cid = data.test_ids[0]
    path = data.path(cid)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte flipped, size kept
    path.write_bytes(bytes(raw))
    message = (
        rf"{_re(path)} changed after the data was prepared \(sha256 {_sha(path)}, manifest\.json says "
        rf"{data.case_sha256[cid]}\): the numbers would not be those of the prepared dataset\. "
        rf"Delete {_re(path)} and {_re(root / 'manifest.json')}, then rerun the workflow"
    )
    for with_label in (True, False):
        with pytest.raises(DataError, match=message):
            data.load(cid, with_label=with_label)
    data.load(data.test_ids[1], with_label=True)  # the other cases still load


def test_truncated_case_file(root: Path) -> None:
    data = PreparedData.open(root, "la_h5")
    cid = data.train_ids[0]
    path = data.path(cid)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{_re(path)} changed after the data was prepared"):
        data.load(cid, with_label=True)
    _record_case(root, cid)  # as if the truncated file had been prepared: the h5 parser must catch it
    data = PreparedData.open(root, "la_h5")
    damaged = rf"{_re(path)} is damaged or incomplete \(h5py cannot read it: .*truncated.*\)\. Delete {_re(path)} and "
    with pytest.raises(DataError, match=damaged + rf"{_re(root / 'manifest.json')}, then rerun the workflow"):
        data.load(cid, with_label=False)
    with pytest.raises(DataError, match=damaged + r"the dataset's manifest\.json"):
        load_case(path, with_label=True)


def test_missing_case_file(root: Path) -> None:
    data = PreparedData.open(root, "la_h5")
    path = data.path(data.test_ids[1])
    path.unlink()
    with pytest.raises(DataError, match=rf"{_re(path)} is missing .*Delete {_re(root / 'manifest.json')}, then rerun"):
        data.load(data.test_ids[1], with_label=True)


def _replace_case(root: Path, cid: str, write) -> Path:
    """Rewrite a case file as its image plus what `write(file, image)` adds; record its new sha256 in the manifest."""
    path = la_case_path(root, cid)
    image, _ = load_case(path, with_label=False)
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        write(f, image)
    _record_case(root, cid)
    return path


def test_without_label_the_label_is_never_read(root: Path) -> None:
    train = read_list(root / "train.list")
    images = {cid: load_case(la_case_path(root, cid), with_label=False)[0] for cid in train[:2]}

    def corrupt_label(f: h5py.File, image: np.ndarray) -> None:
        f.create_dataset("label", data=np.zeros(image.shape, np.uint8), chunks=image.shape, compression="gzip")

    _replace_case(root, train[0], lambda f, image: None)  # image only
    corrupt = _replace_case(root, train[1], corrupt_label)
    with h5py.File(corrupt, "r") as f:
        chunk = f["label"].id.get_chunk_info(0)
    raw = bytearray(corrupt.read_bytes())
    raw[chunk.byte_offset : chunk.byte_offset + chunk.size] = b"\x00" * chunk.size  # not a gzip stream any more
    corrupt.write_bytes(bytes(raw))
    _record_case(root, train[1])
    data = PreparedData.open(root, "la_h5")
    for cid in train[:2]:
        image, label = data.load(cid, with_label=False)
        assert label is None
        np.testing.assert_array_equal(image, images[cid])
    assert load_case(corrupt, with_label=False)[1] is None
    with pytest.raises(ValueError, match=r"no dataset 'label'"):
        data.load(train[0], with_label=True)
    with pytest.raises(DataError, match=rf"{_re(corrupt)} is damaged or incomplete"):
        data.load(train[1], with_label=True)
