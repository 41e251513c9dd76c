"""Benchmarks: harness.evaluate.metrics.case_metrics vs medpy 0.5.2 (dc, jc, hd95, asd) on a real LA label.

Goals (docs/performance.md): ≥ 20× faster on the label padded into a 256×256×88 canvas ("metrics-la-canvas") and
≥ 10× at the case's own size ("metrics-la-case"), identical to 1e-9. The prediction is the label eroded once
(6-connected) plus a small false-positive cube. Run with
``pytest tests/benchmarks --benchmark-only --benchmark-group-by=group``.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from harness.evaluate.metrics import case_metrics

LA_MINI = Path(__file__).resolve().parents[3] / "shared" / "data" / "la-mini"
LA_DIR = (
    LA_MINI / "yulequan" / "UA-MT" / "88ed29ad794f877122e542a7fa9505a76fa83515" / "data" / "2018LA_Seg_Training Set"
)
CASE_ID = "WSJB9P4JCXUVHBOYFVWL"  # a test-split case, 190×135×88
CANVAS = (256, 256, 88)
KEYS = ("dice", "jaccard", "hd95", "asd")


def _ours(pred, gt):
    result = case_metrics(pred, gt, spacing=None, empty_pred="worst_case")
    return tuple(result[k] for k in KEYS)


def _medpy(pred, gt):
    from medpy.metric import binary

    return binary.dc(pred, gt), binary.jc(pred, gt), binary.hd95(pred, gt), binary.asd(pred, gt)


def _assert_same(values, expected):
    for key, got, ref in zip(KEYS, values, expected, strict=True):
        assert abs(float(got) - float(ref)) <= 1e-9, (key, got, ref)


@pytest.fixture(scope="module")
def la_case():
    """(pred, gt) uint8 (190, 135, 88) for the real LA case: label eroded once plus a 4×4×4 false-positive cube."""
    h5py = pytest.importorskip("h5py")
    path = LA_DIR / CASE_ID / "mri_norm2.h5"
    if not path.exists():
        reason = f"LA data not found at {path} (expected the shared la-mini directory next to the project)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with h5py.File(path, "r") as handle:
        gt = (handle["label"][...] > 0).astype(np.uint8)
    pred = ndimage.binary_erosion(gt, ndimage.generate_binary_structure(3, 1)).astype(np.uint8)
    pred[5:9, 5:9, 40:44] = 1
    assert not gt[5:9, 5:9, 40:44].any()  # really a false positive
    return pred, gt


@pytest.fixture(scope="module")
def la_canvas(la_case):
    """The same pair padded (centred in x and y) into a 256×256×88 canvas."""
    pred, gt = la_case
    out = []
    for mask in (pred, gt):
        canvas = np.zeros(CANVAS, dtype=np.uint8)
        x0, y0 = (CANVAS[0] - mask.shape[0]) // 2, (CANVAS[1] - mask.shape[1]) // 2
        canvas[x0 : x0 + mask.shape[0], y0 : y0 + mask.shape[1], : mask.shape[2]] = mask
        out.append(canvas)
    return out[0], out[1]


@pytest.fixture(scope="module")
def expected_case(la_case):
    return _medpy(*la_case)


@pytest.fixture(scope="module")
def expected_canvas(la_canvas):
    return _medpy(*la_canvas)


@pytest.mark.benchmark(group="metrics-la-canvas")
def test_canvas_ours(benchmark, la_canvas, expected_canvas):
    _assert_same(benchmark(_ours, *la_canvas), expected_canvas)


@pytest.mark.benchmark(group="metrics-la-canvas")
def test_canvas_medpy(benchmark, la_canvas, la_case, expected_case):
    values = benchmark.pedantic(_medpy, args=la_canvas, rounds=5, iterations=1, warmup_rounds=0)
    _assert_same(values, _ours(*la_canvas))
    _assert_same(values, expected_case)  # padding into the canvas changes nothing


@pytest.mark.benchmark(group="metrics-la-case")
def test_case_ours(benchmark, la_case, expected_case):
    _assert_same(benchmark(_ours, *la_case), expected_case)


@pytest.mark.benchmark(group="metrics-la-case")
def test_case_medpy(benchmark, la_case):
    values = benchmark.pedantic(_medpy, args=la_case, rounds=10, iterations=1, warmup_rounds=0)
    _assert_same(values, _ours(*la_case))
