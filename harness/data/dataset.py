"""Case loading (re-exported from harness.data.prepared), augmentation, the batch plan (two-stream sampler) and the
patch dataset.

Sources: docs/protocol.md §1.3 (file layout), §3.1 (batch composition, two-stream sampler, leakage guard), §3.2
(augmentation), §3.5 (worker seeding).

Randomness is explicit: the batch plan of a run is drawn from `np.random.default_rng([seed, 0, 0, PLAN_STREAM])`,
and the augmentation of the sample at batch position `slot` of iteration `it` from
`np.random.default_rng([seed, it, slot])`. So a batch depends neither on the number of loader workers nor on
whether the run was resumed, and the global numpy state is never used.

A sample key is the tuple `(it, slot, kind, index)`: `kind` is "l" (index into the labeled cases) or "u" (index
into the unlabeled cases). Unlabeled cases are held as images only, so their labels never enter memory.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

# Case paths and h5 parsing live in the torch-free harness.data.prepared; re-exported here for existing imports.
from harness.data.prepared import (  # noqa: F401
    H5_NAME,
    PANCREAS_DIR,
    PANCREAS_SUFFIX,
    TRAINING_DIR,
    case_path,
    la_case_path,
    load_case,
    pancreas_case_path,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """One training batch.

    Attributes:
        x: images `[B, 1, X, Y, Z]` float32, labeled samples first.
        y: labels of the labeled samples `[n_labeled, X, Y, Z]` int64 in {0, 1}.
        n_labeled: how many of the B samples are labeled (positions 0 .. n_labeled - 1).
        extras: per-batch tensors that a method asked the data pipeline for (e.g. "sdf" `[n_labeled, X, Y, Z]`, or
            "case_id" `[B]` int64 when the method sets `needs_case_id`).
    """

    x: torch.Tensor
    y: torch.Tensor
    n_labeled: int
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(
        self,
        device: torch.device,
        *,
        non_blocking: bool = False,
        memory_format: torch.memory_format = torch.preserve_format,
    ) -> Batch:
        """The same batch on `device`; `x` in `memory_format` (`torch.channels_last_3d` for `protocol.channels_last`).
        `non_blocking` copies overlap with the GPU when the batch is pinned (`pin_memory`)."""
        extras = {k: v.to(device, non_blocking=non_blocking) for k, v in self.extras.items()}
        x = self.x.to(device, non_blocking=non_blocking, memory_format=memory_format)
        y = self.y.to(device, non_blocking=non_blocking)
        return Batch(x=x, y=y, n_labeled=self.n_labeled, extras=extras)

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (what `DataLoader(pin_memory=True)` calls on each batch; CUDA only)."""
        extras = {k: v.pin_memory() for k, v in self.extras.items()}
        return Batch(x=self.x.pin_memory(), y=self.y.pin_memory(), n_labeled=self.n_labeled, extras=extras)

    @property
    def x_l(self) -> torch.Tensor:
        return self.x[: self.n_labeled]

    @property
    def x_u(self) -> torch.Tensor:
        return self.x[self.n_labeled :]


#: Fourth seed word of the batch-plan generator. NumPy's SeedSequence ignores trailing zeros, so a plan seeded with
#: `seed` alone would replay the augmentation stream of sample (it=0, slot=0); a non-zero fourth word keeps them apart.
PLAN_STREAM = 1

AUGMENT_MODES = ("rotflip_crop", "crop")

Key = tuple[int, int, str, int]
LabelTransform = Callable[[np.ndarray], np.ndarray]


# -- augmentation (docs/protocol.md §3.2) ----------------------------------------------------------------------------
def _check_pair(image: np.ndarray, label: np.ndarray | None) -> None:
    if image.ndim != 3:
        raise ValueError(f"image must be 3D (x, y, z); got shape {image.shape}")
    if label is not None and label.shape != image.shape:
        raise ValueError(f"label shape {label.shape} must equal image shape {image.shape}")


