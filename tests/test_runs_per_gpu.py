"""compute.runs_per_gpu reaches workflow/scripts/gpu_slot.sh of the GPU jobs, and changing it reruns nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from workflow_tools import REPO, RUN, env, grid_args
from workflow_tools import snakemake as run

from harness.run.jobs import RUNS_PER_GPU_ENV, export_runs_per_gpu

CONFIG = REPO / ".test" / "config" / "config.yaml"


def test_export_sets_the_variable_gpu_slot_reads():
    environ: dict[str, str] = {}
    export_runs_per_gpu(3, environ)
    assert environ == {RUNS_PER_GPU_ENV: "3"}
    assert RUNS_PER_GPU_ENV in (REPO / "workflow" / "scripts" / "gpu_slot.sh").read_text()


def snakemake(workdir: Path, runs_per_gpu: int, *extra: str, **variables: str) -> subprocess.CompletedProcess:
    """The CI grid with `compute.runs_per_gpu` set, in `workdir`, with the given environment variables."""
    config = workdir / f"runs_per_gpu_{runs_per_gpu}.yaml"
    config.write_text(CONFIG.read_text() + f"compute:\n  runs_per_gpu: {runs_per_gpu}\n")
    full_env = {k: v for k, v in env().items() if k not in ("CUDA_VISIBLE_DEVICES", RUNS_PER_GPU_ENV)}
    return run(*grid_args(workdir, config, *extra), environ={**full_env, **variables})


@pytest.mark.slow
def test_runs_per_gpu_reaches_the_training_job_and_reruns_nothing(tmp_path):
    fake_gpu = {"HARNESS_GPU_DEVICES": "5", "HARNESS_GPU_LOCK_DIR": str(tmp_path / "locks")}
    snakemake(tmp_path, 2, f"{RUN}/model.pt", **fake_gpu)
    log = (tmp_path / RUN / "logs" / "train.log").read_text()
    assert "gpu_slot: device 5 slot 1 of 2" in log  # the job ran through gpu_slot.sh with two slots per device
    dry = snakemake(tmp_path, 3, f"{RUN}/model.pt", "-n", **fake_gpu)
    assert "Nothing to be done" in dry.stdout + dry.stderr  # where a job runs never changes its results
