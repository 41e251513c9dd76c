"""Dice and Jaccard of one case (medpy 0.5.2 `dc` / `jc`, protocol §4.5): the overlap part of
`harness.evaluate.metrics`, in a module of its own because training imports it too (`harness.train.monitor` scores the
validation and test cases on the way), so an edit of the surface distances never reruns training.
"""

from __future__ import annotations

import numpy as np


def as_mask_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and binarise a prediction / ground-truth pair.

    Args:
        pred: Prediction, any numeric or bool array of shape (X, Y, Z); nonzero = object.
        gt: Ground truth of the same shape.

    Returns:
        The two masks as bool arrays of shape (X, Y, Z).

    Raises:
        ValueError: If an input is not 3D, the shapes differ or the ground truth is empty.
    """
    p = np.asarray(pred)
    g = np.asarray(gt)
    if p.ndim != 3:
        raise ValueError(f"pred: expected a 3D array (X, Y, Z), got shape {p.shape}")
    if g.ndim != 3:
        raise ValueError(f"gt: expected a 3D array (X, Y, Z), got shape {g.shape}")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt: expected the same shape, got {p.shape} and {g.shape}")
    p = p.astype(bool, copy=False)
    g = g.astype(bool, copy=False)
    if not g.any():
        raise ValueError("gt: the ground-truth mask is empty; metrics are undefined (protocol §4.6)")
    return p, g


def overlap(p: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    """Dice and Jaccard (medpy ``dc`` / ``jc``) of two masks whose union is not empty."""
    intersection = np.count_nonzero(p & g)
    dice = 2.0 * intersection / float(np.count_nonzero(p) + np.count_nonzero(g))
    jaccard = float(intersection) / float(np.count_nonzero(p | g))
    return float(dice), float(jaccard)


def case_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """The Dice of `harness.evaluate.metrics.case_metrics` alone (no surface distances), in [0, 1]: what checkpoint
    selection and the selection audit compare during training; 0 for an empty prediction (under every empty-prediction
    policy)."""
    p, g = as_mask_pair(pred, gt)
    return overlap(p, g)[0] if p.any() else 0.0
