"""Sliding-window inference over a whole volume (protocol §4.2 and §4.3).

The logic is that of the reference ``test_single_case`` (UA-MT, DTC, SASSNet, MC-Net): centred zero padding of any
dimension smaller than the patch, n = ceil((size − patch) / stride) + 1 windows per axis starting at
min(k · stride, size − patch), per-window probabilities (softmax over the classes, or sigmoid for a one-channel head)
summed into a score map and divided by the per-voxel window count, then argmax (ties → class 0) or p > 0.5 (strict).
Windows are visited in the reference order (x outer, z inner) and fed to the network ``windows_per_batch`` at a time.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

Triple = tuple[int, int, int]


def _positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int, or raise ValueError if it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _triple(value: Sequence[int], name: str) -> Triple:
    """Validate a 3-tuple of positive integers (x, y, z)."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f"{name}: expected three positive integers (x, y, z), got {value!r}")
    x, y, z = (_positive_int(v, f"{name}[{i}]") for i, v in enumerate(value))
    return x, y, z


def _check_geometry(patch_size: Sequence[int], stride: Sequence[int]) -> tuple[Triple, Triple]:
    """Validate patch size and stride (3-tuples of positive ints, stride ≤ patch on every axis)."""
    patch = _triple(patch_size, "patch_size")
    step = _triple(stride, "stride")
    for axis, (p, s) in enumerate(zip(patch, step, strict=True)):
        if s > p:
            raise ValueError(f"stride: stride[{axis}] = {s} exceeds patch_size[{axis}] = {p}; windows would leave gaps")
    return patch, step


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start indices of the windows along one axis.

    A dimension smaller than the patch is zero-padded to the patch first, so it gets the single start 0 (in padded
    coordinates). Otherwise n = ceil((size − patch) / stride) + 1 and start_k = min(k · stride, size − patch); the last
    window is flush with the far border.

    Args:
        size: Length of the axis in voxels (before padding).
        patch: Window length in voxels.
        stride: Step between window starts in voxels, 1 ≤ stride ≤ patch.

    Returns:
        The sorted start indices (in padded coordinates).

    Raises:
        ValueError: If an argument is not a positive integer or ``stride > patch``.
    """
    size = _positive_int(size, "size")
    patch = _positive_int(patch, "patch")
    stride = _positive_int(stride, "stride")
    if stride > patch:
        raise ValueError(f"stride: {stride} exceeds patch = {patch}; windows would leave gaps")
    padded = max(size, patch)
    n = math.ceil((padded - patch) / stride) + 1
    return [min(k * stride, padded - patch) for k in range(n)]


def count_windows(shape: Sequence[int], patch_size: Sequence[int], stride: Sequence[int]) -> int:
    """Number of windows :func:`sliding_window` runs on a volume of ``shape`` (product of the per-axis counts).

    Args:
        shape: Volume shape (X, Y, Z) in voxels.
        patch_size: Window size (x, y, z) in voxels.
        stride: Window step (x, y, z) in voxels, each ≤ the patch size.

    Returns:
        The total window count.
    """
    size = _triple(shape, "shape")
    patch, step = _check_geometry(patch_size, stride)
    return math.prod(len(window_starts(n, p, s)) for n, p, s in zip(size, patch, step, strict=True))


def _pad_to_patch(image: np.ndarray, patch: Triple) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """Centred zero padding of every axis shorter than the patch.

    Args:
        image: float32 volume (X, Y, Z).
        patch: Window size (x, y, z).

    Returns:
        The padded volume and the slices that crop it back to (X, Y, Z).
    """
    deficits = [max(p - n, 0) for n, p in zip(image.shape, patch, strict=True)]
    pads = [(d // 2, d - d // 2) for d in deficits]
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, image.shape, strict=True))
    if any(deficits):
        image = np.pad(image, pads, mode="constant", constant_values=0)
    return image, (crop[0], crop[1], crop[2])


def _coverage(shape: Triple, starts: list[list[int]], patch: Triple) -> np.ndarray:
    """Per-voxel window count, float32 (X, Y, Z): the outer product of the per-axis coverage counts."""
    axes = []
    for n, axis_starts, p in zip(shape, starts, patch, strict=True):
        counts = np.zeros(n, dtype=np.float32)
        for s in axis_starts:
            counts[s : s + p] += 1
        axes.append(counts)
    return np.einsum("i,j,k->ijk", *axes).astype(np.float32)


def _probabilities(logits: torch.Tensor, expected: tuple[int, ...]) -> torch.Tensor:
    """Check ``predict``'s output shape [b, C, px, py, pz] and turn logits into probabilities (softmax or sigmoid)."""
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"predict: expected a logits tensor of shape {expected}, got {got}")
    logits = logits.float()
    return torch.sigmoid(logits) if expected[1] == 1 else torch.softmax(logits, dim=1)


