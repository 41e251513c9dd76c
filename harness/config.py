"""Configuration of one training run: strict frozen dataclasses, hashing and the run config file.

Flow: `config/*.yaml` is validated when Snakemake builds the DAG (`harness.workflow.validate`);
`harness.workflow.grid.cell_params` cuts out what one training run depends on (a Snakemake `params`);
`harness.method.build.resolve_run` turns it into a validated `RunConfig` with the method's own `Config` at job start.

This module imports no torch so that the Snakefile can use it at DAG build time.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

#: Data sources whose preparation rules exist (workflow/rules/data.smk), with the on-disk format each one writes.
IMPLEMENTED_SOURCES = {
    "synthetic": "la_h5",  # built in (harness/data/synthetic.py)
    "released_h5": "la_h5",  # LA: UA-MT's released h5 files, sha256-verified (protocol §1.2; harness/data/la.py)
    "raw_nrrd": "la_h5",  # LA: the challenge's raw nrrd, UA-MT preprocessing with seeded margins (protocol §1.5)
    "tcia": "pancreas_h5",  # NIH Pancreas-CT from TCIA, MC-Net preprocessing (protocol §2; harness/data/pancreas.py)
    "nifti": "case_h5",  # your own dataset in the MSD or nnU-Net v2 layout (harness/data/nifti.py)
}
#: Where each not-yet-implemented source will come from (shown in the refusal message).
PLANNED_SOURCES: dict[str, str] = {}
#: On-disk layouts a dataset root can have (harness.data.dataset.case_path).
DATA_FORMATS = ("la_h5", "pancreas_h5", "case_h5")
SAFE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: LR schedules of the main training (`protocol.lr_schedule`; `harness.method.contract.StageSpec.lr_at`).
LR_SCHEDULES = ("step", "constant", "poly")
#: Separates a method from its variant in grid entries, run folders and tables (`simcvd@no_sdm`).
VARIANT_SEPARATOR = "@"


def base_of(method: str) -> str:
    """The method file stem of a grid entry (`simcvd@no_sdm` → `simcvd`): what the registry builds."""
    return method.split(VARIANT_SEPARATOR, 1)[0]


def same_value(a: Any, b: Any) -> bool:
    """Equal as configured values (YAML lists and Config tuples alike; 0 and 0.0 alike; True and 1 not)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return a == b


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key and the fix."""


# ---------------------------------------------------------------------------------------------------------------------
# strict dataclass loading


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for alt in typing.get_args(tp):
            try:
                return _check_type(value, alt, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not of type {tp}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    raise ConfigError(f"{where}: unsupported config type {tp}")


def from_dict(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    """Build the frozen dataclass `cls` from `data`, rejecting unknown keys (with a did-you-mean) and wrong types.

    Args:
        cls: a dataclass type whose fields all have defaults or are given in `data`.
        data: the mapping read from YAML/JSON (None means empty).
        where: the config path shown in error messages, e.g. "method_overrides.supervised".
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}.{hint} Allowed keys: {', '.join(names)}")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{where}: {err}") from err
    except ValueError as err:  # a value out of its range (a dataclass's __post_init__)
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{where}: {err}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain JSON/YAML-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


# ---------------------------------------------------------------------------------------------------------------------
# the dataclasses a training run receives


#: How a run's labeled cases are chosen from the training list (`data.<dataset>.labeled_subset`).
LABELED_SUBSETS = ("first", "seeded")
#: How a run's checkpoint is chosen (`protocol.selection`): the last one, or the best on a validation split.
SELECTIONS = ("last", "val")


@dataclass(frozen=True)
class ValSplit:
    """A validation split carved from the training list (`data.<dataset>.val`, resolved when the DAG is built by
    `harness.workflow.grid.val_split`): never a test case, never a labeled one (drawn from the list positions no
    labeled count of the dataset reaches). Empty (the default): the published protocol, no validation cases."""

    count: int = 0
    """Validation cases (a `fraction` of the training list, rounded, is turned into this count)."""
    seed: int = 0
    """Seed of the draw (`numpy.random.default_rng([seed, VAL_STREAM])`), independent of the training seeds."""
    ids: tuple[str, ...] = ()
    """The cases of a `list` file (its content, read when the DAG is built, is part of the run's identity)."""
    after: int = 0
    """Draw among the training list's positions >= after: the dataset's largest labeled count (so the labeled
    subsets stay those of the protocol and only the unlabeled pool shrinks)."""


