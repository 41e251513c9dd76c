"""The method plug-in interface (DESIGN.md §2).

A method computes losses; the loop (`harness.loop`) owns data, optimisers, schedules, checkpoints and logging.
"""

from __future__ import annotations

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
        extras: per-batch tensors that a method asked the data pipeline for (e.g. "sdf" `[n_labeled, X, Y, Z]`).
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


class Method:
    """Base class of every method; subclasses live in `methods/<name>.py`, one per file.

    Class attributes:
        name: registry key, equal to the file stem (set by `register_method`).
        VERSION: bump whenever the numerics change; written into every result.
        Config: frozen dataclass of the method's own hyperparameters.
        output_kind: "softmax" (2-class head, argmax) or "sigmoid" (1-channel head, p > 0.5) at test time.
        needs_unlabeled: whether the batch carries unlabeled samples (two-stream sampler) or only labeled ones.
    """

    name: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    Config: ClassVar[type] = object
    output_kind: ClassVar[str] = "softmax"
    needs_unlabeled: ClassVar[bool] = True

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
