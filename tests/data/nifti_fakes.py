"""Small datasets in the Medical Segmentation Decathlon (MSD) and nnU-Net v2 raw layouts, and the faults the `nifti`
source must refuse (tests/data/test_nifti.py; the workflow tests use `write_msd` and `write_nnunet`).

Each case is drawn in RAS+ (`canonical_case`): an anisotropic grid (1.0 × 1.2 × 2.0/2.5/3.0 mm, z varying with the
case), label 1 (the foreground the tests configure) an ellipsoid, label 2 (another structure) a sphere beside it, with
MR-like (float, ~100-300) or CT-like (int16 HU, -1000..1500) intensities. The files store it in the orientation
`STORED_AXCODES` (axes permuted and flipped), as a scanner export would, so the source must reorient it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

MSD_NAME, NNUNET_NAME = "Task99_Fake", "Dataset999_Fake"
STORED_AXCODES = ("L", "S", "P")  # file axis 0 → left, 1 → superior, 2 → posterior
LABELS = {0: "background", 1: "target", 2: "other"}
TEST_IMAGE_ID = "fake_900"  # the one image of imagesTs/ (no label): never a case


def case_id(index: int) -> str:
    """The ID of case `index`: fake_000, fake_001, ..."""
    return f"fake_{index:03d}"


def case_geometry(index: int) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """(shape, spacing mm) of case `index` in RAS+ order; 24-36 voxels per side, so a 16³ patch fits."""
    shape = (28 + 2 * (index % 5), 24 + 2 * (index % 4), 20 + index % 3)
    return shape, (1.0, 1.2, (2.0, 2.5, 3.0)[index % 3])


def _affine(index: int, shape: tuple[int, ...], spacing: tuple[float, ...]) -> np.ndarray:
    """RAS+ affine of case `index`: the given spacing, the volume centred near (5 × index, 0, 0) mm."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) / 2 * np.array(spacing) + [5.0 * index, 0.0, 0.0]
    return affine


