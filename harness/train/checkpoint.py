"""A training job's checkpoints, its model file and the hand-off between pre-training stages.

A checkpoint carries the job's `Identity` (`harness.run.identity`: config, code, data and threads). `resume`
continues only from a checkpoint whose identity matches, so a job rerun because its parameters, its code, its data or
its thread count changed starts from scratch (the old checkpoint is kept aside, renamed). An unreadable checkpoint
(truncated, or holding objects that `torch.load(weights_only=True)` refuses) is set aside too, never loaded.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from harness.config import RunConfig, sha256_of
from harness.io import atomic_path
from harness.method import Method
from harness.method.build import UnreadableWeights, load_weights
from harness.provenance import file_sha256
from harness.run.folder import StageFiles
from harness.run.identity import Identity, stage_config_sha256
from harness.run.lineage import LineageError
from harness.run.stages import previous_stage
from harness.train.optim import Optimisation
from harness.train.seeding import rng_state, set_rng_state

logger = logging.getLogger(__name__)


def init_from_previous_stage(
    cfg: RunConfig, run_dir: Path, method: Method, stage: str | None, data_sha256: str, path: Path | None = None
) -> str | None:
    """Load the previous stage's model.pt (hash-checked) into `method` (the hand-off between stage jobs); `path`
    overrides `<run_dir>/<previous stage>/model.pt` (a shared stage lives in another labeled count's run folder).

    Returns the sha256 of the model file it started from (None for the first stage / a method without stages).
    """
    previous = previous_stage(method.stage_names(), stage)
    if previous is None:
        return None
    path = Path(path) if path is not None else StageFiles.of(run_dir, previous).model
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run stage {previous!r} of this run first (`--stage {previous}`)")
    state = load_weights(path)
    if state["config_sha256"] != stage_config_sha256(cfg, previous, method.stage_named(previous).shared):
        raise LineageError(f"{path} was trained with another configuration; rerun stage {previous!r}")
    if state.get("data_sha256") != data_sha256:
        raise LineageError(
            f"{path} was trained on another version of the data (manifest.json); rerun stage {previous!r}"
        )
    method.start_from(state["state"])
    logger.info("initialised from stage %s (%s)", previous, path)
    return file_sha256(path)


def save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(
    files: StageFiles, next_it: int, identity: Identity, method: Method, optim: Optimisation, extra: Any = None
) -> None:
    """Atomically write checkpoint_last.pt; `identity` is what a resume must match; `extra` is returned by `resume`
    (the selection's best snapshot, `harness.train.monitor`)."""
    state = {
        "extra": extra,
        "next_it": next_it,
        **identity.as_dict(),
        "method": method.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in optim.optimizers.items()},
        "scaler": optim.scaler.state_dict(),
        "rng": rng_state(),
    }
    save_atomic(state, files.checkpoint)


def set_aside(path: Path, tag: str) -> Path:
    """Rename `path` to `<stem>_<tag>.pt` beside it (never overwriting an earlier one); returns the new path."""
    target = path.with_name(f"{path.stem.removesuffix('_last')}_{tag}.pt")
    if target.exists():
        target = target.with_name(f"{target.stem}_{time.strftime('%Y%m%dT%H%M%S')}.pt")
    path.replace(target)
    return target


def resume(files: StageFiles, identity: Identity, method: Method, optim: Optimisation) -> tuple[int, Any]:
    """Load `checkpoint_last.pt` if present and return the iteration to continue from (0 if none) and the checkpoint's
    `extra` (None if none).

    A checkpoint whose identity (config, code, data or threads) differs from this job's is moved aside as
    `checkpoint_stale_<hash>.pt`, an unreadable one as `checkpoint_unreadable.pt`, and training starts from scratch:
    Snakemake reruns a job when its parameters, its code or its data change, and such a rerun must not pick up the
    old run's weights. Starting over gives the numbers of an uninterrupted run (resume is exact).
    """
    if not files.checkpoint.exists():
        return 0, None
    try:
        state = load_weights(files.checkpoint)
    except UnreadableWeights as err:
        moved = set_aside(files.checkpoint, "unreadable")
        logger.error(
            "%s cannot be loaded (%s); it was moved to %s and is not used: training restarts from iteration 0 "
            "(the numbers equal an uninterrupted run's). Delete %s if you do not need it.",
            files.checkpoint,
            err.reason,
            moved,
            moved,
        )
        return 0, None
    changed = identity.differs(state)
    if changed:
        saved = [state.get(k) for k in identity.as_dict()]
        moved = set_aside(files.checkpoint, f"stale_{sha256_of(saved)[:12]}")
        logger.warning(
            "%s belongs to another %s; moved to %s, training from scratch", files.checkpoint, "/".join(changed), moved
        )
        return 0, None
    method.load_state_dict(state["method"])
    for k, opt in optim.optimizers.items():
        opt.load_state_dict(state["optimizers"][k])
    if state.get("scaler"):
        optim.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    logger.info("resumed from %s at iteration %d", files.checkpoint, state["next_it"])
    return int(state["next_it"]), state.get("extra")


def truncate_log(path: Path, start_it: int) -> None:
    """Drop log lines of iterations ≥ start_it (written before a crash, recomputed after resume)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["it"] < start_it]
    path.write_text("".join(line + "\n" for line in keep))
