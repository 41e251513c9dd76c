"""Adapters between networks and the harness: modules that expose one output of a network as what evaluation needs."""

from __future__ import annotations

import torch
from torch import nn


class SegmentationHead(nn.Module):
    """Adapter: forward(x) of a dual-head network (SDM, segmentation) returns its segmentation logits
    `[B, 1, X, Y, Z]` only (the evaluation network of dtc and simcvd)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[1]