def random_rot_flip(
    image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rotate by k·90° in the x–y plane (k = rng.integers(0, 4)), then flip along x or y (rng.integers(0, 2)).

    A flip always happens, so the output is one of the four in-plane reflections; z is never touched.

    Args:
        image: (X, Y, Z).
        label: (X, Y, Z) or None.
        rng: the generator; two draws.

    Returns:
        (image, label) as contiguous copies; X and Y swap when k is odd.
    """
    _check_pair(image, label)
    k = int(rng.integers(0, 4))
    axis = int(rng.integers(0, 2))

    def apply(a: np.ndarray) -> np.ndarray:
        return np.flip(np.rot90(a, k, axes=(0, 1)), axis=axis).copy()

    return apply(image), None if label is None else apply(label)


def _check_patch(patch_size: tuple[int, ...]) -> tuple[int, int, int]:
    if len(patch_size) != 3 or any(int(p) < 1 for p in patch_size):
        raise ValueError(f"patch_size must be 3 positive sizes (x, y, z); got {patch_size}")
    return int(patch_size[0]), int(patch_size[1]), int(patch_size[2])


def random_crop(
    image: np.ndarray, label: np.ndarray | None, patch_size: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Random patch, with zero padding when the volume is not larger than the patch.

    If any size is <= its patch size, each axis is zero-padded on both sides by max((patch − size) // 2 + 3, 0)
    (label padded with 0). Offsets are then drawn per axis, in order x, y, z, as rng.integers(0, size − patch): the
    upper bound size − patch is exclusive, as in the reference code.

    Args:
        image: (X, Y, Z).
        label: (X, Y, Z) or None.
        patch_size: (px, py, pz).
        rng: the generator; three draws.

    Returns:
        (image, label) patches of shape patch_size, contiguous copies.
    """
    _check_pair(image, label)
    patch = _check_patch(patch_size)
    if any(s <= p for s, p in zip(image.shape, patch, strict=True)):
        pad = [(m, m) for m in (max((p - s) // 2 + 3, 0) for s, p in zip(image.shape, patch, strict=True))]
        image = np.pad(image, pad, mode="constant", constant_values=0)
        label = None if label is None else np.pad(label, pad, mode="constant", constant_values=0)
    offs = [int(rng.integers(0, s - p)) for s, p in zip(image.shape, patch, strict=True)]
    window = tuple(slice(o, o + p) for o, p in zip(offs, patch, strict=True))
    return image[window].copy(), None if label is None else label[window].copy()


def augment(
    image: np.ndarray,
    label: np.ndarray | None,
    patch_size: tuple[int, int, int],
    mode: str,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Training augmentation: "rotflip_crop" (LA: RandomRotFlip → RandomCrop) or "crop" (Pancreas: RandomCrop).

    Returns:
        (image, label) patches of shape patch_size; label None if it was None.
    """
    if mode == "rotflip_crop":
        image, label = random_rot_flip(image, label, rng)
    elif mode != "crop":
        raise ValueError(f"augment mode must be one of {AUGMENT_MODES}; got {mode!r}")
    return random_crop(image, label, patch_size, rng)


# -- samplers (docs/protocol.md §3.1) --------------------------------------------------------------------------------
# The public functions validate their arguments eagerly and return generators.
def _permutation_chain(n: int, rng: np.random.Generator) -> Iterator[int]:
    """Endless chain of fresh permutations of range(n), drawn lazily (one permutation when the previous runs out)."""
    while True:
        yield from (int(i) for i in rng.permutation(n))


def _two_stream(
    n_labeled: int, n_unlabeled: int, labeled_bs: int, unlabeled_bs: int, rng: np.random.Generator
) -> Iterator[tuple[list[int], list[int]]]:
    while True:
        perm = [int(i) for i in rng.permutation(n_labeled)]
        chain = _permutation_chain(n_unlabeled, rng)
        for b in range(n_labeled // labeled_bs):
            yield perm[b * labeled_bs : (b + 1) * labeled_bs], [next(chain) for _ in range(unlabeled_bs)]


def two_stream_batches(
    n_labeled: int, n_unlabeled: int, labeled_bs: int, unlabeled_bs: int, rng: np.random.Generator
) -> Iterator[tuple[list[int], list[int]]]:
    """Endless (labeled indices, unlabeled indices) batches, UA-MT `TwoStreamBatchSampler` semantics.

    An epoch is one permutation of range(n_labeled) consumed `labeled_bs` at a time (incomplete trailing group
    dropped, so n_labeled // labeled_bs batches per epoch). Unlabeled indices come from a chain of fresh permutations
    of range(n_unlabeled), `unlabeled_bs` per batch; the chain is recreated at the start of every epoch.
    Draw order: the labeled permutation of an epoch, then unlabeled permutations lazily as they are needed.
    """
    if labeled_bs < 1 or n_labeled < labeled_bs:
        raise ValueError(f"need 1 <= labeled_bs <= n_labeled; got labeled_bs={labeled_bs}, n_labeled={n_labeled}")
    if unlabeled_bs < 0 or (unlabeled_bs > 0 and n_unlabeled < 1):
        raise ValueError(
            f"need unlabeled_bs >= 0 and n_unlabeled >= 1 when unlabeled_bs > 0; "
            f"got unlabeled_bs={unlabeled_bs}, n_unlabeled={n_unlabeled}"
        )
    return _two_stream(n_labeled, n_unlabeled, labeled_bs, unlabeled_bs, rng)


def _labeled_only(n_labeled: int, batch_size: int, rng: np.random.Generator) -> Iterator[list[int]]:
    chain = _permutation_chain(n_labeled, rng)
    while True:
        yield [next(chain) for _ in range(batch_size)]


def labeled_only_batches(n_labeled: int, batch_size: int, rng: np.random.Generator) -> Iterator[list[int]]:
    """Endless batches of `batch_size` labeled indices from a chain of permutations of range(n_labeled).

    Batches cross permutation boundaries, so every batch is full (docs/protocol.md §3.1 [H]).
    """
    if n_labeled < 1 or batch_size < 1:
        raise ValueError(f"need n_labeled >= 1 and batch_size >= 1; got n_labeled={n_labeled}, batch_size={batch_size}")
    return _labeled_only(n_labeled, batch_size, rng)


def _plan_keys(stream: Iterator[tuple[list[int], list[int]]], start_it: int, max_it: int) -> Iterator[list[Key]]:
    for it in range(max_it):
        lab, unl = next(stream)
        if it < start_it:
            continue
        keys = [(it, s, "l", i) for s, i in enumerate(lab)]
        yield keys + [(it, len(lab) + s, "u", i) for s, i in enumerate(unl)]


def batch_plan(
    n_labeled: int, n_unlabeled: int, labeled_bs: int, unlabeled_bs: int, seed: int, start_it: int, max_it: int
) -> Iterator[list[Key]]:
    """Sample keys of iterations start_it .. max_it − 1, drawn from np.random.default_rng([seed, 0, 0, PLAN_STREAM]).

    Each yielded list holds the labeled keys first, then the unlabeled ones; a key is (it, slot, kind, index) with
    slot the batch position and kind "l" or "u". With unlabeled_bs == 0, batches come from `labeled_only_batches`
    (batch size labeled_bs), else from `two_stream_batches`. Iterations before start_it are drawn and skipped, so a
    resumed plan equals the tail of an uninterrupted one.
    """
    if not 0 <= start_it <= max_it:
        raise ValueError(f"need 0 <= start_it <= max_it; got start_it={start_it}, max_it={max_it}")
    rng = np.random.default_rng([seed, 0, 0, PLAN_STREAM])
    if unlabeled_bs == 0:
        only = labeled_only_batches(n_labeled, labeled_bs, rng)
        stream: Iterator[tuple[list[int], list[int]]] = ((b, []) for b in only)
    else:
        stream = two_stream_batches(n_labeled, n_unlabeled, labeled_bs, unlabeled_bs, rng)
    return _plan_keys(stream, start_it, max_it)


def _stage_keys(batches: Iterator[list[int]], kind: str, views: int, start_it: int, max_it: int) -> Iterator[list[Key]]:
    for it in range(max_it):
        volumes = next(batches)
        if it < start_it:
            continue
        yield [(it, v * len(volumes) + j, kind, i) for v in range(views) for j, i in enumerate(volumes)]


def stage_plan(
    n_cases: int, kind: str, batch_volumes: int, views: int, seed: int, start_it: int, max_it: int
) -> Iterator[list[Key]]:
    """Sample keys of a pre-training stage: `batch_volumes` cases per iteration, each repeated `views` times.

    Cases come from `labeled_only_batches(n_cases, batch_volumes, rng)` with the plan generator of `batch_plan`.
    The batch is ordered view-major, [view 0 of every volume, view 1 of every volume, ...], so sample j and
    j + batch_volumes are two views of one volume; every slot has its own augmentation draw (seed, it, slot), so
    two views are two independent crops (and rotations/flips) of the same case.

    Args:
        n_cases: cases to draw from; kind: "u" (image only) or "l" (with label) for every key.
        batch_volumes, views: distinct volumes per batch and copies of each.
        seed, start_it, max_it: as in `batch_plan` (iterations before start_it are drawn and skipped).
    """
    if kind not in ("l", "u") or views < 1:
        raise ValueError(f"kind must be 'l' or 'u' and views >= 1; got kind={kind!r}, views={views}")
    if not 0 <= start_it <= max_it:
        raise ValueError(f"need 0 <= start_it <= max_it; got start_it={start_it}, max_it={max_it}")
    rng = np.random.default_rng([seed, 0, 0, PLAN_STREAM])
    return _stage_keys(labeled_only_batches(n_cases, batch_volumes, rng), kind, views, start_it, max_it)


# -- dataset, collate, loader ----------------------------------------------------------------------------------------
class PatchDataset(Dataset):
    """Augmented training patches addressed by sample keys (it, slot, kind, index).

    Args:
        labeled: (image float32 (X, Y, Z), label uint8 (X, Y, Z)) pairs.
        unlabeled: images (X, Y, Z) only (their labels are never held).
        patch_size: (px, py, pz).
        augment_mode: "rotflip_crop" or "crop" (see `augment`).
        seed: run seed; sample (it, slot) is augmented with np.random.default_rng([seed, it, slot]).
        label_transforms: name → function of the label patch (uint8 (px, py, pz)) returning a float array of the same
            shape (e.g. a signed distance map), computed here so that it runs in the loader workers.
        with_case_id: add "case_id" to every sample: the labeled case's index, or n_labeled + the unlabeled case's
            index (a run-wide case identity, e.g. for cvrl's queue; labels are not involved).
    """

    def __init__(
        self,
        labeled: list[tuple[np.ndarray, np.ndarray]],
        unlabeled: list[np.ndarray],
        *,
        patch_size: tuple[int, int, int],
        augment_mode: str,
        seed: int,
        label_transforms: dict[str, LabelTransform] | None = None,
        with_case_id: bool = False,
    ) -> None:
        if augment_mode not in AUGMENT_MODES:
            raise ValueError(f"augment_mode must be one of {AUGMENT_MODES}; got {augment_mode!r}")
        for image, label in labeled:
            _check_pair(image, label)
        for image in unlabeled:
            _check_pair(image, None)
        reserved = {"image", "label"} & set(label_transforms or {})
        if reserved:
            raise ValueError(f"label_transforms must not be named {sorted(reserved)}")
        self.labeled = list(labeled)
        self.unlabeled = list(unlabeled)
        self.patch_size = _check_patch(patch_size)
        self.augment_mode = augment_mode
        self.seed = int(seed)
        self.label_transforms = dict(label_transforms or {})
        self.with_case_id = with_case_id

    def __len__(self) -> int:
        """Number of cases (labeled + unlabeled); samples are addressed by keys, not by 0 .. len − 1."""
        return len(self.labeled) + len(self.unlabeled)

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        """Sample `key` = (it, slot, kind, index).

        Returns:
            {"image": float32 [1, px, py, pz]}, plus for labeled samples "label": int64 [px, py, pz] and one float32
            [px, py, pz] tensor per label transform, plus "case_id" (int64 scalar) if `with_case_id`.
        """
        it, slot, kind, index = key
        rng = np.random.default_rng([self.seed, int(it), int(slot)])
        case = {"case_id": torch.tensor(index + (len(self.labeled) if kind == "u" else 0))} if self.with_case_id else {}
        if kind == "u":
            image, _ = augment(self.unlabeled[index], None, self.patch_size, self.augment_mode, rng)
            return {"image": torch.from_numpy(image.astype(np.float32)[None]), **case}
        if kind != "l":
            raise ValueError(f"sample kind must be 'l' or 'u'; got {kind!r} in key {key}")
        image, label = self.labeled[index]
        image, label = augment(image, label, self.patch_size, self.augment_mode, rng)
        out = {
            "image": torch.from_numpy(image.astype(np.float32)[None]),
            "label": torch.from_numpy(label.astype(np.int64)),
            **case,
        }
        for name, fn in self.label_transforms.items():
            extra = np.asarray(fn(label))
            if extra.shape != label.shape:
                raise ValueError(f"label transform {name!r} returned shape {extra.shape}, expected {label.shape}")
            out[name] = torch.from_numpy(extra.astype(np.float32))
        return out


def collate(samples: list[dict[str, torch.Tensor]]) -> Batch:
    """Stack samples into a `Batch`: labeled samples (those with "label") must come before unlabeled ones.

    Returns:
        Batch with x [B, 1, px, py, pz], y [n_labeled, px, py, pz] int64 (empty if none), n_labeled, and extras
        name → [n_labeled, px, py, pz] float32 for the label transforms, plus "case_id" [B] int64 when the samples
        carry one (every sample must then).
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    has_label = ["label" in s for s in samples]
    n_labeled = sum(has_label)
    if any(has_label[n_labeled:]):
        raise ValueError(f"labeled samples must come first; got label flags {has_label}")
    labeled = samples[:n_labeled]
    with_case = ["case_id" in s for s in samples]
    if any(with_case) and not all(with_case):
        raise ValueError(f"either every sample carries 'case_id' or none; got flags {with_case}")
    per_sample = {"image", "case_id"}
    for s in samples[n_labeled:]:
        if not set(s) <= per_sample:
            raise ValueError(f"unlabeled samples must carry only 'image' (and 'case_id'); got keys {sorted(s)}")
    names = sorted(set(labeled[0]) - per_sample - {"label"}) if labeled else []
    for s in labeled:
        if sorted(set(s) - per_sample - {"label"}) != names:
            raise ValueError(f"labeled samples carry different extras: {sorted(s)} vs {names}")
    x = torch.stack([s["image"] for s in samples])
    if labeled:
        y = torch.stack([s["label"] for s in labeled])
    else:
        y = torch.empty((0, *x.shape[2:]), dtype=torch.int64)
    extras = {n: torch.stack([s[n] for s in labeled]) for n in names}
    if all(with_case):
        extras["case_id"] = torch.stack([s["case_id"] for s in samples])
    return Batch(x=x, y=y, n_labeled=n_labeled, extras=extras)


def _seed_worker(base_seed: int, worker_id: int) -> None:
    """Seed Python `random` and NumPy's global state with base_seed + worker_id (docs/protocol.md §3.5 [H])."""
    random.seed(base_seed + worker_id)
    np.random.seed((base_seed + worker_id) % 2**32)


#: Batches each loader worker prepares ahead when feeding a GPU (DataLoader's default is 2).
CUDA_PREFETCH_FACTOR = 4


def loader_options(num_workers: int, cuda: bool) -> dict[str, object]:
    """DataLoader options that only change speed: for a CUDA device pinned batches (copied with non_blocking), and
    with workers, workers kept alive and `CUDA_PREFETCH_FACTOR` batches prepared ahead each. On the CPU: DataLoader's
    defaults (no pinning, no persistent workers, default prefetching)."""
    if not cuda:
        return {"pin_memory": False, "persistent_workers": False}
    if num_workers == 0:
        return {"pin_memory": True, "persistent_workers": False}
    return {"pin_memory": True, "persistent_workers": True, "prefetch_factor": CUDA_PREFETCH_FACTOR}


def make_loader(
    dataset: PatchDataset, plan: Iterable[list[Key]], *, num_workers: int, seed: int, cuda: bool = False
) -> DataLoader:
    """DataLoader yielding one `Batch` per key list of `plan` (e.g. `batch_plan(...)`), in plan order.

    Workers seed `random` and `np.random` with seed + worker_id; torch's per-worker base seed comes from a
    `torch.Generator` seeded with `seed`, so iterating the loader never consumes the global torch RNG. With
    num_workers=0 everything runs in-process. A generator `plan` can be iterated only once. `cuda` (the batches
    feed a CUDA device) adds `loader_options`: pinned memory (`Batch.pin_memory`), persistent workers, deeper
    prefetching; the batches are the same.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0; got {num_workers}")
    return DataLoader(
        dataset,
        batch_sampler=plan,
        collate_fn=collate,
        num_workers=num_workers,
        worker_init_fn=functools.partial(_seed_worker, int(seed)),
        generator=torch.Generator().manual_seed(int(seed)),
        **loader_options(num_workers, cuda),
    )
