"""The `gpu-check` subcommand: its flags (registered by `harness.cli` in one line) and what it runs (docs/gpu.md)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `python -m harness gpu-check`."""
    p = sub.add_parser("gpu-check", help="measure steps, loader, sliding window and k runs per GPU (docs/gpu.md)")
    p.add_argument("--quick", action="store_true", help="tiny sizes on the CPU in well under a minute (CI)")
    p.add_argument("--out", default="results/gpu_check", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--grid", default="config/config.yaml", help="the grid whose wall time is projected")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cuda, cuda:1, cpu (--quick: cpu)")
    p.add_argument("--budget-s", type=float, default=None, help="time budget of the measurements (default 420)")
    p.add_argument("--data", default=None, help="a prepared LA root: also compare GPU and CPU losses of supervised")
    p.add_argument("--data-iterations", type=int, default=300, help="iterations of the --data comparison")
    p.set_defaults(func=cmd_gpu_check)


def cmd_gpu_check(a: argparse.Namespace) -> None:
    import dataclasses

    import torch

    from harness.gpucheck.projection import load_grid
    from harness.gpucheck.report import render, write_report
    from harness.gpucheck.run import run_check
    from harness.gpucheck.settings import full_settings, quick_settings

    settings = quick_settings() if a.quick else full_settings()
    if a.budget_s is not None:
        settings = dataclasses.replace(settings, budget_s=a.budget_s)
    device = torch.device("cpu" if a.quick else _device(a.device))
    if device.type != "cuda" and not a.quick:
        logger.warning("no CUDA device: the full check runs on the CPU (slow); its GPU figures read n/a (no CUDA)")
    report = run_check(settings, device, load_grid(Path(a.grid)), a.grid)
    if a.data:
        report["data_check"] = data_check(Path(a.data), Path(a.out) / "data_check", device, a.data_iterations)
    json_path, md_path = write_report(report, Path(a.out))
    print(render(report))
    logger.info("wrote %s and %s", json_path, md_path)


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def data_check(root: Path, out_dir: Path, device, iterations: int) -> dict:
    """The --data comparison of GPU and CPU losses (`harness.gpucheck.compare`); n/a without CUDA."""
    import torch

    from harness.gpucheck.compare import compare_config, compare_devices
    from harness.gpucheck.settings import NO_CUDA

    if device.type != "cuda":
        return {"status": NO_CUDA}
    cfg = compare_config(root, iterations=iterations)
    return {"status": "ok", **compare_devices(cfg, out_dir, (torch.device("cpu"), device))}
