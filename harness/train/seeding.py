"""Seeding and determinism switches (protocol §3.5)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = True) -> dict[str, object]:
    """Seed Python, NumPy and torch (CPU and CUDA) and set the cuDNN switches; returns what was set (for provenance).

    Args:
        seed: the run's training seed (it never changes the labeled subset).
        deterministic: cudnn.deterministic on and benchmark off, as the reference code's default.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    return {"seed": seed, "cudnn_deterministic": deterministic, "cudnn_benchmark": not deterministic}


def rng_state() -> dict[str, torch.Tensor]:
    """torch's RNG states (CPU and, if present, CUDA): the only RNG a method may use (docs/architecture.md)."""
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
