"""Synthetic LA-like cases written in exactly the released LA on-disk format (docs/protocol.md §1.3, §1.6).

Used by CI, smoke runs and demos: the files are read by the same loader as the real data.

On-disk layout (as released by yulequan/UA-MT)::

    <root>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5   datasets `image` float32 and `label` uint8 {0, 1},
                                                       both (x, y, z), gzip-compressed, no attributes
    <root>/train.list                                  training IDs, sorted alphabetically, one per line
    <root>/test.list                                   test IDs in generation order, one per line
    <root>/manifest.json                               written last: settings, list and case sha256 (the contract of
                                                       harness.data.prepared), no paths or time stamps

IDs are 20 characters of [0-9A-Z], like the real LA IDs.

Generative model of one case of shape (X, Y, Z) ("a smooth irregular bright blob in a noisy, bias-field volume"):

1. **Target** (the label): an ellipsoid with radii (rx, ry, rz) = (0.13–0.21 X, 0.13–0.21 Y, 0.14–0.24 Z) whose
   normalised radius is modulated by smoothed Gaussian noise: voxel v is inside iff
   ‖(v − c) / r‖ < 1 + m(v), with m = clip(0.22 · n(v), −0.35, 0.35) and n unit-variance noise smoothed with
   σ = 3 voxels. Only the connected component that contains the centre is kept. The centre keeps a gap of ≥ 3 voxels
   to the x and y borders. In "touch" cases (by default one in three) the centre lies within 0.5 rz of the first or
   last z slice, so the label touches that slice (as real LA labels can); otherwise the label stays ≥ 1 voxel away
   from both z borders.
2. **Distractors** (not labeled), of similar brightness but a different shape:
   a tube of radius 0.055–0.075 min(X, Y) crossing the whole volume along z with a gentle sinusoidal wobble, placed
   next to the target (like the aorta next to the atrium), and a small sphere (radius 0.07–0.10 min(X, Y)) placed
   away from the target. Where they overlap the target, the target wins.
3. **Intensities**: background 0 with a smooth tissue texture (0.15 · noise, σ = 3); target 1.0 with a fine texture
   (× (1 + 0.15 · noise), σ = 1.5); tube 1.05 and sphere 0.95, both nearly uniform. The volume is smoothed with
   σ = 0.7 voxel (partial volume), multiplied by a smooth bias field exp(p(x, y, z)) with p a random polynomial of
   degree 2 in coordinates scaled to [−1, 1] (coefficients N(0, 0.15²) linear, N(0, 0.1²) quadratic), and Gaussian
   noise N(0, 0.18²) is added.
4. **Normalisation**: z-score over the whole volume (mean and std over all voxels, as the LA preprocessing does,
   docs/protocol.md §1.4 step 5), cast to float32.

An intensity threshold therefore picks up the distractors as well, so the best global threshold reaches a Dice of
only about 0.6–0.85 (see tests/data/test_synthetic.py), while shape and context separate the target.
Everything is drawn from `numpy.random.default_rng`: one seed writes identical arrays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from harness.data.case_files import write_h5
from harness.data.download import sha256_file, write_list
from harness.data.prepared import la_case_path
from harness.io import write_json_atomic

logger = logging.getLogger(__name__)

ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ID_LENGTH = 20
MIN_DIM = 16
_MOD_MAX = 0.35  # max |radius modulation| of the target blob
_XY_GAP = 3  # min voxels between the target and the x / y borders


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian white noise smoothed with `sigma` voxels, rescaled to zero mean and unit std; float64 of `shape`."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    n -= n.mean()
    return n / max(float(n.std()), 1e-12)


def _centre_range(radius: float, size: int, gap: float) -> tuple[float, float]:
    """Allowed centre coordinates for an object of max extent `radius` that keeps `gap` voxels to both borders."""
    lo, hi = radius + gap, size - 1 - radius - gap
    if lo > hi:  # tiny volume: fall back to the middle
        lo = hi = (size - 1) / 2
    return lo, hi


def _blob_centre(rng: np.random.Generator, shape: tuple[int, int, int], radii: np.ndarray, touch_z: bool) -> np.ndarray:
    """Centre (x, y, z) of the target, in voxels; z within 0.5 rz of a z border iff `touch_z`."""
    ext = (1 + _MOD_MAX) * radii
    cx = rng.uniform(*_centre_range(ext[0], shape[0], _XY_GAP))
    cy = rng.uniform(*_centre_range(ext[1], shape[1], _XY_GAP))
    if touch_z:
        off = rng.uniform(0.0, 0.5) * radii[2]
        cz = off if rng.integers(0, 2) == 0 else shape[2] - 1 - off
    else:
        cz = rng.uniform(*_centre_range(ext[2], shape[2], 1.0))
    return np.array([cx, cy, cz])


def _target_mask(rng: np.random.Generator, shape: tuple[int, int, int], touch_z: bool) -> tuple[np.ndarray, ...]:
    """Irregular blob: returns (mask bool (X, Y, Z), centre (3,) voxels, radii (3,) voxels)."""
    radii = np.array(shape, float) * rng.uniform([0.13, 0.13, 0.14], [0.21, 0.21, 0.24])
    centre = _blob_centre(rng, shape, radii, touch_z)
    gx, gy, gz = np.ogrid[: shape[0], : shape[1], : shape[2]]
    d = np.sqrt(
        ((gx - centre[0]) / radii[0]) ** 2 + ((gy - centre[1]) / radii[1]) ** 2 + ((gz - centre[2]) / radii[2]) ** 2
    )
    mod = np.clip(0.22 * _smooth_noise(rng, shape, 3.0), -_MOD_MAX, _MOD_MAX)
    mask = d < 1.0 + mod
    comps, _ = ndimage.label(mask)
    seed_voxel = tuple(int(np.clip(round(c), 0, s - 1)) for c, s in zip(centre, shape, strict=True))
    return comps == comps[seed_voxel], centre, radii


def _tube_mask(
    rng: np.random.Generator, shape: tuple[int, int, int], centre: np.ndarray, radii: np.ndarray
) -> np.ndarray:
    """Bright tube along the whole z axis next to the target, with a sinusoidal wobble; bool (X, Y, Z)."""
    rt = rng.uniform(0.055, 0.075) * min(shape[:2])
    angle = rng.uniform(0.0, 2 * np.pi)
    dist = (1 + _MOD_MAX) * max(radii[0], radii[1]) * rng.uniform(0.8, 1.1) + rt
    tx = np.clip(centre[0] + dist * np.cos(angle), rt + 1, shape[0] - 2 - rt)
    ty = np.clip(centre[1] + dist * np.sin(angle), rt + 1, shape[1] - 2 - rt)
    amp, period, phase = rng.uniform(0.0, 2.0), rng.uniform(0.8, 1.5) * shape[2], rng.uniform(0.0, 2 * np.pi)
    gx, gy, gz = np.ogrid[: shape[0], : shape[1], : shape[2]]
    wobble = amp * np.sin(2 * np.pi * gz / period + phase)
    return (gx - tx - wobble) ** 2 + (gy - ty + wobble) ** 2 < rt**2


def _sphere_mask(
    rng: np.random.Generator, shape: tuple[int, int, int], centre: np.ndarray, radii: np.ndarray
) -> np.ndarray:
    """Small bright sphere away from the target (up to 20 tries, else the last try); bool (X, Y, Z)."""
    rs = rng.uniform(0.07, 0.10) * min(shape[:2])
    min_dist = (1 + _MOD_MAX) * float(radii.max()) + rs + 1
    for _ in range(20):
        sc = np.array([rng.uniform(*_centre_range(rs, s, 1.0)) for s in shape])
        if np.linalg.norm(sc - centre) >= min_dist:
            break
    gx, gy, gz = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (gx - sc[0]) ** 2 + (gy - sc[1]) ** 2 + (gz - sc[2]) ** 2 < rs**2


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth multiplicative field exp(p), p a random degree-2 polynomial of coordinates in [-1, 1]; (X, Y, Z)."""
    axes = np.ogrid[: shape[0], : shape[1], : shape[2]]
    lin, quad = rng.normal(0.0, 0.15, 3), rng.normal(0.0, 0.1, 3)
    log_b = 0.0
    for a, s, cl, cq in zip(axes, shape, lin, quad, strict=True):
        u = 2.0 * a / (s - 1) - 1.0
        log_b = log_b + cl * u + cq * u**2
    return np.exp(log_b)


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(s) < MIN_DIM for s in shape):
        raise ValueError(f"shape must be 3 sizes (x, y, z), each >= {MIN_DIM}; got {shape}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def make_synthetic_case(
    rng: np.random.Generator, shape: tuple[int, int, int], *, touch_z: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One LA-like case (generative model in the module docstring).

    Args:
        rng: the only source of randomness.
        shape: (X, Y, Z) in voxels, each >= 16.
        touch_z: whether the label must touch the first or last z slice; None draws it with probability 1/3.

    Returns:
        image float32 (X, Y, Z), z-scored over the whole volume; label uint8 (X, Y, Z) in {0, 1}, non-empty.
    """
    shape = _check_shape(shape)
    if touch_z is None:
        touch_z = bool(rng.random() < 1 / 3)
    target, centre, radii = _target_mask(rng, shape, touch_z)
    tube = _tube_mask(rng, shape, centre, radii) & ~target
    sphere = _sphere_mask(rng, shape, centre, radii) & ~target & ~tube
    img = 0.15 * _smooth_noise(rng, shape, 3.0)
    img[target] = (1.0 + 0.15 * _smooth_noise(rng, shape, 1.5))[target]
    img[tube] = 1.05 + 0.03 * img[tube]
    img[sphere] = 0.95 + 0.03 * img[sphere]
    img = ndimage.gaussian_filter(img, 0.7, mode="nearest")
    img *= _bias_field(rng, shape)
    img += rng.normal(0.0, 0.18, shape)
    img = (img - img.mean()) / img.std()
    return img.astype(np.float32), target.astype(np.uint8)


def _random_ids(rng: np.random.Generator, n: int) -> list[str]:
    """`n` unique 20-character IDs over [0-9A-Z], in drawing order."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        cid = "".join(ID_ALPHABET[i] for i in rng.integers(0, len(ID_ALPHABET), ID_LENGTH))
        if cid not in seen:
            seen.add(cid)
            ids.append(cid)
    return ids


def _check_args(n_train: int, n_test: int, shape_xy: tuple[tuple[int, int], ...], shape_z: int) -> None:
    if n_train < 1 or n_test < 0:
        raise ValueError(f"n_train must be >= 1 and n_test >= 0; got n_train={n_train}, n_test={n_test}")
    if len(shape_xy) != 2 or any(len(r) != 2 or r[0] > r[1] or r[0] < MIN_DIM for r in shape_xy):
        raise ValueError(f"shape_xy must be two inclusive ranges (lo, hi) with {MIN_DIM} <= lo <= hi; got {shape_xy}")
    if shape_z < MIN_DIM:
        raise ValueError(f"shape_z must be >= {MIN_DIM}; got {shape_z}")


def _write_cases(
    root: Path, ids: list[str], shapes: list[tuple[int, int, int]], rngs: list[np.random.Generator], n_train: int
) -> dict:
    """Generate and write every case (the first `n_train` IDs are training cases); returns the manifest's `cases`."""
    cases = {}
    for k, (cid, shape, rng) in enumerate(zip(ids, shapes, rngs, strict=True)):
        image, label = make_synthetic_case(rng, shape, touch_z=k % 3 == 0)
        path = la_case_path(root, cid)
        write_h5(path, image, label)
        cases[cid] = {
            "split": "train" if k < n_train else "test",
            "shape": list(shape),
            "fg_voxels": int(label.sum()),
            "touches_z_border": bool(label[:, :, 0].any() or label[:, :, -1].any()),
            "sha256": sha256_file(path),
        }
    return cases


def write_synthetic_la(
    root: str | Path,
    *,
    n_train: int,
    n_test: int,
    seed: int,
    shape_xy: tuple[tuple[int, int], tuple[int, int]] = ((52, 64), (48, 56)),
    shape_z: int = 40,
) -> dict:
    """Write `n_train + n_test` synthetic cases, the two lists and (last) `manifest.json` in the released LA layout.

    A `manifest.json` already in `root` is deleted first, so an interrupted run never leaves a manifest that
    describes other files. The manifest's content depends only on the arguments (no paths, no time stamps): the same
    seed and settings write a byte-identical manifest (h5 files are written without time stamps).

    Args:
        root: data root (created if needed); receives `2018LA_Seg_Training Set/`, `train.list`, `test.list`,
            `manifest.json`.
        n_train: number of training cases (>= 1).
        n_test: number of test cases (>= 0).
        seed: seed of `numpy.random.default_rng`; the same seed writes identical arrays.
        shape_xy: inclusive ranges of the x and y sizes, drawn per case.
        shape_z: z size of every case (like LA's fixed 88).

    Returns:
        The manifest written, `{"dataset": "synthetic", "source": "synthetic", "format": "la_h5", "seed", "n_train",
        "n_test", "generator": {"shape_xy", "shape_z"}, "lists": {"train.list": sha256, "test.list": sha256},
        "cases": {ID: {"split", "shape": [x, y, z], "fg_voxels", "touches_z_border", "sha256"}}}`, plus (not in the
        file) "train": the sorted training IDs and "test": the test IDs, in list order.
    """
    _check_args(n_train, n_test, shape_xy, shape_z)
    root = Path(root)
    (root / "manifest.json").unlink(missing_ok=True)
    master = np.random.default_rng(seed)
    ids = _random_ids(master, n_train + n_test)
    shapes = [
        (
            int(master.integers(shape_xy[0][0], shape_xy[0][1] + 1)),
            int(master.integers(shape_xy[1][0], shape_xy[1][1] + 1)),
            int(shape_z),
        )
        for _ in ids
    ]
    cases = _write_cases(root, ids, shapes, master.spawn(len(ids)), n_train)
    train_ids, test_ids = sorted(ids[:n_train]), ids[n_train:]
    lists = {
        name: sha256_file(write_list(root / name, names))
        for name, names in (("train.list", train_ids), ("test.list", test_ids))
    }
    manifest = {
        "dataset": "synthetic",
        "source": "synthetic",
        "format": "la_h5",
        "seed": int(seed),
        "n_train": n_train,
        "n_test": n_test,
        "generator": {"shape_xy": [list(r) for r in shape_xy], "shape_z": int(shape_z)},
        "lists": lists,
        "cases": cases,
    }
    write_json_atomic(root / "manifest.json", manifest)
    logger.info("wrote %d synthetic LA cases (seed %d) and %s", len(ids), seed, root / "manifest.json")
    return {**manifest, "train": train_ids, "test": test_ids}
