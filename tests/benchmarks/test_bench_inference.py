"""Benchmark: sliding-window inference vs the sum of its window forward passes (docs/performance.md: overhead ≤ 10 %).

Both sides run the same V-Net (16 filters, as in the benchmark) on the same windows, batched ``WINDOWS_PER_BATCH``
at a time; the baseline only runs the forward passes on pre-extracted window batches. Run with
``pytest tests/benchmarks --benchmark-only --benchmark-group-by=group``.
"""

import itertools
import math

import numpy as np
import pytest
import torch

from harness.evaluate.inference import count_windows, sliding_window, window_starts
from harness.nets import build_net

SHAPE = (64, 64, 40)
PATCH = (48, 48, 32)
STRIDE = (16, 16, 8)  # 2 × 2 × 2 = 8 windows
WINDOWS_PER_BATCH = 4
NUM_CLASSES = 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread (the docs/performance.md goals are per core; less noise on shared 2-core machines)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def net():
    """The benchmark's V-Net at its real width (16 filters), in eval mode as at test time."""
    torch.manual_seed(0)
    return build_net("vnet", n_classes=NUM_CLASSES, n_filters=16).eval()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)


def _window_batches(image):
    """The CPU window batches [b, 1, px, py, pz] in the order sliding_window visits them."""
    starts = [window_starts(n, p, s) for n, p, s in zip(SHAPE, PATCH, STRIDE, strict=True)]
    volume = torch.from_numpy(image)
    windows = [
        volume[tuple(slice(c, c + p) for c, p in zip(corner, PATCH, strict=True))]
        for corner in itertools.product(*starts)
    ]
    return [
        torch.stack(windows[i : i + WINDOWS_PER_BATCH]).unsqueeze(1) for i in range(0, len(windows), WINDOWS_PER_BATCH)
    ]


def _forwards_only(net, batches):
    with torch.inference_mode():
        return [net(x) for x in batches]


def _reference_one_window_at_a_time(net, image):
    """Straightforward reference (one window per forward, NumPy score and count maps, as in test_single_case)."""
    score = np.zeros((NUM_CLASSES, *SHAPE), np.float32)
    count = np.zeros(SHAPE, np.float32)
    starts = [window_starts(n, p, s) for n, p, s in zip(SHAPE, PATCH, STRIDE, strict=True)]
    with torch.inference_mode():
        for corner in itertools.product(*starts):
            box = tuple(slice(c, c + p) for c, p in zip(corner, PATCH, strict=True))
            x = torch.from_numpy(np.ascontiguousarray(image[box]))[None, None]
            score[(slice(None), *box)] += torch.softmax(net(x), dim=1)[0].numpy()
            count[box] += 1
    return score / count[None]


@pytest.mark.benchmark(group="sliding-window")
def test_sliding_window(benchmark, net, image):
    label, prob = benchmark(sliding_window, net, image, PATCH, STRIDE, NUM_CLASSES, windows_per_batch=WINDOWS_PER_BATCH)
    expected = _reference_one_window_at_a_time(net, image)
    np.testing.assert_allclose(prob, expected, rtol=0, atol=1e-5)
    assert label.shape == SHAPE and label.dtype == np.uint8
    decided = np.abs(expected[1] - expected[0]) > 1e-4  # away from ties, labels must agree exactly
    np.testing.assert_array_equal(label[decided], np.argmax(expected, axis=0)[decided])


@pytest.mark.benchmark(group="sliding-window")
def test_sum_of_window_forwards(benchmark, net, image):
    batches = _window_batches(image)
    assert sum(b.shape[0] for b in batches) == count_windows(SHAPE, PATCH, STRIDE) == 8
    assert len(batches) == math.ceil(8 / WINDOWS_PER_BATCH)
    outputs = benchmark(_forwards_only, net, batches)
    assert all(o.shape == (b.shape[0], NUM_CLASSES, *PATCH) for o, b in zip(outputs, batches, strict=True))
