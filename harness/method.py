"""The method plug-in interface (DESIGN.md §2).

A method computes losses; the loop (`harness.loop`) owns data, optimisers, schedules, checkpoints and logging.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


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

    def to(self, device: torch.device) -> Batch:
        """The same batch on `device`."""
        extras = {k: v.to(device) for k, v in self.extras.items()}
        return Batch(x=self.x.to(device), y=self.y.to(device), n_labeled=self.n_labeled, extras=extras)

    @property
    def x_l(self) -> torch.Tensor:
        return self.x[: self.n_labeled]

    @property
    def x_u(self) -> torch.Tensor:
        return self.x[self.n_labeled :]


@dataclass(frozen=True)
class Progress:
    """Where training is: `it` is the 0-based index of the current optimiser step."""

    it: int
    max_it: int
    lr: float


@dataclass(frozen=True)
class StepOutput:
    """What `training_step` returns: the loss (or one loss per optimiser group) and float logs."""

    loss: torch.Tensor | dict[str, torch.Tensor]
    logs: dict[str, float]


BuildNet = Callable[..., nn.Module]

#: Optimisers and LR schedules a pre-training stage can ask the loop for (`StageSpec`).
STAGE_OPTIMIZERS = ("adam", "sgd")
STAGE_SCHEDULES = ("constant", "warmup_cosine")
#: What a stage trains on: every training image (labels never read) or the first N labeled cases (with labels).
STAGE_DATA = ("images", "labeled")


@dataclass(frozen=True)
class StageSpec:
    """How the loop runs one pre-training stage of a method (its own DAG job; the hand-off is its model.pt).

    Attributes:
        name: stage name (a path component: `<run>/<name>/`).
        iterations: optimiser steps.
        batch_volumes: distinct volumes per batch.
        views: copies of each volume in the batch, each with its own augmentation draw (2 = two random crops).
        data: "images" (every training image, as unlabeled samples: no label is read) or "labeled" (the run's
            first N labeled cases with their labels; no unlabeled or test case is loaded).
        optimizer: "adam" or "sgd" (momentum 0.9).
        lr, weight_decay: the optimiser's values.
        schedule: "constant" or "warmup_cosine" (linear warm-up over `warmup_fraction` of the iterations, then cosine
            from lr to 0).
        warmup_fraction: share of the iterations spent warming up (warmup_cosine only).
    """

    name: str
    iterations: int
    batch_volumes: int
    views: int
    data: str
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str = "constant"
    warmup_fraction: float = 0.0

    def __post_init__(self) -> None:
        choices = ((self.data, STAGE_DATA, "data"), (self.optimizer, STAGE_OPTIMIZERS, "optimizer"),
                   (self.schedule, STAGE_SCHEDULES, "schedule"))  # fmt: skip
        for value, allowed, key in choices:
            if value not in allowed:
                raise ValueError(f"stage {self.name!r}: {key} in {allowed}; got {value!r}")
        if min(self.iterations, self.batch_volumes, self.views) < 1 or self.lr <= 0:
            raise ValueError(f"stage {self.name!r}: iterations, batch_volumes, views >= 1 and lr > 0 required")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"stage {self.name!r}: warmup_fraction must be in [0, 1); got {self.warmup_fraction}")

    def lr_at(self, it: int) -> float:
        """Learning rate of 0-based step `it`."""
        if self.schedule == "constant":
            return self.lr
        warmup = int(self.warmup_fraction * self.iterations)
        if it < warmup:
            return self.lr * (it + 1) / warmup
        progress = (it - warmup) / max(self.iterations - warmup, 1)
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))


class Method:
    """Base class of every method; subclasses live in `methods/<name>.py`, one per file.

    Class attributes:
        name: registry key, equal to the file stem (set by `register_method`).
        VERSION: bump whenever the numerics change; written into every result.
        Config: frozen dataclass of the method's own hyperparameters.
        output_kind: "softmax" (2-class head, argmax) or "sigmoid" (1-channel head, p > 0.5) at test time.
        needs_unlabeled: whether the batch carries unlabeled samples (two-stream sampler) or only labeled ones.
        STAGES: names of pre-training stages run, in order, before the main training (each by its own DAG job;
            `harness.config.PRETRAINING_STAGES` repeats them for the Snakefile). Empty for most methods.
        needs_case_id: whether batches carry `extras["case_id"]` `[B]` (which case each sample was cut from).
    """

    name: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    Config: ClassVar[type] = object
    output_kind: ClassVar[str] = "softmax"
    needs_unlabeled: ClassVar[bool] = True
    STAGES: ClassVar[tuple[str, ...]] = ()
    needs_case_id: ClassVar[bool] = False

    def __init__(self, cfg: Any, build_net: BuildNet, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device

    # -- what the loop calls -------------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """The networks whose state is saved in checkpoints, by attribute name."""
        return {k: v for k, v in vars(self).items() if isinstance(v, nn.Module)}

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per optimiser; the default trains `self.net` with one optimiser called "main"."""
        return {"main": list(self.net.parameters())}

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        raise NotImplementedError

    def after_optimizer_step(self, progress: Progress) -> None:
        """Hook after all optimisers stepped (EMA teacher updates go here)."""

    def eval_network(self) -> nn.Module:
        """The module whose forward(x) returns segmentation logits `[B, C, X, Y, Z]` (C = 2 softmax, 1 sigmoid)."""
        return self.net

    # -- pre-training stages (methods with STAGES only) ------------------------------------------------------------
    def set_stage(self, stage: str | None) -> None:
        """Switch to pre-training `stage` (None: the main training). Called once, right after construction."""
        if stage is not None:
            raise ValueError(f"method {self.name} has no pre-training stage {stage!r}")

    def stage_spec(self, stage: str) -> StageSpec:
        """Data, optimiser and schedule of pre-training `stage`."""
        raise ValueError(f"method {self.name} has no pre-training stage {stage!r}")

    def init_from_stage(self, stage: str, state: dict[str, Any]) -> None:
        """Initialise from the saved state (`state_dict()` output) of the previous stage `stage`."""
        raise ValueError(f"method {self.name} has no pre-training stage {stage!r}")

    def train(self) -> None:
        for m in self.modules().values():
            m.train()

    def state_dict(self) -> dict[str, Any]:
        return {k: m.state_dict() for k, m in self.modules().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mods = self.modules()
        if set(state) != set(mods):
            raise KeyError(f"checkpoint holds modules {sorted(state)}, method {self.name} has {sorted(mods)}")
        for k, m in mods.items():
            m.load_state_dict(state[k])