@dataclass(frozen=True)
class DataConfig:
    """What a training run needs to know about its dataset (`data.<dataset>` in config)."""

    format: str = "la_h5"
    """On-disk layout: `la_h5` = `<root>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5` + lists (protocol §1.3)."""
    root: str = ""
    """Folder holding the dataset in `format` (written by the dataset's preparation rule)."""
    n_train: int = 80
    """Number of IDs in train.list; the upper bound trains on all of them (protocol §1.6)."""
    patch_size: tuple[int, int, int] = (112, 112, 80)
    """Training patch and sliding-window size, (x, y, z) voxels (protocol §3.2, §4.2)."""
    augment: str = "rotflip_crop"
    """`rotflip_crop` (LA: RandomRotFlip then RandomCrop) or `crop` (Pancreas: RandomCrop only), protocol §3.2."""
    source: str = ""
    """Where the data came from (`synthetic`, `released_h5`, `raw_nrrd`, `tcia`): a result tag (`la_source`, §1.5)."""
    split: str = ""
    """Split variant tag: Pancreas `mcnet` or `mcnet_minus_0025_0070` (protocol §2.2); empty for the others."""
    val: ValSplit = field(default_factory=ValSplit)
    """The validation split (`protocol.selection: val` selects on it); none by default."""
    labeled_subset: str = "first"
    """`first`: the first N of the training list, whatever the seed (every reference repository); `seeded`: N drawn
    per training seed, so the spread over seeds includes which cases were labeled [H]."""

    @property
    def n_trainable(self) -> int:
        """Training cases a run may learn from: the training list without the validation cases."""
        return self.n_train - (len(self.val.ids) or self.val.count)

    def __post_init__(self) -> None:
        if self.labeled_subset not in LABELED_SUBSETS:
            raise ConfigError(f"data.labeled_subset: {self.labeled_subset!r}; use one of {', '.join(LABELED_SUBSETS)}")
        if self.format not in DATA_FORMATS:
            raise ConfigError(f"data.format: {self.format!r} is not supported; use one of {', '.join(DATA_FORMATS)}")
        if self.source and IMPLEMENTED_SOURCES.get(self.source, self.format) != self.format:
            raise ConfigError(
                f"data.format: source {self.source!r} writes {IMPLEMENTED_SOURCES[self.source]!r}, not {self.format!r}"
            )
        if self.augment not in ("rotflip_crop", "crop"):
            raise ConfigError(f"data.augment: {self.augment!r}; use 'rotflip_crop' (LA) or 'crop' (Pancreas)")
        if any(p <= 0 or p % 16 for p in self.patch_size):
            raise ConfigError(
                f"data.patch_size: {self.patch_size} must be positive multiples of 16 (four V-Net poolings)"
            )
        if not self.root:
            raise ConfigError("data.root: missing; set the folder the dataset is prepared into")


