"""Loading, augmentation, samplers, batch plan, patch dataset, collate, loader (docs/protocol.md §1.3, §3.1, §3.2)."""

from __future__ import annotations

import csv
import os
import random
import re
from itertools import islice
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from harness.data.dataset import (
    PLAN_STREAM,
    PatchDataset,
    _seed_worker,
    augment,
    batch_plan,
    collate,
    la_case_path,
    labeled_only_batches,
    load_case,
    make_loader,
    random_crop,
    random_rot_flip,
    stage_plan,
    two_stream_batches,
)
from harness.data.download import DataError
from harness.data.splits import read_list
from harness.data.synthetic import write_synthetic_la
from harness.method import Batch

SHARED = Path(__file__).resolve().parents[3] / "shared"
LA_MINI = SHARED / "data" / "la-mini" / "yulequan" / "UA-MT" / "88ed29ad794f877122e542a7fa9505a76fa83515" / "data"
# The same bytes as the project's harness/data/manifests/la_manifest.csv (tests/data/test_la_data.py compares them).
LA_MANIFEST = SHARED / "spec" / "la_manifest.csv"


def _need(path: Path) -> None:
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing test data {path}")
        pytest.skip(f"missing test data {path}")


def _write_h5(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for name, arr in datasets.items():
            f.create_dataset(name, data=arr)
    return path


# -- loading ---------------------------------------------------------------------------------------------------------
def test_la_case_path() -> None:
    assert la_case_path("/d", "ABC") == Path("/d/2018LA_Seg_Training Set/ABC/mri_norm2.h5")


def test_load_real_la_cases() -> None:
    _need(LA_MINI / "train.list")
    _need(LA_MANIFEST)
    with LA_MANIFEST.open() as f:
        manifest = {row["id"]: row for row in csv.DictReader(f)}
    first = read_list(LA_MINI / "train.list")[0]
    image, label = load_case(la_case_path(LA_MINI, first), with_label=True)
    assert first == "06SR5RBREL16DQ6M8LWS"
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert image.shape == label.shape == (183, 140, 88)
    row = manifest[first]
    assert image.shape == (int(row["shape_x"]), int(row["shape_y"]), int(row["shape_z"]))
    assert int(label.sum()) == int(row["fg_voxels"])
    image_only, none = load_case(la_case_path(LA_MINI, first), with_label=False)
    assert none is None
    np.testing.assert_array_equal(image_only, image)


def test_load_synthetic_cases_with_the_same_code(tmp_path: Path) -> None:
    manifest = write_synthetic_la(tmp_path, n_train=2, n_test=1, seed=3)
    for cid in read_list(tmp_path / "train.list") + read_list(tmp_path / "test.list"):
        image, label = load_case(la_case_path(tmp_path, cid), with_label=True)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.shape == tuple(manifest["cases"][cid]["shape"])
        assert int(label.sum()) == manifest["cases"][cid]["fg_voxels"]


def test_load_case_errors(tmp_path: Path) -> None:
    img = np.zeros((4, 5, 6), np.float32)
    with pytest.raises(FileNotFoundError, match="absent.h5"):
        load_case(tmp_path / "absent.h5", with_label=True)
    no_label = _write_h5(tmp_path / "nolabel.h5", image=img)
    with pytest.raises(ValueError, match=r"nolabel\.h5.*'label'"):
        load_case(no_label, with_label=True)
    assert load_case(no_label, with_label=False)[1] is None  # the label is never looked at
    with pytest.raises(ValueError, match=r"noimage\.h5.*'image'"):
        load_case(_write_h5(tmp_path / "noimage.h5", label=img.astype(np.uint8)), with_label=False)
    with pytest.raises(ValueError, match=r"flat\.h5.*3D"):
        load_case(_write_h5(tmp_path / "flat.h5", image=img[0], label=img[0]), with_label=True)
    with pytest.raises(ValueError, match=r"shape\.h5.*differs"):
        load_case(_write_h5(tmp_path / "shape.h5", image=img, label=img[:3].astype(np.uint8)), with_label=True)
    bad = np.zeros((4, 5, 6), np.uint8)
    bad[1, 1, 1] = 255
    with pytest.raises(ValueError, match=r"values\.h5.*\{0, 1\}.*255"):
        load_case(_write_h5(tmp_path / "values.h5", image=img, label=bad), with_label=True)


def test_load_case_names_a_damaged_file(tmp_path: Path) -> None:
    whole = _write_h5(tmp_path / "whole.h5", image=np.zeros((4, 5, 6), np.float32), label=np.zeros((4, 5, 6), np.uint8))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(whole.read_bytes()[:1000])
    with pytest.raises(DataError, match=rf"{re.escape(str(cut))} is damaged or incomplete .*truncated.*Delete"):
        load_case(cut, with_label=False)


def test_loading_is_shared_with_the_torch_free_module() -> None:
    from harness.data import dataset, prepared

    assert dataset.load_case is prepared.load_case and dataset.case_path is prepared.case_path
    assert dataset.TRAINING_DIR == "2018LA_Seg_Training Set" and dataset.H5_NAME == "mri_norm2.h5"


def test_load_case_casts_types(tmp_path: Path) -> None:
    img = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    lab = (img > 10).astype(np.int64)
    image, label = load_case(_write_h5(tmp_path / "c.h5", image=img, label=lab), with_label=True)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    np.testing.assert_array_equal(image, img.astype(np.float32))
    np.testing.assert_array_equal(label, lab)


# -- augmentation ----------------------------------------------------------------------------------------------------
def _reflections(a: np.ndarray) -> list[np.ndarray]:
    """The four in-plane reflections of a square-in-x–y volume, written out by hand."""
    return [a[::-1], a[:, ::-1], a.transpose(1, 0, 2), a[::-1, ::-1].transpose(1, 0, 2)]


def test_rot_flip_always_reflects_and_keeps_z() -> None:
    image = np.random.default_rng(0).permutation(5 * 5 * 3).reshape(5, 5, 3).astype(np.float32)
    label = (image % 2).astype(np.uint8)
    refl = _reflections(image)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(200):
        out_img, out_lab = random_rot_flip(image, label, rng)
        assert not np.array_equal(out_img, image)
        matches = [i for i, r in enumerate(refl) if np.array_equal(out_img, r)]
        assert len(matches) == 1  # one of the four reflections: never the identity or a pure rotation
        seen.add(matches[0])
        np.testing.assert_array_equal(out_lab, out_img % 2)  # label follows the image
        assert out_img.flags.c_contiguous and not np.shares_memory(out_img, image)
    assert seen == {0, 1, 2, 3}


def test_rot_flip_draw_order_and_none_label() -> None:
    image = np.arange(4 * 6 * 2, dtype=np.float32).reshape(4, 6, 2)
    for seed in range(10):
        ref = np.random.default_rng(seed)
        k, axis = ref.integers(0, 4), ref.integers(0, 2)
        out, lab = random_rot_flip(image, None, np.random.default_rng(seed))
        assert lab is None
        np.testing.assert_array_equal(out, np.flip(np.rot90(image, k, axes=(0, 1)), axis=axis))
        assert out.shape == ((6, 4, 2) if k % 2 else (4, 6, 2))


def _offsets(patch: np.ndarray, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(patch[0, 0, 0]), shape))


