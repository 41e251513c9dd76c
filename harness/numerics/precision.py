"""Precision and memory-layout switches of a training or prediction job (`protocol.tf32`, `protocol.channels_last`).

Both are torch process settings or tensor layouts, set explicitly at the start of every job and read back for its
record, so a run never inherits them from torch's defaults: torch enables TF32 for cuDNN convolutions by default,
while the reference implementations ran in true fp32. On the CPU `tf32` changes nothing (a CUDA feature);
`channels_last_3d` is a layout, but its kernels round differently (about 1e-6 after one step, then amplified by
training), so the same config with and without it gives different numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def set_tf32(enabled: bool) -> dict[str, bool]:
    """Allow (or forbid) TF32 in cuDNN convolutions and CUDA matmuls; returns the values read back from torch."""
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled
    return tf32_state()


def tf32_state() -> dict[str, bool]:
    """torch's current TF32 switches, as recorded in run_info.json."""
    return {
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
    }


def memory_format(channels_last: bool) -> torch.memory_format:
    """`torch.channels_last_3d` when asked for, else `torch.preserve_format` (tensors keep their layout, as before
    the switch existed)."""
    return torch.channels_last_3d if channels_last else torch.preserve_format


def to_memory_format(modules: Iterable[nn.Module], channels_last: bool) -> None:
    """Put every network's 5-D parameters and buffers in the layout (in place: optimisers keep their parameters)."""
    if not channels_last:
        return
    for module in modules:
        module.to(memory_format=torch.channels_last_3d)
