"""Provenance written beside every number: git commit, package versions, config hash, device (`run_info.json`)."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import harness

PACKAGES = ("torch", "numpy", "scipy", "h5py", "nibabel", "pandas", "snakemake", "medpy")
REPO = Path(__file__).resolve().parent.parent


def git_info(repo: Path = REPO) -> dict[str, Any]:
    """The commit of the harness checkout and whether it has uncommitted changes ("unknown" outside git)."""

    def run(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=20, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = run("rev-parse", "HEAD") or "unknown"
    dirty = bool(run("status", "--porcelain", "--untracked-files=no")) if commit != "unknown" else None
    return {"git_commit": commit, "git_dirty": dirty}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "harness": harness.__version__}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_info(device: Any) -> dict[str, Any]:
    """The device, and for CUDA the GPU model and CUDA/cuDNN versions (protocol §3.5: every row records them)."""
    import torch

    info: dict[str, Any] = {"device": str(device), "host": platform.node(), "cpu": cpu_model()}
    info["torch_threads"] = torch.get_num_threads()
    if str(device).startswith("cuda"):
        info["gpu_model"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`; the platform's processor string elsewhere): CPU numbers are promised to
    repeat on the same CPU kind only (README, determinism)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect(**extra: Any) -> dict[str, Any]:
    """Git state and package versions plus whatever the caller adds (config, hashes, timings)."""
    return {**git_info(), "packages": package_versions(), **extra}


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
