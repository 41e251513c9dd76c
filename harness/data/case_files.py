"""Files of one prepared case, shared by the sources that write case files (`synthetic`, `la`, `pancreas`, `nifti`).

* `write_h5`: an h5 case file (gzip `image` and `label` as given, optional attributes), written atomically.
* `write_case_h5`: the case h5 (gzip `image` float32 and `label`, both (x, y, z), attribute `spacing` (x, y, z) mm),
  written to a temporary name and renamed, so a crash never leaves a half-written case file.
* `write_overlay`: the QA PNG, the label contour over the image's central label slice, for a visual alignment check.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from harness.io import atomic_path


def write_case_h5(
    path: str | Path, image: np.ndarray, label: np.ndarray, spacing: tuple[float, ...], *, label_dtype: type
) -> Path:
    """Write a case h5 atomically: gzip `image` float32, gzip `label` of `label_dtype`, attribute `spacing` (mm).

    Args:
        path: the case file; its folder is created.
        image: the image (x, y, z).
        label: the label (x, y, z) with values {0, 1}.
        spacing: voxel size (x, y, z) in mm.
        label_dtype: the stored label type (MC-Net's Pancreas files: float32; `case_h5`: uint8).
    """
    spacing_attr = {"spacing": np.asarray(spacing, dtype=np.float64)}
    return write_h5(path, image.astype(np.float32), label.astype(label_dtype), attrs=spacing_attr)


def write_h5(path: str | Path, image: np.ndarray, label: np.ndarray, attrs: dict | None = None) -> Path:
    """An h5 case file as every source writes it: gzip datasets `image` and `label` (as given), then `attrs`,
    written atomically (`harness.io`)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("image", data=image, compression="gzip")
        f.create_dataset("label", data=label, compression="gzip")
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return Path(path)


def central_label_slice(label: np.ndarray) -> int:
    """The z index at the mean of the slices holding label voxels; the middle slice if the label is empty."""
    slices = np.flatnonzero(label.any(axis=(0, 1)))
    return int(slices.mean()) if slices.size else label.shape[2] // 2


def write_overlay(path: str | Path, image: np.ndarray, label: np.ndarray, title: str) -> Path:
    """PNG of the central label slice (z) of `image` (x, y, z) with the contour of `label`, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = central_label_slice(label)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(image[:, :, z].T, cmap="gray")
    if label[:, :, z].any():
        ax.contour(label[:, :, z].T, levels=[0.5], colors="r", linewidths=0.8)
    ax.set_title(f"{title} z={z}", fontsize=8)
    ax.axis("off")
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
    finally:
        plt.close(fig)
    return Path(path)
