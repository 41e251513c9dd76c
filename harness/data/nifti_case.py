"""One case of a `nifti` dataset, read and made uniform: reoriented to RAS+, the image/label pair checked, resampled
to the target spacing and normalised (MRI per case, CT with the dataset's statistics, nnU-Net's rule).

Resampling uses SimpleITK: it resamples in physical space with the image's origin and direction, is multithreaded and
is already a dependency (Pancreas-CT); the image is interpolated linearly, the label by nearest neighbour.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.download import DataError
from harness.data.nifti_layout import NiftiSettings, SourceCase

MIN_SIDE = 16
#: CT statistics: foreground voxels sampled per training case (at most), the percentiles clipped to, the sampling seed.
CT_SAMPLES_PER_CASE = 10_000
CT_SAMPLES_PER_CASE = 10_000
CT_PERCENTILES = (0.5, 99.5)
CT_PERCENTILES = (0.5, 99.5)
CT_SAMPLE_SEED = 0
CT_SAMPLE_SEED = 0
#: Label values named in an error message, at most.
SHOWN_VALUES = 10
#: Largest difference (mm) between corresponding entries of an image's and its label's affine.
AFFINE_TOL = 1e-3
AFFINE_TOL = 1e-3
#: A case whose spacing is within this relative tolerance of the target is not resampled.
SPACING_RTOL = 1e-6
SPACING_RTOL = 1e-6
#: Header spacings are rounded to 1 µm in the plan (NIfTI stores float32: 1.2 is read as 1.2000000476837158).
SPACING_DECIMALS = 6


# -- reading one case ------------------------------------------------------------------------------------------------
def _voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """The voxel size (mm) of each array axis: the lengths of the affine's columns."""
    return np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))


def _channel_index(shape: tuple[int, ...], case: SourceCase, settings: NiftiSettings, layout: str) -> tuple:
    """The index beyond (x, y, z) that selects the image volume to read: () for 3D, (c,) for channel c of a 4D image.

    Trailing axes of length 1 are dropped. A 4D image with several channels needs `channel` (MSD); nnU-Net keeps one
    channel per file, so there it is refused.
    """
    extra = shape[3:]
    if len(shape) < 3:
        raise DataError(f"case {case.case_id}: {case.image} has shape {shape}; a 3D image is needed")
    if all(n == 1 for n in extra):
        if settings.channel and layout == "msd":
            raise DataError(
                f"case {case.case_id}: {case.image} has one channel (shape {shape}), but nifti.channel = "
                f"{settings.channel}; set nifti.channel to 0 or null"
            )
        return (0,) * len(extra)
    if len(extra) > 1 or layout == "nnunet":
        raise DataError(
            f"case {case.case_id}: {case.image} has shape {shape}; the {layout} layout stores 3D images"
            + (" (one file per channel: _0000, _0001, ...)" if layout == "nnunet" else "")
        )
    if settings.channel is None:
        raise DataError(
            f"case {case.case_id}: {case.image} is 4D with {extra[0]} channels on its 4th axis (shape {shape}); set "
            f"nifti.channel to the index (0..{extra[0] - 1}) of the channel to use"
        )
    if settings.channel >= extra[0]:
        raise DataError(
            f"case {case.case_id}: nifti.channel = {settings.channel}, but {case.image} has {extra[0]} "
            f"channels (shape {shape})"
        )
    return (settings.channel,)


def _label_index(shape: tuple[int, ...], case: SourceCase) -> tuple:
    """The index beyond (x, y, z) of a label: () for 3D, zeros for trailing axes of length 1; DataError otherwise."""
    if len(shape) < 3 or any(n != 1 for n in shape[3:]):
        raise DataError(f"case {case.case_id}: the label {case.label} has shape {shape}; a 3D label map is needed")
    return (0,) * (len(shape) - 3)


def _check_pair(image: Any, label: Any, case: SourceCase) -> None:
    """DataError naming both files and the fix when the 3D image and label differ in shape or affine."""
    fix = (
        "the label must be saved on the image's voxel grid (same shape and affine): re-export it from the image, "
        "or remove the case from the dataset"
    )
    if tuple(image.shape) != tuple(label.shape):
        raise DataError(
            f"case {case.case_id}: image {case.image} has shape {tuple(image.shape)}, label {case.label} "
            f"has shape {tuple(label.shape)}; {fix}"
        )
    diff = float(np.abs(np.asarray(image.affine) - np.asarray(label.affine)).max())
    if diff > AFFINE_TOL:
        raise DataError(
            f"case {case.case_id}: the affines of image {case.image} and label {case.label} differ by up to "
            f"{diff:.4g} mm (tolerance {AFFINE_TOL} mm; image spacing "
            f"{np.round(_voxel_sizes(image.affine), 4).tolist()}, origin {np.round(image.affine[:3, 3], 3).tolist()}; "
            f"label spacing {np.round(_voxel_sizes(label.affine), 4).tolist()}, origin "
            f"{np.round(label.affine[:3, 3], 3).tolist()}); {fix}"
        )


