"""Tests for harness.evaluate.metrics: hand-computed cases and an oracle comparison with medpy 0.5.2."""

import math

import numpy as np
import pytest
from scipy import ndimage

from harness.evaluate import metrics
from harness.evaluate.metrics import case_metrics, secondary_metrics

KEYS = ("dice", "jaccard", "hd95", "asd")


def _vol(shape, voxels):
    """uint8 volume of ``shape`` with the listed (x, y, z) voxels set to 1."""
    out = np.zeros(shape, dtype=np.uint8)
    for v in voxels:
        out[v] = 1
    return out


def _values(result):
    return tuple(result[k] for k in KEYS)


# --------------------------------------------------------------------------------------------- hand-computed cases


def test_two_voxels_three_apart_along_z_voxel_and_mm():
    pred = _vol((5, 5, 8), [(2, 2, 1)])
    gt = _vol((5, 5, 8), [(2, 2, 4)])
    # Each surface is its single voxel; d(P→G) = d(G→P) = [3]; pooled [3, 3] → HD95 = 3; ASD = 3. No overlap → 0, 0.
    vox = case_metrics(pred, gt, spacing=None, empty_pred="worst_case")
    assert _values(vox) == (0.0, 0.0, 3.0, 3.0)
    assert vox["unit"] == "voxel" and vox["empty_pred"] is False
    # With spacing (1, 1, 2.5): 3 voxels × 2.5 mm = 7.5 mm.
    mm = case_metrics(pred, gt, spacing=(1.0, 1.0, 2.5), empty_pred="worst_case")
    assert mm["hd95"] == pytest.approx(7.5, abs=1e-12)
    assert mm["asd"] == pytest.approx(7.5, abs=1e-12)
    assert mm["unit"] == "mm"


