"""The method plug-in interface (docs/architecture.md).

A method computes losses; the loop (`harness.train.loop`) owns data, optimisers, schedules, checkpoints and logging.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from harness.data.dataset import Batch
from harness.run.method_table import IMAGES_ONLY
from harness.run.stages import MAIN_STAGE


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

#: Optimisers and LR schedules a stage can ask the loop for (`StageSpec`).
STAGE_OPTIMIZERS = ("adam", "sgd")
STAGE_SCHEDULES = ("constant", "warmup_cosine", "step", "poly")
#: What a stage trains on: every training image (labels never read), the first N labeled cases (with labels), or
#: both streams of the semi-supervised protocol (labeled cases with labels, the other training cases image only).
STAGE_DATA = ("images", "labeled", "labeled+unlabeled")


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """How the loop runs one stage of a run: a pre-training stage of a method or the main training (each its own DAG
    job; a stage hands its model.pt to the next).

    Attributes:
        name: stage name (a path component: `<run>/<name>/`; `MAIN_STAGE` for the main training).
        iterations: optimiser steps.
        batch_volumes: distinct volumes per batch ("labeled+unlabeled": the labeled ones).
        views: copies of each volume in the batch, each with its own augmentation draw (2 = two random crops).
        data: "images" (every training image, as unlabeled samples: no label is read), "labeled" (the run's first N
            labeled cases with their labels; no unlabeled or test case is loaded) or "labeled+unlabeled" (those plus
            the other training cases, image only: `batch_volumes` labeled then `unlabeled_volumes` unlabeled samples
            per batch, UA-MT's two-stream sampler).
        optimizer: "adam" or "sgd".
        lr, weight_decay: the optimiser's values.
        schedule: "constant", "warmup_cosine" (linear warm-up over `warmup_fraction` of the iterations, then cosine
            from lr to 0), "step" (lr · lr_gamma^(it // lr_step), UA-MT) or "poly" (lr · (1 − (it − 1)/iterations)^
            lr_power from the second step on, the first two steps at lr: the reference sets it after each step,
            SSL4MIS/AD-MT `lr_ = base_lr * (1 - iter_num / max_iterations) ** 0.9`).
        warmup_fraction: share of the iterations spent warming up (warmup_cosine only).
        momentum: SGD momentum (sgd only).
        unlabeled_volumes: unlabeled samples per batch ("labeled+unlabeled" only).
        lr_step, lr_gamma: the step schedule.
        lr_power: the poly schedule's exponent.
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
    momentum: float = 0.9
    unlabeled_volumes: int = 0
    lr_step: int = 1
    lr_gamma: float = 1.0
    lr_power: float = 0.9

    def __post_init__(self) -> None:
        choices = (
            (self.data, STAGE_DATA, "data"),
            (self.optimizer, STAGE_OPTIMIZERS, "optimizer"),
            (self.schedule, STAGE_SCHEDULES, "schedule"),
        )
        for value, allowed, key in choices:
            if value not in allowed:
                raise ValueError(f"stage {self.name!r}: {key} in {allowed}; got {value!r}")
        if min(self.iterations, self.batch_volumes, self.views, self.lr_step) < 1 or self.lr <= 0:
            raise ValueError(f"stage {self.name!r}: iterations, batch_volumes, views, lr_step >= 1 and lr > 0 required")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"stage {self.name!r}: warmup_fraction must be in [0, 1); got {self.warmup_fraction}")
        if (self.unlabeled_volumes > 0) != (self.data == "labeled+unlabeled"):
            raise ValueError(f"stage {self.name!r}: unlabeled_volumes > 0 exactly when data is labeled+unlabeled")

    def lr_at(self, it: int) -> float:
        """Learning rate of 0-based step `it`."""
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "step":
            return self.lr * self.lr_gamma ** (it // self.lr_step)
        if self.schedule == "poly":
            return self.lr * (1.0 - max(it - 1, 0) / self.iterations) ** self.lr_power
        warmup = int(self.warmup_fraction * self.iterations)
        if it < warmup:
            return self.lr * (it + 1) / warmup
        progress = (it - warmup) / max(self.iterations - warmup, 1)
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A pre-training stage a method declares in `STAGES`, run by its own DAG job (`pretrain_<name>`) before the main
    training. `name`, `data` and `settings` are written as string literals: the DAG reads them without importing the
    method (`harness.run.method_table`).

    Attributes:
        name: the stage's name (a folder `<run>/<name>/` and the rule `pretrain_<name>`).
        data: "images" (every training image, labels never read: the stage is shared by every labeled count) or
            "labeled" (the run's labeled cases with their labels) or "labeled+unlabeled" (see `StageSpec.data`).
        settings: the field of the method's Config holding the stage's `iterations`, `batch_volumes`, `lr`,
            `weight_decay` (and, where used, `warmup_fraction`, `momentum`): `method_overrides.<m>.<settings>.*`.
        step: the name of the method's function computing the stage's losses: `(batch, progress) -> StepOutput`.
        modules: the networks (attribute names) the stage trains and saves in its model.pt.
        views: copies of each volume per batch, each with its own augmentation draw.
        optimizer: "adam" or "sgd"; schedule: "constant", "warmup_cosine" or "step" (`StageSpec`).
        trains: the name of the method's function returning the optimised parameters (default: every parameter of
            `modules`).
        starts_from: the name of the method's function that takes the previous stage's saved state (None: a first
            stage).
    """

    name: str
    data: str
    settings: str
    step: str
    modules: tuple[str, ...]
    views: int = 1
    optimizer: str = "adam"
    schedule: str = "constant"
    trains: str | None = None
    starts_from: str | None = None

    @property
    def shared(self) -> bool:
        """Reads no labels: the runs of every labeled count share one training of it (`harness.run.stages`)."""
        return self.data == IMAGES_ONLY

    def spec(self, cfg: Any) -> StageSpec:
        """The loop's `StageSpec` of this stage under the method's Config `cfg`."""
        s = getattr(cfg, self.settings)
        return StageSpec(
            name=self.name,
            iterations=s.iterations,
            batch_volumes=s.batch_volumes,
            views=self.views,
            data=self.data,
            optimizer=self.optimizer,
            lr=s.lr,
            weight_decay=s.weight_decay,
            schedule=self.schedule,
            warmup_fraction=getattr(s, "warmup_fraction", 0.0),
            momentum=getattr(s, "momentum", 0.9),
        )


def main_stage(protocol: Any, needs_unlabeled: bool) -> StageSpec:
    """The main training of every method as a stage: the shared protocol (`harness.config.ProtocolConfig`), SGD with
    its LR schedule, two streams for semi-supervised methods, labeled batches for the others."""
    p = protocol
    unlabeled = p.batch_size - p.labeled_bs if needs_unlabeled else 0
    return StageSpec(
        name=MAIN_STAGE,
        iterations=p.iterations,
        batch_volumes=p.labeled_bs,
        views=1,
        data="labeled+unlabeled" if unlabeled else "labeled",
        optimizer="sgd",
        lr=p.lr,
        weight_decay=p.weight_decay,
        schedule=p.lr_schedule,
        momentum=p.momentum,
        unlabeled_volumes=unlabeled,
        lr_step=p.lr_step,
        lr_gamma=p.lr_gamma,
        lr_power=p.lr_power,
    )


class Method:
    """Base class of every method; subclasses live in `methods/<name>.py`, one per file. Everything the harness reads
    or calls on a method is declared here, with its default; a method overrides some of it and adds nothing public
    (the contract test fails on a public name the base does not declare).

    Class attributes:
        name: registry key, equal to the file stem (set by `register_method`).
        VERSION: bump whenever the numerics change; written into every result.
        Config: frozen dataclass of the method's own hyperparameters (its fields are the method's
            `method_overrides` keys; `harness.run.method_table` reads them without importing the method).
        output_kind: "softmax" (2-class head, argmax) or "sigmoid" (1-channel head, p > 0.5) at test time.
        needs_unlabeled: whether the main training's batches carry unlabeled samples (two-stream sampler).
        STAGES: the pre-training stages (`Stage` declarations), in the order they run, each by its own DAG job
            (`pretrain_<name>`), before the main training. Empty for most methods. Stages that read no labels
            (data "images") come first; the DAG trains each once per dataset, method and seed (`harness.run.stages`).
        TRAIN_MODULES: the networks the main training trains and saves (empty: every network of the method).
        TRAIN_STARTS_FROM: the name of the function that takes the last pre-training stage's saved state when the
            main training starts (methods with STAGES only).
        needs_case_id: whether batches carry `extras["case_id"]` `[B]` (which case each sample was cut from).
    """

    name: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    Config: ClassVar[type] = object
    output_kind: ClassVar[str] = "softmax"
    needs_unlabeled: ClassVar[bool] = True
    STAGES: ClassVar[tuple[Stage, ...]] = ()
    TRAIN_MODULES: ClassVar[tuple[str, ...]] = ()
    TRAIN_STARTS_FROM: ClassVar[str | None] = None
    needs_case_id: ClassVar[bool] = False

    def __init__(self, cfg: Any, build_net: BuildNet, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.stage: Stage | None = None

    # -- what the loop calls -------------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """The networks the current stage trains and saves, by attribute name."""
        networks = {k: v for k, v in vars(self).items() if isinstance(v, nn.Module)}
        names = self.stage.modules if self.stage is not None else self.TRAIN_MODULES
        return {k: networks[k] for k in names} if names else networks

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per optimiser; the default trains `self.net` with one optimiser called "main" (a pre-training
        stage: its `trains` function, else every parameter of its modules)."""
        if self.stage is not None:
            if self.stage.trains is not None:
                return {"main": list(getattr(self, self.stage.trains)())}
            return {"main": [p for m in self.modules().values() for p in m.parameters()]}
        return {"main": list(self.net.parameters())}

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        """The main training's losses."""
        raise NotImplementedError

    def stage_step(self, batch: Batch, progress: Progress) -> StepOutput:
        """The current stage's losses: its declared `step` function, or `training_step` for the main training."""
        step = self.training_step if self.stage is None else getattr(self, self.stage.step)
        return step(batch, progress)

    def after_optimizer_step(self, progress: Progress) -> None:
        """Hook after all optimisers stepped (EMA teacher updates go here)."""

    def eval_network(self) -> nn.Module:
        """The module whose forward(x) returns segmentation logits `[B, C, X, Y, Z]` (C = 2 softmax, 1 sigmoid)."""
        return self.net

    def label_transforms(self) -> dict[str, Callable] | None:
        """Per-sample functions of the augmented label patch run in the loader workers, by `Batch.extras` key
        (e.g. {"sdf": signed_distance_map}); None: the batches carry no extras from labels."""
        return None

    # -- pre-training stages (methods with STAGES only) ------------------------------------------------------------
    @classmethod
    def stage_named(cls, stage: str) -> Stage:
        for declared in cls.STAGES:
            if declared.name == stage:
                return declared
        raise ValueError(f"method {cls.name} has no pre-training stage {stage!r}; its stages: {cls.stage_names()}")

    @classmethod
    def stage_names(cls) -> tuple[str, ...]:
        return tuple(s.name for s in cls.STAGES)

    def set_stage(self, stage: str | None) -> None:
        """Switch to pre-training `stage` (None: the main training). Called once, right after construction."""
        self.stage = None if stage is None or stage == MAIN_STAGE else self.stage_named(stage)

    def start_from(self, state: dict[str, Any]) -> None:
        """Initialise the current stage from the previous stage's saved state (`state_dict()` output)."""
        starts_from = self.TRAIN_STARTS_FROM if self.stage is None else self.stage.starts_from
        if starts_from is None:
            where = "the main training" if self.stage is None else f"stage {self.stage.name}"
            raise ValueError(f"method {self.name}: {where} declares no function to start from the previous stage")
        getattr(self, starts_from)(state)

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