def test_crop_offsets_exclusive_upper_bound() -> None:
    shape, patch_size = (10, 9, 8), (7, 7, 7)
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    label = (image % 3 == 0).astype(np.uint8)
    rng = np.random.default_rng(2)
    offs = [set(), set(), set()]
    for _ in range(300):
        out_img, out_lab = random_crop(image, label, patch_size, rng)
        o = _offsets(out_img, shape)
        for axis in range(3):
            offs[axis].add(o[axis])
        np.testing.assert_array_equal(out_img, image[o[0] : o[0] + 7, o[1] : o[1] + 7, o[2] : o[2] + 7])
        np.testing.assert_array_equal(out_lab, (out_img % 3 == 0).astype(np.uint8))
    assert offs == [{0, 1, 2}, {0, 1}, {0}]  # size - patch = 3, 2, 1 is never drawn


@pytest.mark.parametrize(
    ("shape", "pads"),
    [
        ((4, 6, 9), (4, 3, 1)),  # (6-4)//2+3 = 4; (6-6)//2+3 = 3; (5-9)//2+3 = -2+3 = 1
        ((4, 6, 20), (4, 3, 0)),  # (5-20)//2+3 = -8+3 = -5, clamped at 0
    ],
)
def test_crop_padding_rule(shape: tuple[int, int, int], pads: tuple[int, int, int]) -> None:
    patch_size = (6, 6, 5)
    image = np.arange(1, np.prod(shape) + 1, dtype=np.float32).reshape(shape)
    label = np.ones(shape, np.uint8)
    padded_shape = tuple(s + 2 * p for s, p in zip(shape, pads, strict=True))
    padded_img, padded_lab = np.zeros(padded_shape, np.float32), np.zeros(padded_shape, np.uint8)
    inner = tuple(slice(p, p + s) for p, s in zip(pads, shape, strict=True))
    padded_img[inner], padded_lab[inner] = image, label
    for seed in range(20):
        ref = np.random.default_rng(seed)
        o = [int(ref.integers(0, s - p)) for s, p in zip(padded_shape, patch_size, strict=True)]
        win = tuple(slice(a, a + p) for a, p in zip(o, patch_size, strict=True))
        out_img, out_lab = random_crop(image, label, patch_size, np.random.default_rng(seed))
        np.testing.assert_array_equal(out_img, padded_img[win])
        np.testing.assert_array_equal(out_lab, padded_lab[win])