def test_cube_vs_cube_shifted_by_one_along_x():
    shape = (5, 5, 5)
    gt = np.zeros(shape, np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    pred = np.zeros(shape, np.uint8)
    pred[2:4, 1:3, 1:3] = 1
    res = case_metrics(pred, gt, spacing=None, empty_pred="worst_case")
    # |P ∩ G| = the x = 2 slab = 4 voxels. Dice = 2·4 / (8 + 8) = 0.5; Jaccard = 4 / 12 = 1/3.
    assert res["dice"] == 0.5
    assert res["jaccard"] == pytest.approx(1 / 3, abs=1e-15)
    # All 8 voxels of a 2×2×2 cube are surface. d(P→G): x=2 voxels 0 (4×), x=3 voxels 1 (4×); same for d(G→P).
    # Pooled: 8 zeros + 8 ones; rank 0.95·15 = 14.25 lies between sorted[14] = 1 and sorted[15] = 1 → HD95 = 1.
    # ASD = (4·0 + 4·1) / 8 = 0.5.
    assert res["hd95"] == 1.0
    assert res["asd"] == 0.5


def test_identical_masks():
    rng = np.random.default_rng(0)
    gt = (ndimage.gaussian_filter(rng.standard_normal((20, 18, 12)), 2) > 0).astype(np.uint8)
    res = case_metrics(gt, gt.copy(), spacing=(0.625, 0.625, 2.0), empty_pred="worst_case")
    assert _values(res) == (1.0, 1.0, 0.0, 0.0)
    sec = secondary_metrics(gt, gt, spacing=None)
    assert sec["hd95_max_dir"] == 0.0 and sec["assd"] == 0.0


def _cube_with_island(island):
    """GT: 3×3×3 cube at [1:4]^3 in a (7, 7, 10) array; pred: the cube plus ``island`` voxels."""
    gt = np.zeros((7, 7, 10), np.uint8)
    gt[1:4, 1:4, 1:4] = 1
    pred = gt.copy()
    for v in island:
        pred[v] = 1
    return pred, gt


def test_directed_asd_is_not_symmetric():
    pred, gt = _cube_with_island([(2, 2, 7)])
    # S(G) = the 26 voxels of the cube except its centre; S(P) = S(G) + the island voxel (2, 2, 7), whose nearest
    # S(G) voxel is (2, 2, 3) at distance 4. d(P→G) = 26 zeros + [4] → asd(P, G) = 4 / 27.
    # d(G→P) = 26 zeros (every S(G) voxel is in S(P)) → asd(G, P) = 0.
    forward = case_metrics(pred, gt, spacing=None, empty_pred="worst_case")
    backward = case_metrics(gt, pred, spacing=None, empty_pred="worst_case")
    assert forward["asd"] == pytest.approx(4 / 27, abs=1e-15)
    assert backward["asd"] == 0.0
    # Dice = 2·27 / (28 + 27) = 54/55 both ways; Jaccard = 27/28.
    assert forward["dice"] == backward["dice"] == pytest.approx(54 / 55, abs=1e-15)
    assert forward["jaccard"] == pytest.approx(27 / 28, abs=1e-15)


def test_pooled_hd95_differs_from_max_of_directions():
    pred, gt = _cube_with_island([(2, 2, 7), (2, 2, 8)])
    # d(P→G) = 26 zeros + [4, 5] (island voxels to (2, 2, 3)); d(G→P) = 26 zeros.
    # Pooled: 54 values, 52 zeros then 4, 5; rank 0.95·53 = 50.35 between sorted[50] = 0 and sorted[51] = 0 → HD95 = 0.
    res = case_metrics(pred, gt, spacing=None, empty_pred="worst_case")
    assert res["hd95"] == 0.0
    # ASD = (4 + 5) / 28 = 9/28.
    assert res["asd"] == pytest.approx(9 / 28, abs=1e-15)
    # Directed P→G: 28 values; rank 0.95·27 = 25.65 between sorted[25] = 0 and sorted[26] = 4 → 0.65·4 = 2.6.
    # Directed G→P: 0. Maximum of directions = 2.6. ASSD = (4 + 5) / 54 = 1/6.
    sec = secondary_metrics(pred, gt, spacing=None)
    assert sec["hd95_max_dir"] == pytest.approx(2.6, abs=1e-12)
    assert sec["assd"] == pytest.approx(1 / 6, abs=1e-15)
    assert sec["unit"] == "voxel"


def test_mask_filling_the_array_has_edge_voxels_as_surface():
    gt = np.ones((3, 3, 3), np.uint8)
    pred = _vol((3, 3, 3), [(1, 1, 1)])
    # Border value 0: all 26 non-centre voxels of G are surface (they touch the array edge); the centre is interior.
    # (With border value 1 S(G) would be empty.) d(P→G) = [1] (centre to a face centre) → ASD = 1.
    # d(G→P): 6 face centres at 1, 12 edges at √2, 8 corners at √3. Pooled sorted: 7 ones, 12 √2, 8 √3 (27 values);
    # rank 0.95·26 = 24.7 between sorted[24] and sorted[25], both √3 → HD95 = √3.
    res = case_metrics(pred, gt, spacing=None, empty_pred="worst_case")
    assert res["asd"] == 1.0
    assert res["hd95"] == pytest.approx(math.sqrt(3), abs=1e-15)
    # Dice = 2·1 / (1 + 27) = 1/14; Jaccard = 1/27.
    assert res["dice"] == pytest.approx(1 / 14, abs=1e-15)
    assert res["jaccard"] == pytest.approx(1 / 27, abs=1e-15)
    # ASSD = (1 + 6·1 + 12·√2 + 8·√3) / 27.
    expected_assd = (1 + 6 + 12 * math.sqrt(2) + 8 * math.sqrt(3)) / 27
    assert secondary_metrics(pred, gt, spacing=None)["assd"] == pytest.approx(expected_assd, abs=1e-12)


def test_surface_matches_scipy_erosion_with_border_zero():
    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = ndimage.gaussian_filter(rng.standard_normal((9, 8, 7)), 1) > -0.2
        expected = mask ^ ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1))
        padded = metrics._padded_surface(mask)
        assert padded.shape == (11, 10, 9)
        assert not padded[0].any() and not padded[-1].any()
        np.testing.assert_array_equal(padded[1:-1, 1:-1, 1:-1], expected)


def test_anisotropic_spacing_diagonal_offset():
    pred = _vol((4, 5, 3), [(1, 1, 1)])
    gt = _vol((4, 5, 3), [(2, 3, 1)])
    # Offset (1, 2, 0) with spacing (0.5, 2, 3): sqrt((1·0.5)² + (2·2)²) = sqrt(0.25 + 16) = sqrt(16.25).
    res = case_metrics(pred, gt, spacing=(0.5, 2.0, 3.0), empty_pred="worst_case")
    assert res["hd95"] == pytest.approx(math.sqrt(16.25), abs=1e-12)
    assert res["asd"] == pytest.approx(math.sqrt(16.25), abs=1e-12)


