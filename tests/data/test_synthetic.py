"""Synthetic LA-like data: released on-disk format, determinism, z-border contact, non-trivial target, speed."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from harness.data.download import sha256_file
from harness.data.prepared import PreparedData
from harness.data.synthetic import make_synthetic_case, write_synthetic_la

TRAIN_DIR = "2018LA_Seg_Training Set"
N_TRAIN, N_TEST, SEED = 6, 3, 7


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("la_synth")
    return root, write_synthetic_la(root, n_train=N_TRAIN, n_test=N_TEST, seed=SEED)


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["image"][...], f["label"][...]


def _best_threshold_dice(image: np.ndarray, label: np.ndarray) -> float:
    """Exact max over all thresholds t of Dice(image > t, label): rank voxels by intensity, cumulative TP."""
    order = np.argsort(-image.ravel(), kind="stable")
    tp = np.cumsum(label.ravel()[order].astype(np.int64))
    n_pred = np.arange(1, tp.size + 1)
    return float((2 * tp / (n_pred + label.sum())).max())


def test_layout_matches_released_la(synth: tuple[Path, dict]) -> None:
    root, manifest = synth
    assert sorted(p.name for p in root.iterdir()) == [TRAIN_DIR, "manifest.json", "test.list", "train.list"]
    train_text, test_text = (root / "train.list").read_text(), (root / "test.list").read_text()
    assert train_text.endswith("\n") and test_text.endswith("\n")
    train, test = train_text.splitlines(), test_text.splitlines()
    assert len(train) == N_TRAIN and len(test) == N_TEST
    assert train == sorted(train) == manifest["train"]
    assert test == manifest["test"]
    ids = train + test
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9A-Z]{20}", i) for i in ids)
    case_dirs = sorted((root / TRAIN_DIR).iterdir())
    assert [d.name for d in case_dirs] == sorted(ids)
    for d in case_dirs:  # exactly one file per case, no temporary left behind
        assert [p.name for p in d.iterdir()] == ["mri_norm2.h5"]


def test_h5_content_matches_released_la(synth: tuple[Path, dict]) -> None:
    root, manifest = synth
    for cid, info in manifest["cases"].items():
        with h5py.File(root / TRAIN_DIR / cid / "mri_norm2.h5", "r") as f:
            assert sorted(f.keys()) == ["image", "label"]
            assert len(f.attrs) == 0 and len(f["image"].attrs) == 0 and len(f["label"].attrs) == 0
            img, lab = f["image"], f["label"]
            assert img.dtype == np.dtype("<f4") and lab.dtype == np.uint8
            assert img.compression == "gzip" and lab.compression == "gzip"
            image, label = img[...], lab[...]
        x, y, z = image.shape
        assert label.shape == image.shape == tuple(info["shape"])
        assert 52 <= x <= 64 and 48 <= y <= 56 and z == 40
        assert set(np.unique(label).tolist()) == {0, 1}
        assert int(label.sum()) == info["fg_voxels"] > 0
        assert abs(float(image.mean())) < 1e-3 and abs(float(image.std()) - 1) < 1e-3  # whole-volume z-score
        assert not label[:3].any() and not label[-3:].any() and not label[:, :3].any() and not label[:, -3:].any()


def test_same_seed_same_arrays_other_seed_differs(tmp_path: Path, synth: tuple[Path, dict]) -> None:
    root, manifest = synth
    again = write_synthetic_la(tmp_path / "a", n_train=N_TRAIN, n_test=N_TEST, seed=SEED)
    assert again["train"] == manifest["train"] and again["test"] == manifest["test"]
    assert again["cases"] == manifest["cases"]
    for cid in manifest["cases"]:
        img0, lab0 = _read(root / TRAIN_DIR / cid / "mri_norm2.h5")
        img1, lab1 = _read(tmp_path / "a" / TRAIN_DIR / cid / "mri_norm2.h5")
        np.testing.assert_array_equal(img0, img1)
        np.testing.assert_array_equal(lab0, lab1)
    other = write_synthetic_la(tmp_path / "b", n_train=N_TRAIN, n_test=N_TEST, seed=SEED + 1)
    assert not set(other["cases"]) & set(manifest["cases"])
    img_other, _ = _read(tmp_path / "b" / TRAIN_DIR / other["test"][0] / "mri_norm2.h5")
    img_this, _ = _read(root / TRAIN_DIR / manifest["test"][0] / "mri_norm2.h5")
    assert img_other.shape != img_this.shape or not np.array_equal(img_other, img_this)


def test_manifest_follows_the_prepared_data_contract(synth: tuple[Path, dict]) -> None:
    root, manifest = synth
    on_disk = json.loads((root / "manifest.json").read_text())
    assert {**on_disk, "train": manifest["train"], "test": manifest["test"]} == manifest  # returned = written + lists
    assert on_disk["dataset"] == on_disk["source"] == "synthetic" and on_disk["format"] == "la_h5"
    assert (on_disk["seed"], on_disk["n_train"], on_disk["n_test"]) == (SEED, N_TRAIN, N_TEST)
    assert on_disk["generator"] == {"shape_xy": [[52, 64], [48, 56]], "shape_z": 40}
    assert on_disk["lists"] == {name: sha256_file(root / name) for name in ("train.list", "test.list")}
    assert len(on_disk["cases"]) == N_TRAIN + N_TEST
    assert set(on_disk["cases"]) == set(manifest["train"]) | set(manifest["test"])
    for cid, case in on_disk["cases"].items():
        assert case["split"] == ("train" if cid in manifest["train"] else "test")
        assert case["sha256"] == sha256_file(root / TRAIN_DIR / cid / "mri_norm2.h5")
    assert str(root) not in (root / "manifest.json").read_text() and "root" not in on_disk  # no paths
    data = PreparedData.open(root, "la_h5")  # what training and evaluation open
    assert data.train_ids == tuple(manifest["train"]) and data.test_ids == tuple(manifest["test"])


def test_same_seed_writes_a_byte_identical_manifest(tmp_path: Path, synth: tuple[Path, dict]) -> None:
    root, _ = synth
    again = tmp_path / "elsewhere" / "again"
    write_synthetic_la(again, n_train=N_TRAIN, n_test=N_TEST, seed=SEED)
    assert (again / "manifest.json").read_bytes() == (root / "manifest.json").read_bytes()
    other = tmp_path / "other"
    write_synthetic_la(other, n_train=N_TRAIN, n_test=N_TEST, seed=SEED + 1)
    assert (other / "manifest.json").read_bytes() != (root / "manifest.json").read_bytes()


def test_an_interrupted_rewrite_leaves_no_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.data.synthetic as synthetic

    small = {"n_train": 2, "n_test": 1, "seed": 0, "shape_xy": ((16, 16), (16, 16)), "shape_z": 16}
    (tmp_path / "manifest.json").write_text("{}")  # the manifest of an earlier preparation

    def crash(*args, **kwargs):
        raise RuntimeError("interrupted")

    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "make_synthetic_case", crash)
        with pytest.raises(RuntimeError, match="interrupted"):
            write_synthetic_la(tmp_path, **small)
    assert not (tmp_path / "manifest.json").exists()  # training cannot start on half-written data
    written = write_synthetic_la(tmp_path, **small)
    assert json.loads((tmp_path / "manifest.json").read_text())["cases"] == written["cases"]
    assert not list(tmp_path.glob("*.tmp"))


def test_label_touches_z_border_in_about_a_third(synth: tuple[Path, dict]) -> None:
    root, manifest = synth
    touching = 0
    for cid, info in manifest["cases"].items():
        _, label = _read(root / TRAIN_DIR / cid / "mri_norm2.h5")
        touches = bool(label[:, :, 0].any() or label[:, :, -1].any())
        assert touches == info["touches_z_border"]
        touching += touches
    assert touching == 3  # generation order k = 0, 3, 6 of the 9 cases


@pytest.mark.parametrize("seed", range(6))
def test_touch_z_flag_is_honoured(seed: int) -> None:
    for touch in (True, False):
        _, label = make_synthetic_case(np.random.default_rng(seed), (52, 48, 40), touch_z=touch)
        assert bool(label[:, :, 0].any() or label[:, :, -1].any()) == touch
        assert label.any()


def test_threshold_does_not_solve_the_task(synth: tuple[Path, dict]) -> None:
    """The distractors are as bright as the target: the best global threshold stays well below Dice 0.9."""
    root, manifest = synth
    dices = []
    for cid in manifest["cases"]:
        image, label = _read(root / TRAIN_DIR / cid / "mri_norm2.h5")
        dices.append(_best_threshold_dice(image, label))
        assert float(image[label == 1].mean()) > float(image[label == 0].mean()) + 1.0  # the target is bright
    # measured for seed 7: 0.56-0.70 (30 single cases, seeds 0-29: 0.53-0.81, median 0.65)
    assert max(dices) < 0.9
    assert float(np.median(dices)) < 0.8
    assert min(dices) > 0.3


def test_best_threshold_dice_oracle_on_tiny_case() -> None:
    image = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    label = np.array([1, 0, 1, 0, 0], np.uint8)
    # thresholds keep the top 1, 2, 3 ... voxels: Dice 2/3, 1/2, 4/5, 2/3, 4/7
    assert _best_threshold_dice(image, label) == pytest.approx(0.8)


def test_generation_speed() -> None:
    times = []
    for seed in range(5):
        t0 = time.perf_counter()
        make_synthetic_case(np.random.default_rng(seed), (64, 56, 40))
        times.append(time.perf_counter() - t0)
    assert float(np.median(times)) < 0.3  # measured ~0.02 s


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_train": 0, "n_test": 1}, "n_train"),
        ({"n_train": 2, "n_test": -1}, "n_test"),
        ({"n_train": 2, "n_test": 1, "shape_xy": ((60, 50), (48, 56))}, "shape_xy"),
        ({"n_train": 2, "n_test": 1, "shape_z": 8}, "shape_z"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_synthetic_la(tmp_path, seed=0, **kwargs)
    assert not any(tmp_path.iterdir())


def test_bad_case_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        make_synthetic_case(np.random.default_rng(0), (40, 40))
