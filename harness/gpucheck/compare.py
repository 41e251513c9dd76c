"""`gpu-check --data <LA root>`: `supervised` trained a few hundred iterations on real LA on the GPU and on the CPU
with the same seed (the real training loop, `harness.train.loop.train`), and the two loss curves compared.

The runs start from the same weights (built on the CPU, then moved) and see the same batches (the batch plan and
augmentation are NumPy-seeded), but they cannot agree step for step: dropout draws its masks from each device's own
generator, and float sums round differently. So the comparison is of the loss averaged over windows of `window`
iterations: every window's mean on the second device must lie within `rtol` (relative) of the first's. The default,
10 % over 50 iterations, is a heuristic bound for "the same training"; a broken device path (wrong precision, a bad
kernel) moves the curve far more.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from harness.config import RunConfig
from harness.data.prepared import PreparedData
from harness.method.build import resolve_run
from harness.train.loop import Bookkeeping, train

#: Iterations per compared window and the relative tolerance of a window's mean loss (module docstring).
WINDOW, RTOL = 50, 0.10


def compare_config(
    root: Path,
    *,
    iterations: int,
    seed: int = 1337,
    n_labeled: int = 8,
    patch: tuple[int, int, int] = (112, 112, 80),
    n_filters: int = 16,
    data_format: str = "la_h5",
) -> RunConfig:
    """`supervised` on the prepared dataset at `root` with the protocol's defaults, `iterations` steps, every loss
    logged, no loader workers (both devices get identical batches in the same process layout)."""
    n_train = len(PreparedData.open(str(root), data_format).train_ids)
    data = {
        "root": str(root),
        "format": data_format,
        "n_train": n_train,
        "patch_size": list(patch),
        "augment": "rotflip_crop",
    }
    protocol = {"iterations": iterations, "n_filters": n_filters, "lr_step": max(iterations, 1)}
    params = {
        "dataset": "la",
        "method": "supervised",
        "n_labeled": n_labeled,
        "seed": seed,
        "data": data,
        "protocol": protocol,
    }
    return resolve_run(params)


def train_losses(cfg: RunConfig, run_dir: Path, device: torch.device) -> list[float]:
    """Train `cfg` in `run_dir` on `device` (the real loop) and return its per-iteration losses."""
    train(cfg, run_dir, device=device, bookkeeping=Bookkeeping(log_every=1, checkpoint_every=cfg.protocol.iterations))
    return [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def window_means(losses: list[float], window: int) -> list[float]:
    """Mean loss of consecutive windows of `window` iterations (a last, shorter window included)."""
    return [sum(chunk) / len(chunk) for chunk in (losses[i : i + window] for i in range(0, len(losses), window))]


def compare_losses(reference: list[float], other: list[float], *, window: int = WINDOW, rtol: float = RTOL) -> dict:
    """Whether `other`'s loss curve matches `reference`'s: every window mean within `rtol` of the reference's."""
    if len(reference) != len(other) or not reference:
        raise ValueError(f"loss curves of different or zero length: {len(reference)} and {len(other)} iterations")
    ref, oth = window_means(reference, window), window_means(other, window)
    rel = [abs(b - a) / abs(a) if a else abs(b - a) for a, b in zip(ref, oth, strict=True)]
    return {
        "window": window,
        "rtol": rtol,
        "reference_means": ref,
        "other_means": oth,
        "relative_differences": rel,
        "max_relative_difference": max(rel),
        "passed": max(rel) <= rtol,
    }


def compare_devices(
    cfg: RunConfig,
    out_dir: Path,
    devices: tuple[torch.device, torch.device],
    *,
    window: int = WINDOW,
    rtol: float = RTOL,
) -> dict[str, Any]:
    """Train `cfg` on both devices (run folders `<out_dir>/<device>/`) and compare their losses, the first device's
    curve being the reference."""
    curves = [train_losses(cfg, out_dir / str(d).replace(":", "_"), d) for d in devices]
    result = compare_losses(curves[0], curves[1], window=window, rtol=rtol)
    return {
        "devices": [str(d) for d in devices],
        "iterations": cfg.protocol.iterations,
        "seed": cfg.seed,
        "data": cfg.data.root,
        **result,
    }