def test_anisotropic_nearest_is_not_the_face_neighbour():
    pred = _vol((5, 3, 4), [(1, 1, 1)])
    gt = _vol((5, 3, 4), [(1, 1, 2), (3, 1, 1)])
    # Spacing (1, 1, 5): the z-neighbour (1, 1, 2) is 5 mm away, (3, 1, 1) only 2 mm → d(P→G) = [2], ASD = 2.
    # d(G→P) in C order: (1, 1, 2) → 5, (3, 1, 1) → 2. Pooled sorted [2, 2, 5]; rank 0.95·2 = 1.9 → 2 + 0.9·3 = 4.7.
    mm = case_metrics(pred, gt, spacing=(1.0, 1.0, 5.0), empty_pred="worst_case")
    assert mm["asd"] == 2.0
    assert mm["hd95"] == pytest.approx(4.7, abs=1e-12)
    # Voxel units: d(P→G) = [1]; d(G→P) = [1, 2]; pooled [1, 1, 2] → 1 + 0.9·1 = 1.9; ASD = 1.
    vox = case_metrics(pred, gt, spacing=None, empty_pred="worst_case")
    assert vox["asd"] == 1.0
    assert vox["hd95"] == pytest.approx(1.9, abs=1e-12)


# --------------------------------------------------------------------------------------------- empty masks


def test_empty_pred_worst_case_is_the_volume_diagonal():
    gt = _vol((4, 5, 6), [(1, 1, 1)])
    pred = np.zeros_like(gt)
    res = case_metrics(pred, gt, spacing=None, empty_pred="worst_case")
    # Diagonal in voxels: sqrt(4² + 5² + 6²) = sqrt(16 + 25 + 36) = sqrt(77).
    assert _values(res) == (0.0, 0.0, math.sqrt(77), math.sqrt(77))
    assert res["empty_pred"] is True and res["empty_pred_policy"] == "worst_case"
    mm = case_metrics(pred, gt, spacing=(0.5, 1.0, 2.0), empty_pred="worst_case")
    # In mm: sqrt(2² + 5² + 12²) = sqrt(4 + 25 + 144) = sqrt(173).
    assert mm["hd95"] == pytest.approx(math.sqrt(173), abs=1e-12)
    assert mm["asd"] == pytest.approx(math.sqrt(173), abs=1e-12)
    assert mm["unit"] == "mm"


def test_empty_pred_nan_and_reference_zero():
    gt = _vol((4, 5, 6), [(1, 1, 1), (1, 1, 2)])
    pred = np.zeros_like(gt)
    nan = case_metrics(pred, gt, spacing=None, empty_pred="nan")
    assert nan["dice"] == 0.0 and nan["jaccard"] == 0.0
    assert math.isnan(nan["hd95"]) and math.isnan(nan["asd"])
    assert nan["empty_pred"] is True and nan["empty_pred_policy"] == "nan"
    zero = case_metrics(pred, gt, spacing=None, empty_pred="reference_zero")
    assert _values(zero) == (0.0, 0.0, 0.0, 0.0)
    assert zero["empty_pred"] is True and zero["empty_pred_policy"] == "reference_zero"
    sec = secondary_metrics(pred, gt, spacing=None)
    assert math.isnan(sec["hd95_max_dir"]) and math.isnan(sec["assd"])


@pytest.mark.parametrize("policy", ["worst_case", "nan", "reference_zero"])
def test_empty_gt_always_raises(policy):
    pred = _vol((4, 4, 4), [(1, 1, 1)])
    with pytest.raises(ValueError, match="gt"):
        case_metrics(pred, np.zeros_like(pred), spacing=None, empty_pred=policy)
    # Both empty: GT empty still raises (never Dice NaN or 1 by convention).
    with pytest.raises(ValueError, match="gt"):
        case_metrics(np.zeros_like(pred), np.zeros_like(pred), spacing=None, empty_pred=policy)
    with pytest.raises(ValueError, match="gt"):
        secondary_metrics(pred, np.zeros_like(pred), spacing=None)