def canonical_case(
    index: int, *, modality: str = "mri", seed: int = 0, channels: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (x, y, z) or (x, y, z, c), label uint8 (x, y, z), RAS+ affine) of case `index`.

    Label 1: an ellipsoid (radii 7, 7, 9 mm) left of the centre; label 2: a sphere (4 mm) right of it.
    MRI: float32, background ~100, label 1 ~300, label 2 ~200 (noise per channel). CT: int16 HU, soft tissue ~40,
    label 1 ~120, label 2 bone-like 1200-1500, air (-1000) in a slab at the left border.
    """
    shape, spacing = case_geometry(index)
    rng = np.random.default_rng([seed, index])
    mm = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    shift = rng.uniform(-1.5, 1.5, size=3)
    target = ((mm[0] + 3 - shift[0]) / 7) ** 2 + ((mm[1] - shift[1]) / 7) ** 2 + ((mm[2] - shift[2]) / 9) ** 2 <= 1
    other = (mm[0] - 9) ** 2 + mm[1] ** 2 + mm[2] ** 2 <= 16
    label = np.where(target, 1, np.where(other, 2, 0)).astype(np.uint8)
    if modality == "ct":
        hu = rng.normal(40, 15, shape) + 80 * target + np.where(other, rng.uniform(1160, 1460, shape), 0)
        hu[mm[0] < -12] = -1000
        return np.clip(np.round(hu), -1024, 3000).astype(np.int16), label, _affine(index, shape, spacing)
    images = [rng.normal(100, 10, shape) + 200 * target + 100 * other for _ in range(channels)]
    image = images[0] if channels == 1 else np.stack(images, axis=-1)
    return image.astype(np.float32), label, _affine(index, shape, spacing)


def _save(array: np.ndarray, affine: np.ndarray, path: Path, axcodes: tuple[str, str, str]) -> None:
    """Save a RAS+ array as NIfTI with its axes stored in the orientation `axcodes`."""
    image = nib.Nifti1Image(array, affine)
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(axcodes)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image.as_reoriented(transform), path)


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def write_msd(
    root: Path,
    n_cases: int = 8,
    *,
    modality: str = "mri",
    seed: int = 0,
    channels: int = 1,
    axcodes: tuple[str, str, str] = STORED_AXCODES,
) -> Path:
    """An MSD dataset `<root>/Task99_Fake` (dataset.json, imagesTr/, labelsTr/, imagesTs/ with one unlabeled image).

    Args:
        root: the parent folder.
        n_cases: labeled cases fake_000 ... (8: 6 train + 2 test with the default split).
        modality: `mri` or `ct` intensities.
        seed: the data's seed.
        channels: > 1 writes 4D images (channels on the 4th axis) and lists them in `modality`.
        axcodes: the orientation of the stored arrays (("R", "A", "S") = canonical).

    Returns:
        The dataset folder.
    """
    ds = Path(root) / MSD_NAME
    training = []
    for index in range(n_cases):
        image, label, affine = canonical_case(index, modality=modality, seed=seed, channels=channels)
        name = f"{case_id(index)}.nii.gz"
        _save(image, affine, ds / "imagesTr" / name, axcodes)
        _save(label, affine, ds / "labelsTr" / name, axcodes)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    image, _, affine = canonical_case(99, modality=modality, seed=seed, channels=channels)
    _save(image, affine, ds / "imagesTs" / f"{TEST_IMAGE_ID}.nii.gz", axcodes)
    names = {str(c): f"{modality.upper()}{c}" for c in range(channels)} if channels > 1 else {"0": modality.upper()}
    _write_json(
        ds / "dataset.json",
        {
            "name": "Fake",
            "description": "test fake",
            "tensorImageSize": "4D" if channels > 1 else "3D",
            "modality": names,
            "labels": {str(k): v for k, v in LABELS.items()},
            "numTraining": n_cases,
            "numTest": 1,
            "training": training,
            "test": [f"./imagesTs/{TEST_IMAGE_ID}.nii.gz"],
        },
    )
    return ds


def write_nnunet(
    root: Path,
    n_cases: int = 8,
    *,
    modality: str = "ct",
    seed: int = 0,
    channels: int = 1,
    axcodes: tuple[str, str, str] = STORED_AXCODES,
) -> Path:
    """An nnU-Net v2 raw dataset `<root>/Dataset999_Fake` (one `imagesTr/<case>_<XXXX>.nii.gz` per channel).

    Arguments as `write_msd`; channel c > 0 is an MR-like image with its own noise (for `ct`, the HU image plus noise).

    Returns:
        The dataset folder.
    """
    ds = Path(root) / NNUNET_NAME
    for index in [*range(n_cases), 99]:
        image, label, affine = canonical_case(index, modality=modality, seed=seed, channels=1)
        cid = case_id(index) if index != 99 else TEST_IMAGE_ID
        folder = "imagesTr" if index != 99 else "imagesTs"
        for channel in range(channels):
            noise = np.random.default_rng([seed, index, channel]).normal(0, 20, image.shape) if channel else 0
            _save((image + noise).astype(image.dtype), affine, ds / folder / f"{cid}_{channel:04d}.nii.gz", axcodes)
        if index != 99:
            _save(label, affine, ds / "labelsTr" / f"{cid}.nii.gz", axcodes)
    names = {str(c): modality.upper() if c == 0 else f"MR{c}" for c in range(channels)}
    _write_json(
        ds / "dataset.json",
        {
            "channel_names": names,
            "labels": {v: k for k, v in LABELS.items()},
            "numTraining": n_cases,
            "file_ending": ".nii.gz",
        },
    )
    return ds


# -- faults ----------------------------------------------------------------------------------------------------------
def is_nnunet(ds: Path) -> bool:
    """True for a dataset written by `write_nnunet`."""
    return "file_ending" in json.loads((ds / "dataset.json").read_text())


def case_files(ds: Path, cid: str, channel: int = 0) -> tuple[Path, Path]:
    """(image file, label file) of a case of either layout."""
    if is_nnunet(ds):
        return ds / "imagesTr" / f"{cid}_{channel:04d}.nii.gz", ds / "labelsTr" / f"{cid}.nii.gz"
    return ds / "imagesTr" / f"{cid}.nii.gz", ds / "labelsTr" / f"{cid}.nii.gz"


def _rewrite(path: Path, edit: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> Path:
    """Replace a NIfTI file by `edit(array, affine)` → (array, affine), arrays in the file's own axis order."""
    image = nib.load(path)
    array, affine = edit(np.asanyarray(image.dataobj), image.affine.copy())
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def fault_shape(ds: Path, cid: str) -> Path:
    """The label loses its last slice along the file's first axis (image and label differ in shape)."""
    return _rewrite(case_files(ds, cid)[1], lambda a, aff: (a[:-1], aff))


