"""Benchmarks: the signed distance map and the LA data pipeline, per core (docs/performance.md).

* "sdf-la-patch": `harness.numerics.sdf.signed_distance_map` vs the straightforward reference (two scipy EDTs on the
  full patch and skimage `find_boundaries`) on LA-sized 112×112×80 label patches cropped from a real LA label; goal
  ≥ 5×, identical to 1e-6.
* "data-pipeline-la": `PatchDataset.__getitem__` on real LA volumes (RandomRotFlip + RandomCrop 112×112×80),
  labeled samples, in-process, with and without the SDF label transform; samples/s per core = PATCHES / mean.

Run with ``pytest tests/benchmarks --benchmark-only --benchmark-group-by=group``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.data.dataset import PatchDataset, la_case_path, load_case
from harness.numerics.sdf import reference_signed_distance_map, signed_distance_map

PATCH = (112, 112, 80)
PATCHES = 4  # patches per benchmark call
N_CASES = 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the goals are per core (numpy, scipy and edt run single-threaded anyway)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def la_cases(la_mini) -> list[tuple[np.ndarray, np.ndarray]]:
    ids = (la_mini / "train.list").read_text().split()[:N_CASES]
    return [load_case(la_case_path(la_mini, i), with_label=True) for i in ids]


@pytest.fixture(scope="module")
def label_patches(la_cases) -> list[np.ndarray]:
    """PATCHES random 112×112×80 crops of the first case's label (uint8), each with foreground and background."""
    label = la_cases[0][1]
    rng = np.random.default_rng(0)
    patches = []
    while len(patches) < PATCHES:
        x, y, z = (int(rng.integers(0, s - p + 1)) for s, p in zip(label.shape, PATCH, strict=True))
        patch = np.ascontiguousarray(label[x : x + PATCH[0], y : y + PATCH[1], z : z + PATCH[2]])
        if patch.any() and not patch.all():
            patches.append(patch)
    return patches


def _all(fn, patches):
    return [fn(p) for p in patches]


@pytest.mark.benchmark(group="sdf-la-patch")
def test_sdf_ours(benchmark, label_patches):
    ours = benchmark(_all, signed_distance_map, label_patches)
    for got, label in zip(ours, label_patches, strict=True):
        np.testing.assert_allclose(got, reference_signed_distance_map(label), atol=1e-6)
    benchmark.extra_info["patches_per_s"] = PATCHES / benchmark.stats.stats.mean


@pytest.mark.benchmark(group="sdf-la-patch")
def test_sdf_reference(benchmark, label_patches):
    ref = benchmark(_all, reference_signed_distance_map, label_patches)
    assert all(r.min() == pytest.approx(-1.0) and r.max() == pytest.approx(1.0) for r in ref)
    benchmark.extra_info["patches_per_s"] = PATCHES / benchmark.stats.stats.mean


def _dataset(la_cases, with_sdf: bool) -> PatchDataset:
    transforms = {"sdf": signed_distance_map} if with_sdf else None
    return PatchDataset(
        la_cases, [], patch_size=PATCH, augment_mode="rotflip_crop", seed=1337, label_transforms=transforms
    )


def _samples(dataset: PatchDataset) -> list[dict[str, torch.Tensor]]:
    return [dataset[(it, 0, "l", it % N_CASES)] for it in range(PATCHES)]


@pytest.mark.benchmark(group="data-pipeline-la")
def test_pipeline_without_sdf(benchmark, la_cases):
    samples = benchmark(_samples, _dataset(la_cases, with_sdf=False))
    assert all(s["image"].shape == (1, *PATCH) and s["label"].shape == PATCH for s in samples)
    benchmark.extra_info["samples_per_s_per_core"] = PATCHES / benchmark.stats.stats.mean


@pytest.mark.benchmark(group="data-pipeline-la")
def test_pipeline_with_sdf(benchmark, la_cases):
    samples = benchmark(_samples, _dataset(la_cases, with_sdf=True))
    plain = _samples(_dataset(la_cases, with_sdf=False))
    for s, p in zip(samples, plain, strict=True):
        assert torch.equal(s["image"], p["image"]) and torch.equal(s["label"], p["label"])  # same augmentation
        expected = reference_signed_distance_map(s["label"].numpy())
        np.testing.assert_allclose(s["sdf"].numpy(), expected, atol=1e-6)
    benchmark.extra_info["samples_per_s_per_core"] = PATCHES / benchmark.stats.stats.mean