def test_crop_validates() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        random_crop(np.zeros((8, 8, 8)), None, (4, 4), np.random.default_rng(0))
    with pytest.raises(ValueError, match="label shape"):
        random_crop(np.zeros((8, 8, 8)), np.zeros((8, 8, 7)), (4, 4, 4), np.random.default_rng(0))


def test_augment_modes() -> None:
    image = np.random.default_rng(0).normal(size=(12, 10, 9)).astype(np.float32)
    label = (image > 0).astype(np.uint8)
    got = augment(image, label, (6, 6, 6), "crop", np.random.default_rng(4))
    want = random_crop(image, label, (6, 6, 6), np.random.default_rng(4))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    rng = np.random.default_rng(4)
    want = random_crop(*random_rot_flip(image, label, rng), (6, 6, 6), rng)
    got = augment(image, label, (6, 6, 6), "rotflip_crop", np.random.default_rng(4))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(ValueError, match="rotflip"):
        augment(image, label, (6, 6, 6), "flip", np.random.default_rng(4))


# -- samplers --------------------------------------------------------------------------------------------------------
def _expected_two_stream(n_l: int, n_u: int, lbs: int, ubs: int, seed: int | list[int], n_batches: int) -> list:
    """Re-derivation from the same generator calls: per epoch one labeled permutation, then unlabeled ones lazily."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < n_batches:
        perm, chain = rng.permutation(n_l).tolist(), []
        for b in range(n_l // lbs):
            while len(chain) < (b + 1) * ubs:
                chain += rng.permutation(n_u).tolist()
            out.append((perm[b * lbs : (b + 1) * lbs], chain[b * ubs : (b + 1) * ubs]))
    return out[:n_batches]


@pytest.mark.parametrize(("n_l", "n_u", "lbs", "ubs"), [(8, 5, 2, 2), (7, 3, 2, 2), (16, 64, 2, 2), (6, 4, 3, 1)])
def test_two_stream_matches_rederivation(n_l: int, n_u: int, lbs: int, ubs: int) -> None:
    got = list(islice(two_stream_batches(n_l, n_u, lbs, ubs, np.random.default_rng(11)), 25))
    assert got == _expected_two_stream(n_l, n_u, lbs, ubs, 11, 25)


def test_two_stream_structure() -> None:
    n_l, n_u, per_epoch = 7, 5, 3  # 7 // 2 = 3 batches per epoch, one labeled index dropped
    batches = list(islice(two_stream_batches(n_l, n_u, 2, 2, np.random.default_rng(5)), 4 * per_epoch))
    restarts = 0
    for e in range(4):
        epoch = batches[e * per_epoch : (e + 1) * per_epoch]
        lab = [i for b, _ in epoch for i in b]
        assert len(lab) == len(set(lab)) == 6 and set(lab) <= set(range(n_l))
        unl = [i for _, u in epoch for i in u]  # 6 = one full permutation + a prefix of the next
        assert sorted(unl[:5]) == list(range(n_u))
        assert all(len(b) == 2 and len(u) == 2 for b, u in epoch)
        restarts += e > 0
    assert restarts == 3
    # a continuing chain would start epoch 2 with the 4 unused entries of the previous permutation
    rng = np.random.default_rng(5)
    rng.permutation(n_l), rng.permutation(n_u)
    leftover = rng.permutation(n_u).tolist()[1:]
    assert [i for _, u in batches[per_epoch : per_epoch + 2] for i in u] != leftover


def test_two_stream_validates() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="labeled_bs=3, n_labeled=2"):
        two_stream_batches(2, 5, 3, 2, rng)
    with pytest.raises(ValueError, match="n_unlabeled=0"):
        two_stream_batches(4, 0, 2, 2, rng)
    with pytest.raises(ValueError, match="batch_size=0"):
        labeled_only_batches(4, 0, rng)


@pytest.mark.parametrize(("n", "bs"), [(6, 4), (8, 4), (3, 4), (1, 4)])
def test_labeled_only_full_batches_over_permutation_chain(n: int, bs: int) -> None:
    batches = list(islice(labeled_only_batches(n, bs, np.random.default_rng(9)), 30))
    assert all(len(b) == bs for b in batches)
    flat = [i for b in batches for i in b]
    for start in range(0, len(flat) - n + 1, n):
        assert sorted(flat[start : start + n]) == list(range(n))
    ref = np.random.default_rng(9)
    expected = [i for _ in range(len(flat) // n + 1) for i in ref.permutation(n).tolist()]
    assert flat == expected[: len(flat)]


def test_batch_plan_keys_and_resume() -> None:
    full = list(batch_plan(8, 5, 2, 2, seed=3, start_it=0, max_it=20))
    assert len(full) == 20
    pairs = _expected_two_stream(8, 5, 2, 2, [3, 0, 0, PLAN_STREAM], 20)
    for it, (keys, (lab, unl)) in enumerate(zip(full, pairs, strict=True)):
        assert keys == [(it, 0, "l", lab[0]), (it, 1, "l", lab[1]), (it, 2, "u", unl[0]), (it, 3, "u", unl[1])]
    assert list(batch_plan(8, 5, 2, 2, seed=3, start_it=5, max_it=20)) == full[5:]
    assert list(batch_plan(8, 5, 2, 2, seed=3, start_it=20, max_it=20)) == []
    assert list(batch_plan(8, 5, 2, 2, seed=4, start_it=0, max_it=20)) != full


def test_plan_stream_is_not_a_sample_stream() -> None:
    # SeedSequence ignores trailing zeros: default_rng(s) would equal the stream of sample (it=0, slot=0).
    plan = np.random.default_rng([3, 0, 0, PLAN_STREAM]).integers(0, 2**31, 8)
    assert not np.array_equal(plan, np.random.default_rng([3, 0, 0]).integers(0, 2**31, 8))
    assert np.array_equal(
        np.random.default_rng(3).integers(0, 9, 8), np.random.default_rng([3, 0, 0]).integers(0, 9, 8)
    )


def test_batch_plan_labeled_only() -> None:
    plan = list(batch_plan(6, 0, 4, 0, seed=2, start_it=0, max_it=10))
    expected = list(islice(labeled_only_batches(6, 4, np.random.default_rng([2, 0, 0, PLAN_STREAM])), 10))
    assert plan == [[(it, s, "l", i) for s, i in enumerate(b)] for it, b in enumerate(expected)]
    assert list(batch_plan(6, 0, 4, 0, seed=2, start_it=7, max_it=10)) == plan[7:]


def test_batch_plan_validates_eagerly() -> None:
    with pytest.raises(ValueError, match="start_it=5, max_it=3"):
        batch_plan(8, 5, 2, 2, seed=0, start_it=5, max_it=3)
    with pytest.raises(ValueError, match="n_labeled=1"):
        batch_plan(1, 5, 2, 2, seed=0, start_it=0, max_it=3)


# -- dataset, collate, loader ----------------------------------------------------------------------------------------
PATCH = (8, 8, 6)


def _neg(label: np.ndarray) -> np.ndarray:
    return (1.0 - 2.0 * label).astype(np.float32)


@pytest.fixture(scope="module")
def cases() -> tuple[list, list]:
    rng = np.random.default_rng(0)
    labeled = []
    for shape in [(14, 12, 9), (12, 12, 10), (15, 11, 9)]:
        image = rng.normal(size=shape).astype(np.float32)
        labeled.append((image, (image > 0.5).astype(np.uint8)))
    unlabeled = [rng.normal(size=(13, 12, 9)).astype(np.float32) for _ in range(4)]
    return labeled, unlabeled


def _dataset(cases: tuple[list, list], seed: int = 5, mode: str = "rotflip_crop") -> PatchDataset:
    return PatchDataset(
        cases[0], cases[1], patch_size=PATCH, augment_mode=mode, seed=seed, label_transforms={"neg": _neg}
    )


def test_patch_dataset_sample_matches_augment(cases: tuple[list, list]) -> None:
    ds = _dataset(cases)
    assert len(ds) == 7
    s = ds[(4, 1, "l", 2)]
    assert sorted(s) == ["image", "label", "neg"]
    image, label = augment(*cases[0][2], PATCH, "rotflip_crop", np.random.default_rng([5, 4, 1]))
    assert s["image"].dtype == torch.float32 and s["image"].shape == (1, *PATCH)
    assert s["label"].dtype == torch.int64 and s["label"].shape == PATCH
    assert s["neg"].dtype == torch.float32 and s["neg"].shape == PATCH
    np.testing.assert_array_equal(s["image"][0].numpy(), image)
    np.testing.assert_array_equal(s["label"].numpy(), label)
    np.testing.assert_array_equal(s["neg"].numpy(), _neg(label))
    u = ds[(4, 3, "u", 1)]
    assert sorted(u) == ["image"]  # unlabeled samples carry no label at all
    image_u, _ = augment(cases[1][1], None, PATCH, "rotflip_crop", np.random.default_rng([5, 4, 3]))
    np.testing.assert_array_equal(u["image"][0].numpy(), image_u)


def test_patch_dataset_deterministic_and_order_free(cases: tuple[list, list]) -> None:
    keys = [(it, s, "l" if s < 2 else "u", (it + s) % 3) for it in range(4) for s in range(4)]
    first = [_dataset(cases)[k] for k in keys]
    ds = _dataset(cases)
    backwards = {k: ds[k] for k in reversed(keys)}
    for k, a in zip(keys, first, strict=True):
        b = backwards[k]
        assert sorted(a) == sorted(b)
        for name in a:
            assert torch.equal(a[name], b[name])
    # the augmentation depends on (seed, it, slot): same case, other slot or seed -> other patch
    assert not torch.equal(ds[(0, 0, "l", 0)]["image"], ds[(0, 1, "l", 0)]["image"])
    assert not torch.equal(ds[(0, 0, "l", 0)]["image"], _dataset(cases, seed=6)[(0, 0, "l", 0)]["image"])


def test_patch_dataset_validates(cases: tuple[list, list]) -> None:
    with pytest.raises(ValueError, match="augment_mode"):
        _dataset(cases, mode="rot")
    with pytest.raises(ValueError, match="kind"):
        _dataset(cases)[(0, 0, "x", 0)]
    bad = PatchDataset(cases[0], [], patch_size=PATCH, augment_mode="crop", seed=0, label_transforms={"b": np.ravel})
    with pytest.raises(ValueError, match="'b' returned shape"):
        bad[(0, 0, "l", 0)]


def test_collate(cases: tuple[list, list]) -> None:
    ds = _dataset(cases)
    keys = next(iter(batch_plan(3, 4, 2, 2, seed=1, start_it=0, max_it=1)))
    samples = [ds[k] for k in keys]
    batch = collate(samples)
    assert isinstance(batch, Batch)
    assert batch.x.shape == (4, 1, *PATCH) and batch.x.dtype == torch.float32
    assert batch.y.shape == (2, *PATCH) and batch.y.dtype == torch.int64
    assert batch.n_labeled == 2 and sorted(batch.extras) == ["neg"]
    assert batch.extras["neg"].shape == (2, *PATCH)
    for i, s in enumerate(samples):
        assert torch.equal(batch.x[i], s["image"])
    assert torch.equal(batch.y[1], samples[1]["label"])
    assert torch.equal(batch.extras["neg"], 1.0 - 2.0 * batch.y.float())
    assert torch.equal(batch.x_u, torch.stack([samples[2]["image"], samples[3]["image"]]))
    with pytest.raises(ValueError, match="labeled samples must come first"):
        collate([samples[2], samples[0]])
    only_u = collate(samples[2:])
    assert only_u.n_labeled == 0 and only_u.y.shape == (0, *PATCH) and only_u.extras == {}


def test_case_ids_identify_every_sample_labeled_first(cases: tuple[list, list]) -> None:
    ds = PatchDataset(cases[0], cases[1], patch_size=PATCH, augment_mode="crop", seed=5, with_case_id=True)
    keys = [(0, 0, "l", 2), (0, 1, "l", 0), (0, 2, "u", 3), (0, 3, "u", 0)]
    batch = collate([ds[k] for k in keys])
    assert batch.extras["case_id"].tolist() == [2, 0, 3 + 3, 3 + 0]  # unlabeled IDs follow the 3 labeled cases
    plain = PatchDataset(cases[0], cases[1], patch_size=PATCH, augment_mode="crop", seed=5)
    assert torch.equal(batch.x[0], plain[(0, 0, "l", 2)]["image"])  # the case ID changes no pixel
    with pytest.raises(ValueError, match="case_id"):
        collate([ds[keys[0]], plain[keys[1]]])


def test_stage_plan_repeats_each_volume_view_major() -> None:
    plan = list(stage_plan(5, "u", 2, 2, seed=3, start_it=0, max_it=6))
    volumes = list(islice(labeled_only_batches(5, 2, np.random.default_rng([3, 0, 0, PLAN_STREAM])), 6))
    for it, (keys, vols) in enumerate(zip(plan, volumes, strict=True)):
        assert keys == [(it, 0, "u", vols[0]), (it, 1, "u", vols[1]), (it, 2, "u", vols[0]), (it, 3, "u", vols[1])]
    assert list(stage_plan(5, "u", 2, 2, seed=3, start_it=4, max_it=6)) == plan[4:]
    with pytest.raises(ValueError, match="kind"):
        stage_plan(5, "x", 2, 2, seed=3, start_it=0, max_it=6)


def _batches_equal(a: Batch, b: Batch) -> bool:
    same = torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and a.n_labeled == b.n_labeled
    return same and a.extras.keys() == b.extras.keys() and all(torch.equal(a.extras[k], b.extras[k]) for k in a.extras)


def test_loader_same_batches_for_any_worker_count(cases: tuple[list, list]) -> None:
    ds = _dataset(cases)
    plan = list(batch_plan(3, 4, 2, 2, seed=1, start_it=0, max_it=6))
    torch.manual_seed(123)
    in_process = list(make_loader(ds, plan, num_workers=0, seed=1))
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))  # iterating the loader did not consume the global torch RNG
    workers = list(make_loader(ds, plan, num_workers=2, seed=1))
    assert len(in_process) == len(workers) == 6
    for keys, a, b in zip(plan, in_process, workers, strict=True):
        assert _batches_equal(a, b)
        assert _batches_equal(a, collate([ds[k] for k in keys]))
    resumed = list(make_loader(ds, batch_plan(3, 4, 2, 2, seed=1, start_it=4, max_it=6), num_workers=0, seed=1))
    assert all(_batches_equal(a, b) for a, b in zip(resumed, in_process[4:], strict=True))


def test_seed_worker() -> None:
    _seed_worker(10, 2)
    assert random.random() == random.Random(12).random()
    assert np.random.random() == np.random.RandomState(12).random_sample()