def fault_affine(ds: Path, cid: str, shift_mm: float = 2.0) -> Path:
    """The label's origin moves by `shift_mm` along x (same shape, different affine)."""

    def shift(a: np.ndarray, aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        aff[0, 3] += shift_mm
        return a, aff

    return _rewrite(case_files(ds, cid)[1], shift)


def fault_4d(ds: Path, cid: str, n_channels: int = 2) -> Path:
    """The image becomes 4D with `n_channels` channels on its 4th axis (dataset.json unchanged)."""
    return _rewrite(case_files(ds, cid)[0], lambda a, aff: (np.stack([a] * n_channels, axis=-1), aff))


def fault_nan(ds: Path, cid: str) -> Path:
    """One image voxel becomes NaN (the image is stored as float32)."""

    def nan(a: np.ndarray, aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = a.astype(np.float32)
        a[1, 2, 3] = np.nan
        return a, aff

    return _rewrite(case_files(ds, cid)[0], nan)


def fault_label_value(ds: Path, cid: str, value: int = 7) -> Path:
    """One label voxel gets `value`, which dataset.json's labels do not declare."""

    def stray(a: np.ndarray, aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = a.copy()
        a[0, 0, 0] = value
        return a, aff

    return _rewrite(case_files(ds, cid)[1], stray)


def fault_empty_foreground(ds: Path, cid: str, foreground: int = 1) -> Path:
    """The label loses every voxel of `foreground` (the other label value stays)."""
    return _rewrite(case_files(ds, cid)[1], lambda a, aff: (np.where(a == foreground, 0, a).astype(a.dtype), aff))


def fault_missing_file(ds: Path, cid: str) -> Path:
    """The case's image file is deleted (its dataset.json entry / label then points to nothing)."""
    image = case_files(ds, cid)[0]
    image.unlink()
    return image


def fault_duplicate(ds: Path, cid: str) -> Path:
    """MSD: a second training entry with the same image file name (in another folder)."""
    meta = json.loads((ds / "dataset.json").read_text())
    image, label = case_files(ds, cid)
    (ds / "copy").mkdir(exist_ok=True)
    shutil.copy(image, ds / "copy" / image.name)
    meta["training"].append({"image": f"./copy/{image.name}", "label": f"./labelsTr/{label.name}"})
    _write_json(ds / "dataset.json", meta)
    return ds / "dataset.json"


def fault_unsafe_id(ds: Path, cid: str, new_id: str = "fake.bad") -> Path:
    """The case's files are renamed so that its ID holds a dot (not a safe case ID); dataset.json follows."""
    image, label = case_files(ds, cid)
    new_image = image.with_name(image.name.replace(cid, new_id))
    image.rename(new_image)
    label.rename(label.with_name(label.name.replace(cid, new_id)))
    if not is_nnunet(ds):
        text = (ds / "dataset.json").read_text().replace(f"/{cid}.nii.gz", f"/{new_id}.nii.gz")
        (ds / "dataset.json").write_text(text)
    return new_image
