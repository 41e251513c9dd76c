"""Per-case segmentation metrics with medpy 0.5.2 semantics (protocol §4.5, §4.6).

Primary metrics (Dice, Jaccard, HD95, ASD) follow ``medpy.metric.binary`` 0.5.2 exactly:

* masks: nonzero = object;
* Dice = 2|P ∩ G| / (|P| + |G|), Jaccard = |P ∩ G| / |P ∪ G|;
* surface S(M) = M XOR erode(M) with the 6-connected structuring element and border value 0, so a mask voxel on the
  array edge is a surface voxel;
* directed distances d(A→B): for every voxel of S(A) (in C order), the Euclidean distance (with spacing) from its
  centre to the nearest voxel of S(B);
* HD95 = ``np.percentile`` (default linear interpolation) of the pooled set d(P→G) ∪ d(G→P);
* ASD = mean of d(P→G), directed from prediction to ground truth.

Instead of medpy's full-volume Euclidean distance transform, both masks are cropped to the bounding box of their union
(grown by one voxel, clipped to the array; protocol §4.5) and the nearest surface voxel is found directly: distance 0
when the voxel is on the other surface, the smallest spacing when a neighbour along an axis of smallest spacing is
(no other offset can be as close), and a k-d tree over the other surface's voxel coordinates × spacing for the rest.
The EDT reads the exact distance to the nearest feature voxel and all surface voxels lie inside the box, so the values
are the same; each distance is computed from the integer voxel offset in the same arithmetic order as SciPy's EDT
(offset × spacing, squared, summed over x, y, z, square root), which makes the results bit-identical in practice
(tested against medpy to 1e-9).

Every convention is a required keyword argument: ``spacing`` (None = voxel units, or a 3-tuple in mm) and
``empty_pred`` (see :data:`EMPTY_PRED_POLICIES`). An empty ground truth always raises ``ValueError`` (protocol §4.6).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from harness.evaluate.overlap import as_mask_pair, overlap

logger = logging.getLogger(__name__)

EMPTY_PRED_POLICIES = ("worst_case", "nan", "reference_zero")


def _as_spacing(spacing: Sequence[float] | None) -> tuple[float, float, float] | None:
    """Validate a voxel spacing.

    Args:
        spacing: None (voxel units) or three positive finite voxel sizes in mm, in (x, y, z) order.

    Returns:
        None or a tuple of three Python floats.

    Raises:
        ValueError: If ``spacing`` is not None and not three positive finite numbers.
    """
    if spacing is None:
        return None
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as err:
        raise ValueError(f"spacing: expected None or three positive numbers (mm), got {spacing!r}") from err
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing: expected None or three positive finite numbers (mm), got {spacing!r}")
    return values


def _union_box(p: np.ndarray, g: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of ``p | g`` grown by one voxel per side and clipped to the array.

    Args:
        p: Bool mask (X, Y, Z).
        g: Bool mask (X, Y, Z), not empty.

    Returns:
        Three slices (x, y, z) selecting the box.
    """
    union = p | g
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, union.shape[axis])))
    return box[0], box[1], box[2]


