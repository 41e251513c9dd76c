"""harness.evaluate.inference: window placement, coverage and averaging, padding, batching and decision rules."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.evaluate.inference import count_windows, sliding_window, window_starts

# The project's LA manifest (case shapes of the released files).
LA_MANIFEST = Path(__file__).resolve().parents[2] / "harness" / "data" / "manifests" / "la_manifest.csv"


def _two_class_logits(x):
    """Logits [0, 2·x] per voxel: softmax foreground probability = sigmoid(2x), a per-voxel function of the input."""
    return torch.cat([torch.zeros_like(x), 2.0 * x], dim=1)


class _Recorder:
    """predict() wrapper recording the batches it receives."""

    def __init__(self, fn):
        self.fn = fn
        self.batches = []

    def __call__(self, x):
        self.batches.append(x.clone())
        return self.fn(x)


class _ConstantPerWindow:
    """One-channel predict returning, for the i-th window seen, the constant logit logit(probs[i])."""

    def __init__(self, probs):
        self.logits = [float(np.log(p / (1 - p))) for p in probs]
        self.seen = 0

    def __call__(self, x):
        out = torch.empty((x.shape[0], 1, *x.shape[2:]))
        for b in range(x.shape[0]):
            out[b] = self.logits[self.seen]
            self.seen += 1
        return out


# --------------------------------------------------------------------------------------------- window placement


@pytest.mark.parametrize(
    ("size", "patch", "stride", "expected"),
    [
        (100, 112, 18, [0]),  # smaller than the patch: padded to 112, one window
        (112, 112, 18, [0]),  # equal: n = ceil(0 / 18) + 1 = 1
        (120, 112, 18, [0, 8]),  # n = ceil(8 / 18) + 1 = 2; last start min(18, 8) = 8
        (150, 112, 18, [0, 18, 36, 38]),  # n = ceil(38 / 18) + 1 = 4; last start min(54, 38) = 38
        (88, 80, 4, [0, 4, 8]),  # LA z: n = ceil(8 / 4) + 1 = 3
        (10, 5, 5, [0, 5]),  # stride = patch: n = ceil(5 / 5) + 1 = 2
        (10, 4, 3, [0, 3, 6]),  # n = ceil(6 / 3) + 1 = 3, the last one flush with the border
    ],
)
def test_window_starts_hand_computed(size, patch, stride, expected):
    assert window_starts(size, patch, stride) == expected


def test_count_windows_is_the_product_of_axes():
    # x: 150 → 4 windows, y: 120 → 2, z: 88 → 3 (see above): 4 · 2 · 3 = 24.
    assert count_windows((150, 120, 88), (112, 112, 80), (18, 18, 4)) == 24
    # Pancreas median case (protocol §4.2): 184×146×216 with 96³ / 16 → 7 · 5 · 9 = 315.
    assert count_windows((184, 146, 216), (96, 96, 96), (16, 16, 16)) == 315


def test_la_test_set_window_counts_from_manifest():
    with LA_MANIFEST.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    assert len(rows) == 20
    counts = {
        r["id"]: count_windows((int(r["shape_x"]), int(r["shape_y"]), int(r["shape_z"])), (112, 112, 80), (18, 18, 4))
        for r in rows
    }
    # Protocol §4.2: 45–84 windows per case, 1,128 in total.
    assert min(counts.values()) == 45 and max(counts.values()) == 84
    assert sum(counts.values()) == 1128
    # One case by hand: 168×136×88 → x ceil(56/18)+1 = 5, y ceil(24/18)+1 = 3, z ceil(8/4)+1 = 3 → 45.
    assert count_windows((168, 136, 88), (112, 112, 80), (18, 18, 4)) == 45


@pytest.mark.parametrize(
    ("patch", "stride"),
    [((4, 4), (2, 2)), ((4, 4, 4), (5, 2, 2)), ((4, 0, 4), (2, 2, 2)), ((4, 4, 4), (2, 2, 2.5)), ("444", (1, 1, 1))],
)
def test_bad_geometry_raises(patch, stride):
    with pytest.raises(ValueError, match="patch_size|stride"):
        count_windows((10, 10, 10), patch, stride)
    with pytest.raises(ValueError, match="patch_size|stride"):
        sliding_window(_two_class_logits, np.zeros((10, 10, 10), np.float32), patch, stride, 2)


def test_bad_arguments_raise():
    image = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(ValueError, match="image"):
        sliding_window(_two_class_logits, np.zeros((8, 8), np.float32), (4, 4, 4), (2, 2, 2), 2)
    with pytest.raises(ValueError, match="num_classes"):
        sliding_window(_two_class_logits, image, (4, 4, 4), (2, 2, 2), 0)
    with pytest.raises(ValueError, match="windows_per_batch"):
        sliding_window(_two_class_logits, image, (4, 4, 4), (2, 2, 2), 2, windows_per_batch=0)
    with pytest.raises(ValueError, match="predict"):  # the head has 2 channels, not 3
        sliding_window(_two_class_logits, image, (4, 4, 4), (2, 2, 2), 3)
    with pytest.raises(ValueError, match="stride"):
        window_starts(10, 4, 5)


# --------------------------------------------------------------------------------------------- coverage and averaging


def test_per_voxel_function_gives_the_direct_probability_everywhere():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((23, 17, 11)).astype(np.float32)
    predict = _Recorder(_two_class_logits)
    label, prob = sliding_window(predict, image, (8, 6, 5), (3, 4, 2), 2, windows_per_batch=4)
    # Every window gives each voxel the same probability, so the average equals the direct value (and a voxel left
    # uncovered would be NaN). Foreground = sigmoid(2x); background = 1 − that.
    direct = torch.softmax(_two_class_logits(torch.from_numpy(image)[None, None]), dim=1)[0].numpy()
    assert prob.dtype == np.float32 and prob.shape == (2, 23, 17, 11)
    np.testing.assert_allclose(prob, direct, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(label, (direct[1] > direct[0]).astype(np.uint8))
    assert label.dtype == np.uint8
    # x: ceil(15/3)+1 = 6, y: ceil(11/4)+1 = 4, z: ceil(6/2)+1 = 4 → 96 windows, in batches of 4 → 24 calls.
    assert count_windows(image.shape, (8, 6, 5), (3, 4, 2)) == 96
    assert [b.shape[0] for b in predict.batches] == [4] * 24
    assert all(
        b.dtype == torch.float32 and b.device.type == "cpu" and b.shape[1:] == (1, 8, 6, 5) for b in predict.batches
    )


def test_constant_per_window_counts_overlaps_1d():
    # Size 10, patch 4, stride 3 → windows [0:4], [3:7], [6:10] with probabilities 0.2, 0.5, 0.9.
    image = np.zeros((10, 1, 1), np.float32)
    label, prob = sliding_window(_ConstantPerWindow([0.2, 0.5, 0.9]), image, (4, 1, 1), (3, 1, 1), 1)
    # x 0–2: 0.2; x 3: (0.2 + 0.5)/2 = 0.35; x 4–5: 0.5; x 6: (0.5 + 0.9)/2 = 0.7; x 7–9: 0.9.
    expected = np.array([0.2, 0.2, 0.2, 0.35, 0.5, 0.5, 0.7, 0.9, 0.9, 0.9])
    np.testing.assert_allclose(prob[0, :, 0, 0], expected, atol=1e-6)
    # Strict p > 0.5: x 4–5 at exactly 0.5 (sigmoid(0)) stay background.
    assert prob[0, 4, 0, 0] == 0.5
    np.testing.assert_array_equal(label[:, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1, 1, 1])


def test_constant_per_window_counts_overlaps_2d():
    # 6×6×1, patch 4×4×1, stride 2 → starts [0, 2] on x and y; windows in x-outer order: (0,0), (0,2), (2,0), (2,2).
    probs = [0.1, 0.3, 0.6, 0.8]
    _, prob = sliding_window(_ConstantPerWindow(probs), np.zeros((6, 6, 1), np.float32), (4, 4, 1), (2, 2, 1), 1)
    p = prob[0, :, :, 0]
    assert p[0, 0] == pytest.approx(0.1, abs=1e-6)  # window (0,0) only
    assert p[0, 5] == pytest.approx(0.3, abs=1e-6)  # window (0,2) only
    assert p[5, 0] == pytest.approx(0.6, abs=1e-6)  # window (2,0) only
    assert p[0, 2] == pytest.approx((0.1 + 0.3) / 2, abs=1e-6)  # x 0–1, y 2–3: windows (0,0), (0,2)
    assert p[3, 3] == pytest.approx((0.1 + 0.3 + 0.6 + 0.8) / 4, abs=1e-6)  # centre: all four windows


# --------------------------------------------------------------------------------------------- padding and batching


def test_image_smaller_than_patch_is_padded_centred_and_cropped_back():
    rng = np.random.default_rng(1)
    image = rng.uniform(0.5, 1.5, (6, 9, 3)).astype(np.float32)
    predict = _Recorder(_two_class_logits)
    label, prob = sliding_window(predict, image, (8, 8, 4), (4, 4, 2), 2)
    assert label.shape == (6, 9, 3) and prob.shape == (2, 6, 9, 3)
    direct = torch.softmax(_two_class_logits(torch.from_numpy(image)[None, None]), dim=1)[0].numpy()
    np.testing.assert_allclose(prob, direct, atol=1e-6)
    # Deficits: x 8 − 6 = 2 → (1, 1); y none (9 ≥ 8: starts [0, 1]); z 4 − 3 = 1 → (0, 1).
    padded = np.pad(image, [(1, 1), (0, 0), (0, 1)])
    windows = torch.cat(predict.batches)
    assert windows.shape == (2, 1, 8, 8, 4)
    np.testing.assert_array_equal(windows[0, 0].numpy(), padded[:, 0:8, :])
    np.testing.assert_array_equal(windows[1, 0].numpy(), padded[:, 1:9, :])


def test_batching_does_not_change_the_result():
    rng = np.random.default_rng(2)
    image = rng.standard_normal((20, 14, 9)).astype(np.float32)

    def predict(x):
        return torch.cat([torch.sin(x), x * x - 0.5, -x], dim=1)  # three classes

    one = _Recorder(predict)
    seven = _Recorder(predict)
    label_1, prob_1 = sliding_window(one, image, (8, 8, 4), (5, 3, 2), 3, windows_per_batch=1)
    label_7, prob_7 = sliding_window(seven, image, (8, 8, 4), (5, 3, 2), 3, windows_per_batch=7)
    np.testing.assert_array_equal(prob_1, prob_7)
    np.testing.assert_array_equal(label_1, label_7)
    # x: ceil(12/5)+1 = 4, y: ceil(6/3)+1 = 3, z: ceil(5/2)+1 = 4 → 48 windows: 48 calls of 1, 6·7 + 6 for 7.
    assert [b.shape[0] for b in one.batches] == [1] * 48
    assert [b.shape[0] for b in seven.batches] == [7] * 6 + [6]
    torch.testing.assert_close(torch.cat(one.batches), torch.cat(seven.batches), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------- decision rules


def test_sigmoid_head_strict_threshold():
    image = np.zeros((6, 5, 4), np.float32)
    image[0] = 1e-3  # sigmoid > 0.5
    image[1] = -1e-3  # sigmoid < 0.5; the rest is exactly 0 → p = 0.5 → background
    label, prob = sliding_window(lambda x: x.clone(), image, (4, 4, 4), (2, 2, 2), 1)
    assert prob.shape == (1, 6, 5, 4)
    assert (prob[0, 2:] == 0.5).all()
    assert label[0].all() and not label[1:].any()


def test_softmax_tie_goes_to_background():
    image = np.zeros((6, 6, 6), np.float32)
    label, prob = sliding_window(lambda x: torch.zeros((x.shape[0], 2, *x.shape[2:])), image, (4, 4, 4), (2, 2, 2), 2)
    assert (prob == 0.5).all()
    assert not label.any()
    # Three classes with classes 1 and 2 tied above 0 → the first maximum, class 1.
    logits = torch.tensor([0.0, 1.0, 1.0]).view(1, 3, 1, 1, 1)
    label3, _ = sliding_window(lambda x: logits.expand(x.shape[0], 3, *x.shape[2:]), image, (4, 4, 4), (2, 2, 2), 3)
    assert (label3 == 1).all()