def _load(path: Path, case: SourceCase) -> Any:
    """The NIfTI image at `path` (header read, data not yet); DataError naming the case and file if unreadable."""
    import nibabel as nib

    try:
        return nib.load(path)
    except Exception as err:  # nibabel raises several types for a missing, damaged or non-NIfTI file
        raise DataError(f"case {case.case_id}: cannot read {path} ({err}); restore the file") from err


def _open_pair(case: SourceCase, settings: NiftiSettings, layout: str) -> tuple[Any, Any, tuple[int, ...]]:
    """(3D image, 3D label, the image file's shape) as nibabel images, checked for equal shape and affine.

    The data are not read beyond what selecting a channel needs.
    """
    image, label = _load(case.image, case), _load(case.label, case)
    source_shape = tuple(int(n) for n in image.shape)
    extra = _channel_index(source_shape, case, settings, layout)
    if extra:
        image = image.slicer[(slice(None),) * 3 + extra]
    extra = _label_index(tuple(label.shape), case)
    if extra:
        label = label.slicer[(slice(None),) * 3 + extra]
    _check_pair(image, label, case)
    return image, label, source_shape


def read_header(case: SourceCase, settings: NiftiSettings, layout: str) -> dict[str, Any]:
    """The case's shape and voxel size (mm, `SPACING_DECIMALS`) in RAS+ order, and the files' orientation, from the
    headers only (no voxel data is read, except to pick the channel of a 4D image).

    Also checks what the headers tell: the channel rule, equal shape and affine of image and label.
    """
    import nibabel as nib

    image, _, _ = _open_pair(case, settings, layout)
    ornt = nib.orientations.io_orientation(image.affine)
    shape, spacing = [0, 0, 0], [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt):
        shape[int(target)] = int(image.shape[axis])
        spacing[int(target)] = round(float(_voxel_sizes(image.affine)[axis]), SPACING_DECIMALS)
    return {"shape": shape, "spacing": spacing, "orientation": "".join(nib.aff2axcodes(image.affine))}


@dataclass(frozen=True)
class CaseArrays:
    """One case read from its NIfTI files and reoriented to the closest canonical orientation (RAS+).

    Attributes:
        image: float32 (x, y, z).
        label: the label file's values (x, y, z).
        affine: the RAS+ affine (voxel index → mm) of both.
        orientation: the files' axis codes before reorientation, e.g. "LPS".
        source_shape: the image file's shape (a 4D image included).
        label_values: the values the label file holds.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    orientation: str
    source_shape: tuple[int, ...]
    label_values: tuple[float | int, ...]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (x, y, z) in mm."""
        return tuple(float(v) for v in _voxel_sizes(self.affine))


def read_case(case: SourceCase, settings: NiftiSettings, layout: str, allowed: Sequence[int]) -> CaseArrays:
    """Read a case's image (the configured channel) and label, reoriented with `nibabel.as_closest_canonical`.

    Args:
        case: the source files.
        settings: the nifti settings (channel).
        layout: `msd` or `nnunet`.
        allowed: the label values dataset.json declares.

    Raises:
        DataError: image and label differ in shape or affine; a multi-channel image without `channel`; non-finite
            image values; label values outside `allowed`. Each message names the case and the file.
    """
    import nibabel as nib

    image, label, source_shape = _open_pair(case, settings, layout)
    orientation = "".join(nib.aff2axcodes(image.affine))
    image, label = nib.as_closest_canonical(image), nib.as_closest_canonical(label)
    pixels = image.get_fdata(dtype=np.float32)
    bad = int(np.size(pixels) - np.count_nonzero(np.isfinite(pixels)))
    if bad:
        raise DataError(
            f"case {case.case_id}: {case.image} holds {bad} non-finite voxel values (NaN or Inf); "
            "correct the image or remove the case from the dataset"
        )
    labels = np.asanyarray(label.dataobj)
    found = np.unique(labels)
    stray = [v for v in found.tolist() if v not in set(allowed)]
    if stray:
        raise DataError(
            f"case {case.case_id}: the label {case.label} holds values {stray[:SHOWN_VALUES]} that dataset.json's "
            f"'labels' does not declare ({list(allowed)}); correct the label file or dataset.json"
        )
    return CaseArrays(pixels, labels, np.asarray(image.affine, float), orientation, source_shape, tuple(found.tolist()))


