"""Signed distance map (docs/methods/README.md §1.3): hand-computed maps, skimage/scipy oracles, real LA patches,
the loader."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from harness.data.dataset import PatchDataset, la_case_path, load_case
from harness.numerics.sdf import reference_signed_distance_map, signed_distance_map

BOTH = pytest.mark.parametrize("sdf", [signed_distance_map, reference_signed_distance_map], ids=["fast", "reference"])


@BOTH
def test_line_by_hand(sdf):
    label = np.array([0, 1, 1, 1, 0, 0], np.uint8).reshape(1, 1, 6)
    # posdis (fg → nearest bg) = 0 1 2 1 0 0, max 2; negdis (bg → nearest fg) = 1 0 0 0 1 2, max 2
    # sdf = negdis/2 − posdis/2 = 0.5 −0.5 −1 −0.5 0.5 1; inner boundary (fg with a bg neighbour): voxels 1, 3 → 0
    expected = np.array([0.5, 0.0, -1.0, 0.0, 0.5, 1.0]).reshape(1, 1, 6)
    np.testing.assert_allclose(sdf(label), expected, atol=1e-7)


@BOTH
def test_square_by_hand(sdf):
    label = np.zeros((5, 5, 1), np.uint8)
    label[1:4, 1:4] = 1
    # centre (2,2): nearest bg at distance 2 → −2/2 = −1; the 8 other fg voxels touch the bg ring → boundary 0;
    # ring: edge-adjacent voxels 1 away from the square, corners √2 away (max negdis √2) → 1/√2 and 1
    r = 1 / math.sqrt(2)
    expected = np.array([[1, r, r, r, 1], [r, 0, 0, 0, r], [r, 0, -1, 0, r], [r, 0, 0, 0, r], [1, r, r, r, 1]]).reshape(
        5, 5, 1
    )
    np.testing.assert_allclose(sdf(label), expected, atol=1e-7)


@BOTH
def test_array_edge_is_not_background(sdf):
    label = np.array([1, 1, 0, 0], np.uint8).reshape(1, 4, 1)
    # posdis 2 1 0 0 (no background beyond the array edge), negdis 0 0 1 2; voxel 0 has no bg neighbour inside the
    # array (skimage reflects at the border), so only voxel 1 is boundary: −2/2, 0, 1/2, 2/2
    np.testing.assert_allclose(sdf(label), np.array([-1.0, 0.0, 0.5, 1.0]).reshape(1, 4, 1), atol=1e-7)


@BOTH
def test_diagonal_background_neighbour_is_not_boundary(sdf):
    label = np.ones((3, 3, 3), np.uint8)
    label[0, 0, 0] = 0
    out = sdf(label)
    # 6-connectivity (skimage connectivity=1): (1,1,0) touches the bg voxel only diagonally → posdis √2, not boundary;
    # max posdis is (2,2,2) at √12; the single bg voxel has negdis 1 = max → +1
    assert out[1, 1, 0] == pytest.approx(-math.sqrt(2) / math.sqrt(12), abs=1e-7)
    assert out[1, 0, 0] == 0.0 and out[0, 0, 0] == pytest.approx(1.0)
    assert out[2, 2, 2] == pytest.approx(-1.0)


@BOTH
def test_empty_and_full_patches_give_zeros(sdf, caplog):
    empty = sdf(np.zeros((4, 5, 6), np.uint8))
    assert empty.shape == (4, 5, 6) and not empty.any()
    with caplog.at_level(logging.INFO, logger="harness.numerics.sdf"):
        full = sdf(np.ones((4, 5, 6), np.uint8))
    assert not full.any() and "entirely foreground" in caplog.text


def test_fast_map_is_float32_and_refuses_bad_shapes():
    assert signed_distance_map(np.eye(4, dtype=np.uint8)[None]).dtype == np.float32
    for bad in (np.zeros(()), np.zeros((2, 2, 2, 2)), np.zeros((0, 3, 3))):
        with pytest.raises(ValueError, match="label"):
            signed_distance_map(bad)


def test_boundary_matches_skimage_inner_boundaries_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(60):
        label = rng.random(tuple(rng.integers(2, 9, size=3))) < rng.uniform(0.2, 0.9)
        if label.all() or not label.any():
            continue
        zero_inside = (signed_distance_map(label) == 0) & label  # fg voxels get −posdis/max < 0 unless boundary
        np.testing.assert_array_equal(zero_inside, find_boundaries(label, mode="inner"))


def test_fast_equals_reference_on_random_masks():
    rng = np.random.default_rng(1)
    for _ in range(150):
        label = (rng.random(tuple(rng.integers(1, 12, size=3))) < rng.random()).astype(np.uint8)
        np.testing.assert_allclose(signed_distance_map(label), reference_signed_distance_map(label), atol=1e-6)


def la_patches(root, n: int, seed: int) -> list[np.ndarray]:
    """n LA-sized 112×112×80 label patches cropped at random from the first real LA training case."""
    case = (root / "train.list").read_text().split()[0]
    _, label = load_case(la_case_path(root, case), with_label=True)
    rng = np.random.default_rng(seed)
    offsets = [
        [int(rng.integers(0, s - p + 1)) for s, p in zip(label.shape, (112, 112, 80), strict=True)] for _ in range(n)
    ]
    return [np.ascontiguousarray(label[x : x + 112, y : y + 112, z : z + 80]) for x, y, z in offsets]


def test_fast_equals_reference_on_real_la_patches(la_mini):
    for label in la_patches(la_mini, 3, seed=0):
        assert label.any() and not label.all()
        ours, ref = signed_distance_map(label), reference_signed_distance_map(label)
        np.testing.assert_allclose(ours, ref, atol=1e-6)
        assert ours.min() == pytest.approx(-1.0) and ours.max() == pytest.approx(1.0)


def test_patch_dataset_computes_the_map_per_labeled_sample():
    rng = np.random.default_rng(2)
    image = rng.standard_normal((24, 24, 20)).astype(np.float32)
    label = np.zeros((24, 24, 20), np.uint8)
    label[6:18, 8:16, 5:15] = 1
    ds = PatchDataset(
        [(image, label)],
        [image],
        patch_size=(16, 16, 16),
        augment_mode="rotflip_crop",
        seed=3,
        label_transforms={"sdf": signed_distance_map},
    )
    sample = ds[(0, 0, "l", 0)]
    expected = signed_distance_map(sample["label"].numpy().astype(np.uint8))
    assert sample["sdf"].dtype.is_floating_point and np.array_equal(sample["sdf"].numpy(), expected)
    assert set(ds[(0, 1, "u", 0)]) == {"image"}  # unlabeled samples carry no map