def test_bad_arguments_raise_clear_errors():
    gt = _vol((4, 4, 4), [(1, 1, 1)])
    with pytest.raises(ValueError, match="empty_pred"):
        case_metrics(gt, gt, spacing=None, empty_pred="zero")
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(gt, gt, spacing=(1.0, 1.0), empty_pred="nan")
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(gt, gt, spacing=(1.0, 0.0, 1.0), empty_pred="nan")
    with pytest.raises(ValueError, match="same shape"):
        case_metrics(gt, gt[:3], spacing=None, empty_pred="nan")
    with pytest.raises(ValueError, match="pred"):
        case_metrics(gt[0], gt, spacing=None, empty_pred="nan")
    with pytest.raises(TypeError):
        case_metrics(gt, gt)  # spacing and empty_pred are required keyword arguments


def test_nonzero_is_object_for_any_dtype():
    gt = _vol((5, 5, 5), [(1, 1, 1), (2, 2, 2)])
    pred = np.zeros((5, 5, 5), np.float32)
    pred[1, 1, 1] = -0.5
    pred[2, 2, 2] = 7.0
    assert _values(case_metrics(pred, gt > 0, spacing=None, empty_pred="nan")) == (1.0, 1.0, 0.0, 0.0)


# --------------------------------------------------------------------------------------------- medpy oracle


def _random_pair(rng):
    """A random GT blob mask and a perturbed prediction (thresholded smoothed noise, some islands, edges touched)."""
    shape = tuple(int(s) for s in rng.integers((20, 18, 10), (44, 40, 28)))
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=rng.uniform(1.5, 3.5))
    field /= field.std()
    gt = field > rng.uniform(-0.3, 0.8)
    perturbation = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
    noisy = field + 0.3 * perturbation / perturbation.std()
    pred = noisy > rng.uniform(-0.3, 0.8)
    if rng.random() < 0.5:  # a small false-positive island somewhere
        x, y, z = (int(rng.integers(0, s - 2)) for s in shape)
        pred[x : x + 2, y : y + 2, z : z + 2] = True
    if not gt.any():
        gt[shape[0] // 2, shape[1] // 2, shape[2] // 2] = True
    if not pred.any():
        pred[0, 0, 0] = True
    return pred.astype(np.uint8), gt.astype(np.uint8)


@pytest.mark.parametrize("spacing", [None, (0.625, 0.8, 2.5)])
def test_oracle_against_medpy(spacing):
    binary = pytest.importorskip("medpy.metric.binary")
    medpy_directed = vars(binary)["__surface_distances"]  # module-level name, not mangled
    rng = np.random.default_rng(2024)
    touching_edge = 0
    for _ in range(30):
        pred, gt = _random_pair(rng)
        touching_edge += bool(gt[0].any() or gt[-1].any() or gt[:, :, 0].any() or gt[:, :, -1].any())
        ours = case_metrics(pred, gt, spacing=spacing, empty_pred="worst_case")
        ref = (
            binary.dc(pred, gt),
            binary.jc(pred, gt),
            binary.hd95(pred, gt, voxelspacing=spacing),
            binary.asd(pred, gt, voxelspacing=spacing),
        )
        for key, expected in zip(KEYS, ref, strict=True):
            assert abs(ours[key] - expected) <= 1e-9, (key, ours[key], expected)
        sec = secondary_metrics(pred, gt, spacing=spacing)
        assert abs(sec["assd"] - binary.assd(pred, gt, voxelspacing=spacing)) <= 1e-9
        d_pg = medpy_directed(pred, gt, spacing, 1)
        d_gp = medpy_directed(gt, pred, spacing, 1)
        expected_max_dir = max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))
        assert abs(sec["hd95_max_dir"] - expected_max_dir) <= 1e-9
        # The directed arrays themselves, element by element and in the same order.
        ours_pg, ours_gp = metrics._surface_distances(pred > 0, gt > 0, spacing)
        np.testing.assert_allclose(ours_pg, d_pg, rtol=0, atol=1e-9)
        np.testing.assert_allclose(ours_gp, d_gp, rtol=0, atol=1e-9)
    assert touching_edge >= 5  # the generator really produces masks on the array edge