# -- resampling and normalisation ------------------------------------------------------------------------------------
def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, int, int]:
    """Size per axis after resampling: `round(size × spacing / target)`, at least 1 (the field of view is kept)."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))


def resample(array: np.ndarray, affine: np.ndarray, target: Sequence[float], *, is_label: bool) -> np.ndarray:
    """Resample a RAS+ array (x, y, z) to the `target` spacing: linear (image) or nearest neighbour (label).

    SimpleITK resamples in physical space: the image carries the affine's origin and direction (converted from RAS to
    ITK's LPS), the output grid has the same direction, the target spacing and `resampled_shape`, and is centred on
    the input's field of view. It is multithreaded and already a dependency. Within `SPACING_RTOL` of the target the
    array is returned unchanged.
    """
    import SimpleITK as sitk

    spacing = _voxel_sizes(affine)
    if np.allclose(spacing, target, rtol=SPACING_RTOL, atol=0):
        return array
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    direction = ras_to_lps @ np.asarray(affine, float)[:3, :3] / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin((ras_to_lps @ np.asarray(affine, float)[:3, 3]).tolist())
    image.SetDirection(direction.ravel().tolist())
    size = np.array(resampled_shape(array.shape, spacing, target))
    target = np.asarray(target, float)
    # first output voxel centre, in mm along each axis from the first input voxel centre (both grids centred)
    start = -spacing / 2 + (np.array(array.shape) * spacing - size * target) / 2 + target / 2
    f = sitk.ResampleImageFilter()
    f.SetSize([int(n) for n in size])
    f.SetOutputSpacing(target.tolist())
    f.SetOutputOrigin((np.array(image.GetOrigin()) + direction @ start).tolist())
    f.SetOutputDirection(image.GetDirection())
    f.SetTransform(sitk.Transform())
    f.SetDefaultPixelValue(0)
    f.SetInterpolator(sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear)
    return np.ascontiguousarray(sitk.GetArrayFromImage(f.Execute(image)).transpose(2, 1, 0))


def normalise(image: np.ndarray, normalisation: Mapping[str, Any], what: str) -> np.ndarray:
    """z-score per case (`zscore_per_case`) or clip + z-score with the dataset's CT statistics (`ct_dataset`); float32.

    Raises:
        DataError: a constant image (its z-score is undefined), named by `what`.
    """
    if normalisation["scheme"] == "ct_dataset":
        lo, hi = normalisation["clip"]
        return ((np.clip(image, lo, hi) - normalisation["mean"]) / normalisation["std"]).astype(np.float32)
    mean, std = float(image.mean(dtype=np.float64)), float(image.std(dtype=np.float64))
    if std == 0:
        raise DataError(f"{what}: the image is constant ({mean}); a z-score is undefined; remove the case")
    return ((image - mean) / std).astype(np.float32)


def sample_foreground(values: np.ndarray, case_id: str, cap: int = CT_SAMPLES_PER_CASE) -> np.ndarray:
    """Up to `cap` of a case's foreground intensities, drawn without replacement by a generator seeded with
    `CT_SAMPLE_SEED` and the case ID (so a case's sample does not depend on the other cases)."""
    values = np.asarray(values, np.float64).ravel()
    if values.size <= cap:
        return values
    digest = int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "little")
    rng = np.random.default_rng([CT_SAMPLE_SEED, digest])
    return values[np.sort(rng.choice(values.size, size=cap, replace=False))]


def ct_statistics(samples: Sequence[np.ndarray]) -> dict[str, Any]:
    """The CT normalisation of the sampled foreground intensities: the 0.5 and 99.5 percentiles (`clip`) and the
    mean and std of the values clipped to them."""
    values = np.concatenate([np.asarray(s, np.float64).ravel() for s in samples])
    lo, hi = (float(v) for v in np.percentile(values, CT_PERCENTILES))
    clipped = np.clip(values, lo, hi)
    mean, std = float(clipped.mean()), float(clipped.std())
    if std == 0:
        raise DataError(
            f"the training cases' foreground intensities are constant ({mean}); the CT normalisation is "
            "undefined: check the images, or use modality: mri"
        )
    return {
        "scheme": "ct_dataset",
        "percentiles": list(CT_PERCENTILES),
        "clip": [lo, hi],
        "mean": mean,
        "std": std,
        "samples_per_case": CT_SAMPLES_PER_CASE,
        "n_samples": int(values.size),
    }
