"""The device the check ran on: name, memory, driver, torch, CUDA and cuDNN versions (n/a without CUDA)."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import torch

from harness.gpucheck.settings import NO_CUDA


def driver_version() -> str:
    """The NVIDIA driver version as nvidia-smi reports it ("unknown" when it cannot be asked)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (nvidia-smi did not answer)"
    return out.strip().splitlines()[0] if out.strip() else "unknown (nvidia-smi printed nothing)"


def device_record(device: torch.device) -> dict[str, Any]:
    """What the report's device table shows."""
    record: dict[str, Any] = {
        "type": device.type,
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda or "none (CPU build of torch)",
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
    }
    if device.type != "cuda":
        return {
            **record,
            "name": NO_CUDA,
            "memory_gib": NO_CUDA,
            "driver": NO_CUDA,
            "cudnn": NO_CUDA,
            "compute_capability": NO_CUDA,
        }
    props = torch.cuda.get_device_properties(device)
    return {
        **record,
        "name": props.name,
        "memory_gib": props.total_memory / 2**30,
        "driver": driver_version(),
        "cudnn": torch.backends.cudnn.version(),
        "compute_capability": f"{props.major}.{props.minor}",
    }
