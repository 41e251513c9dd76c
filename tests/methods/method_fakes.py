"""Tiny stand-in networks with outputs known by hand, for the per-method arithmetic tests."""

from __future__ import annotations

import torch
from torch import nn


class LinearLogits(nn.Module):
    """2-class logits (0, a·x) per voxel, a a parameter (1 at start): softmax fg = σ(a·x)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.ones(()))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return torch.cat([torch.zeros_like(x), self.a * x], dim=1)


class ConstantLogits(LinearLogits):
    """2-class logits (0, 0) whatever the input (softmax 0.5 / 0.5), recording its inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return torch.zeros(x.shape[0], 2, *x.shape[2:]) * self.a


class DualHead(nn.Module):
    """(SDM, seg logit) = (s·x, o·x) per voxel with parameters s = o = 1 at start."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.ones(()))
        self.o = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.s * x, self.o * x