@dataclass(frozen=True)
class ProtocolConfig:
    """The shared training protocol (`protocol` in config; UA-MT family defaults, protocol §3)."""

    iterations: int = 6000
    """Optimiser steps (UA-MT train_LA.py max_iterations)."""
    batch_size: int = 4
    """Samples per batch (UA-MT batch_size)."""
    labeled_bs: int = 2
    """Labeled samples per batch for semi-supervised methods (UA-MT labeled_bs); labeled-only methods use batch_size."""
    lr: float = 0.01
    """Initial SGD learning rate (UA-MT base_lr)."""
    momentum: float = 0.9
    """SGD momentum (UA-MT)."""
    weight_decay: float = 1e-4
    """SGD weight decay (UA-MT; SimCVD uses 5e-4)."""
    lr_step: int = 2500
    """LR is multiplied by lr_gamma every lr_step iterations (UA-MT: 2500; SimCVD: 3000)."""
    lr_gamma: float = 0.1
    """Step-decay factor (UA-MT)."""
    lr_schedule: str = "step"
    """`step` (lr · lr_gamma^(it // lr_step), UA-MT), `constant` (MC-Net) or `poly` (lr · (1 − (it − 1)/iterations)^
    lr_power from the second step on, SSL4MIS / AD-MT) [H: the choice per method is a `method_overrides` value]."""
    lr_power: float = 0.9
    """Exponent of the poly schedule (SSL4MIS, AD-MT: 0.9)."""
    n_filters: int = 16
    """V-Net base width (UA-MT VNet n_filters=16); the smoke benchmark uses fewer."""
    deterministic: bool = True
    """cudnn.deterministic on, benchmark off (reference default)."""
    amp: str = "off"
    """Mixed precision: off (reference: fp32), bf16 (autocast) or fp16 (autocast + gradient scaling) [H]."""
    compile: bool = False
    """torch.compile the networks' forward passes (opt-in) [H]: same maths up to kernel rounding, but compiled
    dropout draws different random numbers than eager dropout, so compiled and eager runs are not interchangeable."""
    tf32: bool = False
    """TF32 in cuDNN convolutions and CUDA matmuls (`torch.backends.cudnn.allow_tf32`, `torch.backends.cuda.matmul.
    allow_tf32`), set at the start of training and prediction [H]. Off: true fp32, as the reference ran (recent GPUs
    otherwise run cuDNN convolutions in TF32 by default). No effect on the CPU."""
    channels_last: bool = False
    """Networks and input batches in `torch.channels_last_3d` memory format [H]: the same maths through other
    kernels (faster on some GPUs, see docs/gpu.md); off keeps the contiguous layout of the reference."""

    def __post_init__(self) -> None:
        positive = ("iterations", "batch_size", "labeled_bs", "lr_step", "n_filters")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"protocol.{name}: must be > 0, got {getattr(self, name)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"protocol.lr_schedule: {self.lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
        if self.amp not in ("off", "bf16", "fp16"):
            raise ConfigError(f"protocol.amp: {self.amp!r}; use off, bf16 or fp16")
        if self.labeled_bs > self.batch_size:
            raise ConfigError(
                f"protocol.labeled_bs ({self.labeled_bs}) must be <= protocol.batch_size ({self.batch_size})"
            )
        if self.lr <= 0:
            raise ConfigError(f"protocol.lr: must be > 0, got {self.lr}")


@dataclass(frozen=True)
class SelectionConfig:
    """Which checkpoint a run reports, and what its training job evaluates on the way (`protocol.selection`,
    `protocol.val_every`, `report.selection_audit.every`, with the sliding window of `data.<ds>.stride` and
    `eval.windows_per_batch`, the same as the `predict` rule's). The defaults evaluate nothing: the published protocol,
    the last checkpoint."""

    mode: str = "last"
    """`last` (the reference's UA-MT/DTC convention, the default) or `val` (the best mean Dice on the validation split,
    evaluated every `val_every` iterations and after the last)."""
    val_every: int = 0
    """Iterations between two evaluations of the validation cases (`val` only)."""
    audit_every: int = 0
    """Iterations between two scorings of the TEST cases for the test-set selection audit (0: off). Never read by
    training or selection: it only measures what selecting on the test set would have reported."""
    stride: tuple[int, int, int] = (16, 16, 16)
    """Sliding-window stride of these evaluations (the dataset's `stride`, as `predict`)."""
    windows_per_batch: int = 4
    """Windows per forward pass of these evaluations (`eval.windows_per_batch`, as `predict`)."""

    @property
    def evaluates(self) -> bool:
        return self.mode == "val" or self.audit_every > 0

    def __post_init__(self) -> None:
        if self.mode not in SELECTIONS:
            raise ConfigError(f"protocol.selection: {self.mode!r}; use one of {', '.join(SELECTIONS)}")
        if self.mode == "val" and self.val_every < 1:
            raise ConfigError("protocol.val_every: selection `val` needs the evaluation period in iterations (>= 1)")
        if self.val_every < 0 or self.audit_every < 0:
            raise ConfigError("protocol.val_every and report.selection_audit.every must be >= 0")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run depends on; written to `run_config.yaml` beside the run."""

    dataset: str
    method: str
    n_labeled: int
    seed: int
    data: DataConfig
    protocol: ProtocolConfig
    method_config: dict[str, Any] = field(default_factory=dict)
    """The method's own hyperparameters (validated against the method's `Config` dataclass)."""
    variant_overrides: dict[str, Any] = field(default_factory=dict)
    """What makes this run a variant (`method` is then `<base>@<variant>`, docs/ablations.md); {} for a base method."""
    threads: int = 1
    """Torch intra-op threads of the run's training and prediction jobs (`compute.train_threads`): part of the run's
    identity, since CPU reductions sum in another order with another thread count (docs/architecture.md)."""
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    """Checkpoint selection and the evaluations its training job runs (docs/protocol.md, "Checkpoint selection")."""

    def __post_init__(self) -> None:
        if not (1 <= self.n_labeled <= self.data.n_trainable):
            raise ConfigError(
                f"n_labeled={self.n_labeled} must be between 1 and the training cases without validation cases "
                f"({self.data.n_trainable} of data.n_train={self.data.n_train})"
            )
        if self.selection.mode == "val" and not self.data.n_trainable < self.data.n_train:
            raise ConfigError("protocol.selection: val needs a validation split: set data.<dataset>.val")
        if self.threads < 1:
            raise ConfigError(f"compute.train_threads: must be >= 1, got {self.threads}")

    @property
    def base_method(self) -> str:
        """The method file stem (`simcvd` for the variant `simcvd@no_sdm`): what the registry builds."""
        return base_of(self.method)

    @property
    def is_upper_bound(self) -> bool:
        return self.n_labeled == self.data.n_trainable

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def sha256(self) -> str:
        return sha256_of(self.to_dict())


def sha256_of(data: Any) -> str:
    """sha256 of the canonical JSON form of `data` (sorted keys, no whitespace)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_run_config(path: Path) -> RunConfig:
    """Read a `run_config.yaml` written by `resolve-run` and validate it again (strict)."""
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a run config mapping")
    return from_dict(RunConfig, raw, str(path))