def _accumulate(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    corners: list[Triple],
    patch: Triple,
    num_classes: int,
    windows_per_batch: int,
) -> torch.Tensor:
    """Sum of window probabilities over the padded volume, float32 [C, X, Y, Z], on the device of the logits."""
    volume = torch.from_numpy(image)
    score: torch.Tensor | None = None
    for first in range(0, len(corners), windows_per_batch):
        batch = corners[first : first + windows_per_batch]
        windows = [tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True)) for corner in batch]
        x = torch.stack([volume[w] for w in windows]).unsqueeze(1)
        probs = _probabilities(predict(x), (len(batch), num_classes, *patch))
        if score is None:
            score = torch.zeros((num_classes, *image.shape), dtype=torch.float32, device=probs.device)
        for w, prob in zip(windows, probs, strict=True):
            score[(slice(None), *w)] += prob
    assert score is not None  # at least one window always exists
    return score


def sliding_window(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    patch_size: Sequence[int],
    stride: Sequence[int],
    num_classes: int,
    *,
    windows_per_batch: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Sliding-window prediction of a whole volume with probability averaging (protocol §4.2, §4.3).

    Args:
        predict: Maps a CPU float32 tensor [b, 1, px, py, pz] to logits [b, C, px, py, pz] (it moves the input to its
            own device; the network must already be in eval mode). Called under ``torch.inference_mode()``.
        image: Volume (X, Y, Z), float32 (other real dtypes are cast).
        patch_size: Window size (px, py, pz) in voxels.
        stride: Window step (sx, sy, sz) in voxels, 1 ≤ stride ≤ patch on every axis.
        num_classes: Number of output channels C: ≥ 2 for a softmax head, 1 for a sigmoid head.
        windows_per_batch: Windows per ``predict`` call (the reference uses 1; the result does not depend on it for a
            network whose per-sample output does not depend on the batch).

    Returns:
        ``(label_map, prob_map)``: uint8 (X, Y, Z) labels (argmax over C with ties to class 0 for C ≥ 2, ``p > 0.5``
        for C = 1) and the float32 (C, X, Y, Z) averaged probabilities (score / count).

    Raises:
        ValueError: On a non-3D image, malformed patch size / stride, stride > patch, bad ``num_classes`` or
            ``windows_per_batch``, or a ``predict`` output of the wrong shape.
    """
    image = np.asarray(image)
    if image.ndim != 3 or not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"image: expected a numeric 3D array (X, Y, Z), got shape {image.shape} dtype {image.dtype}")
    patch, step = _check_geometry(patch_size, stride)
    num_classes = _positive_int(num_classes, "num_classes")
    windows_per_batch = _positive_int(windows_per_batch, "windows_per_batch")
    padded, crop = _pad_to_patch(np.ascontiguousarray(image, dtype=np.float32), patch)
    starts = [window_starts(n, p, s) for n, p, s in zip(padded.shape, patch, step, strict=True)]
    corners: list[Triple] = list(itertools.product(*starts))
    logger.debug("sliding window: %d windows over %s (padded %s)", len(corners), image.shape, padded.shape)
    with torch.inference_mode():
        score = _accumulate(predict, padded, corners, patch, num_classes, windows_per_batch)
        score = score.cpu().numpy()
    prob = score / _coverage(padded.shape, starts, patch)[None]
    prob = np.ascontiguousarray(prob[(slice(None), *crop)], dtype=np.float32)
    label = prob[0] > 0.5 if num_classes == 1 else np.argmax(prob, axis=0)
    return label.astype(np.uint8), prob
