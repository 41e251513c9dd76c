"""Optimisers, the step, mixed precision and the thread split of a training job.

Each optimiser group of a method (`Method.optim_groups`) gets the optimiser its stage asks for (`StageSpec`); the
step backs each group's loss and steps the optimisers in declaration order, under autocast when `protocol.amp` asks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from harness.method import Method, StageSpec


@dataclass(frozen=True)
class Precision:
    """Mixed-precision settings of a run (`protocol.amp`): an autocast context and a gradient scaler (fp16 only)."""

    amp: str
    device: torch.device

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def kernels(self) -> contextlib.AbstractContextManager:
        """Wraps the whole training loop (forward and backward). Mixed precision on the CPU runs without oneDNN: with
        torch 2.13 its bf16 conv3d backward intermittently returned NaN weight gradients (about 1 in 20 three-step
        runs of a tiny V-Net; never with oneDNN off), apparently reading memory it had not written."""
        if self.amp == "off" or self.device.type != "cpu":
            return contextlib.nullcontext()
        return _onednn_disabled()

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")


@contextlib.contextmanager
def _onednn_disabled() -> Iterator[None]:
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


@dataclass
class Optimisation:
    """The optimisers (one per group, in declaration order), the gradient scaler and the precision settings."""

    optimizers: dict[str, torch.optim.Optimizer]
    scaler: torch.amp.GradScaler
    precision: Precision


def make_optimisation(method: Method, spec: StageSpec, amp: str, device: torch.device) -> Optimisation:
    """The optimiser `spec` asks for (SGD with momentum or Adam), one per optimiser group of `method`."""

    def make(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if spec.optimizer == "adam":
            return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)

    optimizers = {group: make(params) for group, params in method.optim_groups().items()}
    precision = Precision(amp, device)
    return Optimisation(optimizers, precision.scaler(), precision)


def backward_and_step(
    loss: Any, optimizers: dict[str, torch.optim.Optimizer], scaler: torch.amp.GradScaler | None = None
) -> None:
    """Backward each group's loss and step the optimisers in declaration order (`Method.optim_groups`).

    With an enabled `scaler` (fp16), losses are scaled before backward and steps skip non-finite gradients.
    """
    losses = loss if isinstance(loss, dict) else {"main": loss}
    if set(losses) != set(optimizers):
        raise KeyError(f"training_step returned losses for {sorted(losses)}, optimiser groups are {sorted(optimizers)}")
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    for group, opt in optimizers.items():
        if not torch.isfinite(losses[group]):
            raise FloatingPointError(f"non-finite loss {losses[group].item()} in optimiser group {group!r}")
        scaler.scale(losses[group]).backward()
        scaler.step(opt)
    scaler.update()


def compile_networks(method: Method) -> None:
    """torch.compile each network's forward in place (state_dict keys stay those of the plain modules)."""
    for module in method.modules().values():
        module.forward = torch.compile(module.forward)