def _padded_surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels ``mask XOR binary_erosion(mask, 6-connected cross, border_value=0)``, zero-padded by one voxel.

    The erosion is written with shifted slices of a zero-padded copy, which is exactly SciPy's binary erosion with the
    cross structuring element and border value 0.

    Args:
        mask: Bool mask of shape (a, b, c).

    Returns:
        Bool array of shape (a + 2, b + 2, c + 2): the surface of ``mask`` in the interior, False on the one-voxel rim.
    """
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    core = (slice(1, -1),) * 3
    eroded = mask.copy()
    for axis in range(3):
        for lo, hi in ((0, -2), (2, None)):
            shifted = list(core)
            shifted[axis] = slice(lo, hi)
            eroded &= padded[tuple(shifted)]
    padded[core] = mask & ~eroded
    return padded


def _nearest_offsets(src: np.ndarray, dst_surface: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Integer offset from each source voxel to a nearest voxel of ``dst_surface`` (Euclidean, scaled by ``scale``).

    Exact shortcut first: an offset of 0 when the source voxel is itself in ``dst_surface``, else a unit step along an
    axis of smallest spacing (the smallest possible positive distance) when that neighbour is in ``dst_surface``. The
    remaining voxels query a k-d tree over all ``dst_surface`` voxels (coordinates × spacing).

    Args:
        src: Flat indices (C order) of the source voxels in ``dst_surface``'s array, all in its interior, shape (n,).
        dst_surface: Padded bool surface array (a + 2, b + 2, c + 2) with at least one True voxel.
        scale: Voxel size per axis, float64 (3,).

    Returns:
        int64 array (n, 3): nearest destination voxel minus source voxel, in voxels.
    """
    flat = dst_surface.ravel()
    offsets = np.zeros((src.size, 3), dtype=np.int64)
    found = flat[src]
    steps = np.asarray(dst_surface.strides) // dst_surface.itemsize
    for axis in np.flatnonzero(scale == scale.min()):
        for sign in (-1, 1):
            hit = flat[src + sign * steps[axis]] & ~found
            offsets[hit, axis] = sign
            found |= hit
    rest = np.flatnonzero(~found)
    if rest.size:
        dst = np.stack(np.unravel_index(np.flatnonzero(flat), dst_surface.shape), axis=1)
        far = np.stack(np.unravel_index(src[rest], dst_surface.shape), axis=1)
        tree = cKDTree(dst * scale, balanced_tree=False, compact_nodes=False)
        _, nearest = tree.query(far * scale, k=1)
        offsets[rest] = dst[nearest] - far
    return offsets


