"""The files of a run folder: paths, atomic writes, checkpoints and the hand-off between pre-training stages.

A checkpoint carries the config hash of its job (`stage_sha256`) and the code hash of the run's numeric source files
(`harness.config.code_sha256`); `resume` continues only from a checkpoint whose two hashes match, so a job rerun
because its parameters or its code changed starts from scratch (the old checkpoint is kept aside, renamed).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness.config import RunConfig, sha256_of
from harness.method import Method
from harness.seeding import rng_state, set_rng_state

if TYPE_CHECKING:
    from harness.loop import Optimisation

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint_last.pt"
MODEL = "model.pt"
TRAIN_LOG = "train_log.jsonl"
RUN_INFO = "run_info.json"


@dataclass
class RunFiles:
    """The files of one run directory."""

    run_dir: Path

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def model(self) -> Path:
        return self.run_dir / MODEL

    @property
    def log(self) -> Path:
        return self.run_dir / TRAIN_LOG

    @property
    def info(self) -> Path:
        return self.run_dir / RUN_INFO


def stage_dir(run_dir: Path, stage: str | None) -> Path:
    """Folder of a pre-training stage (`<run>/<stage>/`), or the run folder itself for the main training."""
    return Path(run_dir) if stage is None else Path(run_dir) / stage


def stage_sha256(cfg: RunConfig, stage: str | None) -> str:
    """The hash a job's checkpoints and model carry: the run config's, combined with the stage name for a stage."""
    return cfg.sha256() if stage is None else sha256_of({"run": cfg.sha256(), "stage": stage})


def previous_stage(method: Method, stage: str | None) -> str | None:
    """The stage whose model.pt initialises `stage` (None: the first stage, or a method without stages)."""
    if stage is not None and stage not in method.STAGES:
        raise ValueError(f"method {method.name} has no stage {stage!r}; its stages: {list(method.STAGES)}")
    index = len(method.STAGES) if stage is None else method.STAGES.index(stage)
    return method.STAGES[index - 1] if index > 0 else None


def init_from_previous_stage(cfg: RunConfig, run_dir: Path, method: Method, stage: str | None) -> None:
    """Load the previous stage's model.pt (hash-checked) into `method` (the hand-off between stage jobs)."""
    previous = previous_stage(method, stage)
    if previous is None:
        return
    path = RunFiles(stage_dir(run_dir, previous)).model
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run stage {previous!r} of this run first (`--stage {previous}`)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["config_sha256"] != stage_sha256(cfg, previous):
        raise RuntimeError(f"{path} was trained with another configuration; rerun stage {previous!r}")
    method.init_from_stage(previous, state["state"])
    logger.info("initialised from stage %s (%s)", previous, path)


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def save_checkpoint(
    files: RunFiles, next_it: int, hashes: tuple[str, str], method: Method, optim: Optimisation
) -> None:
    """Atomically write checkpoint_last.pt; `hashes` = (config hash, code hash) that a resume must match."""
    state = {
        "next_it": next_it,
        "config_sha256": hashes[0],
        "code_sha256": hashes[1],
        "method": method.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in optim.optimizers.items()},
        "scaler": optim.scaler.state_dict(),
        "rng": rng_state(),
    }
    save_atomic(state, files.checkpoint)


def resume(files: RunFiles, hashes: tuple[str, str], method: Method, optim: Optimisation) -> int:
    """Load `checkpoint_last.pt` if present and return the iteration to continue from (0 if none).

    A checkpoint whose config hash or code hash (`hashes`) differs from this run's is moved aside as
    `checkpoint_stale_<hash>.pt` and training starts from scratch: Snakemake reruns a job when its parameters or its
    numeric source files change, and such a rerun must not pick up the old run's weights.
    """
    if not files.checkpoint.exists():
        return 0
    state = torch.load(files.checkpoint, map_location="cpu", weights_only=True)
    saved = (state["config_sha256"], state.get("code_sha256"))
    if saved != tuple(hashes):
        reason = "configuration" if saved[0] != hashes[0] else "code version (numeric source files)"
        stale = files.checkpoint.with_name(f"checkpoint_stale_{sha256_of(list(saved))[:12]}.pt")
        files.checkpoint.replace(stale)
        logger.warning("%s belongs to another %s; moved to %s, training from scratch", files.checkpoint, reason, stale)
        return 0
    method.load_state_dict(state["method"])
    for k, opt in optim.optimizers.items():
        opt.load_state_dict(state["optimizers"][k])
    if state.get("scaler"):
        optim.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    logger.info("resumed from %s at iteration %d", files.checkpoint, state["next_it"])
    return int(state["next_it"])


def truncate_log(path: Path, start_it: int) -> None:
    """Drop log lines of iterations ≥ start_it (written before a crash, recomputed after resume)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["it"] < start_it]
    path.write_text("".join(line + "\n" for line in keep))