def _distances(offsets: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Euclidean lengths of integer offsets (n, 3) in the unit of ``scale``, float64 (n,).

    Same arithmetic as ``scipy.ndimage.distance_transform_edt``: offset × sampling, squared, summed over x, y, z in
    that order, square root.
    """
    scaled = offsets.astype(np.float64) * scale
    scaled *= scaled
    return np.sqrt(scaled[:, 0] + scaled[:, 1] + scaled[:, 2])


def _surface_distances(
    p: np.ndarray, g: np.ndarray, spacing: tuple[float, float, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """The two directed surface-distance arrays d(P→G) and d(G→P) of medpy 0.5.2 (``__surface_distances``).

    Args:
        p: Non-empty bool prediction mask (X, Y, Z).
        g: Non-empty bool ground-truth mask (X, Y, Z).
        spacing: None (voxel units) or voxel size (x, y, z) in mm.

    Returns:
        (d_pred_to_gt, d_gt_to_pred): float64 arrays over the surface voxels of P and of G respectively, each in C order
        of the volume (the order medpy's ``dt[border]`` indexing gives), in the unit of ``spacing``.
    """
    scale = np.ones(3) if spacing is None else np.asarray(spacing, dtype=np.float64)
    box = _union_box(p, g)
    p_surface = _padded_surface(p[box])
    g_surface = _padded_surface(g[box])
    # Padding keeps the C order of the crop, which is the C order of the full volume restricted to the box.
    p_flat = np.flatnonzero(p_surface)
    g_flat = np.flatnonzero(g_surface)
    d_pg = _distances(_nearest_offsets(p_flat, g_surface, scale), scale)
    d_gp = _distances(_nearest_offsets(g_flat, p_surface, scale), scale)
    return d_pg, d_gp


def _empty_pred_distance(policy: str, shape: tuple[int, ...], spacing: tuple[float, float, float] | None) -> float:
    """HD95 and ASD value for an empty prediction under ``policy`` (protocol §4.6)."""
    if policy == "worst_case":
        scale = (1.0, 1.0, 1.0) if spacing is None else spacing
        return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, scale, strict=True))))
    if policy == "nan":
        return math.nan
    return 0.0


def case_metrics(
    pred: np.ndarray, gt: np.ndarray, *, spacing: Sequence[float] | None, empty_pred: str
) -> dict[str, float | bool | str]:
    """Dice, Jaccard, HD95 and ASD of one case with medpy 0.5.2 semantics.

    Args:
        pred: Prediction of shape (X, Y, Z); nonzero = object.
        gt: Ground truth of shape (X, Y, Z); nonzero = object; must not be empty.
        spacing: None for voxel units, or the voxel size (x, y, z) in mm for mm units.
        empty_pred: Policy for an empty prediction: ``"worst_case"`` (Dice = Jaccard = 0, HD95 = ASD = diagonal of the
            volume, sqrt(sum((shape * spacing)^2)), in the output unit), ``"nan"`` (0, 0, NaN, NaN) or
            ``"reference_zero"`` (0, 0, 0, 0 as in the published code).

    Returns:
        ``{"dice", "jaccard", "hd95", "asd"}`` as floats (Dice and Jaccard in [0, 1], distances in ``unit``),
        ``"empty_pred"`` (bool), ``"empty_pred_policy"`` (str) and ``"unit"`` (``"voxel"`` or ``"mm"``).

    Raises:
        ValueError: On bad shapes, an empty ground truth (also when both masks are empty), a bad spacing or an unknown
            policy.
    """
    if empty_pred not in EMPTY_PRED_POLICIES:
        raise ValueError(f"empty_pred: expected one of {EMPTY_PRED_POLICIES}, got {empty_pred!r}")
    spacing_t = _as_spacing(spacing)
    p, g = as_mask_pair(pred, gt)
    out: dict[str, float | bool | str] = {"empty_pred": False}
    if not p.any():
        distance = _empty_pred_distance(empty_pred, p.shape, spacing_t)
        out.update(dice=0.0, jaccard=0.0, hd95=distance, asd=distance, empty_pred=True)
    else:
        dice, jaccard = overlap(p, g)
        d_pg, d_gp = _surface_distances(p, g, spacing_t)
        hd95 = float(np.percentile(np.concatenate((d_pg, d_gp)), 95))
        out.update(dice=dice, jaccard=jaccard, hd95=hd95, asd=float(d_pg.mean()))
    out.update(empty_pred_policy=empty_pred, unit="voxel" if spacing_t is None else "mm")
    return out


def secondary_metrics(pred: np.ndarray, gt: np.ndarray, *, spacing: Sequence[float] | None) -> dict[str, float | str]:
    """Secondary (labelled, non-primary) surface metrics, from the same surface distances as :func:`case_metrics`.

    Args:
        pred: Prediction of shape (X, Y, Z); nonzero = object.
        gt: Ground truth of shape (X, Y, Z); nonzero = object; must not be empty.
        spacing: None for voxel units, or the voxel size (x, y, z) in mm.

    Returns:
        ``"hd95_max_dir"``: the maximum of the two directed 95th percentiles (MONAI / Metrics Reloaded style);
        ``"assd"``: the mean of the pooled distances d(P→G) ∪ d(G→P) (medpy 0.5.2 ``assd``); both NaN when the
        prediction is empty (undefined; no empty-prediction policy applies to secondary values);
        ``"unit"``: ``"voxel"`` or ``"mm"``.

    Raises:
        ValueError: On bad shapes, an empty ground truth or a bad spacing.
    """
    spacing_t = _as_spacing(spacing)
    p, g = as_mask_pair(pred, gt)
    unit = "voxel" if spacing_t is None else "mm"
    if not p.any():
        return {"hd95_max_dir": math.nan, "assd": math.nan, "unit": unit}
    d_pg, d_gp = _surface_distances(p, g, spacing_t)
    hd95_max_dir = max(float(np.percentile(d_pg, 95)), float(np.percentile(d_gp, 95)))
    assd = float(np.concatenate((d_pg, d_gp)).mean())
    return {"hd95_max_dir": hd95_max_dir, "assd": assd, "unit": unit}
