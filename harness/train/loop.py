"""The single training loop: one stage of a run (a method's pre-training stage or the main training, each a
`StageSpec`) with its data, optimiser, LR schedule, logging, checkpoints and resume (docs/architecture.md). The run
folder's files are `harness.run.folder`'s, checkpoints and the hand-off between stages `harness.train.checkpoint`'s,
optimisation `harness.train.optim`'s.

Resume is exact on CPU: augmentation randomness is a pure function of (seed, iteration, batch slot), the batch plan is
regenerated from the seed and skipped to the resumed iteration, and torch's RNG state (dropout, noise) is restored
from the checkpoint together with the weights and the optimiser state.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from harness import provenance
from harness.config import RunConfig, sha256_of
from harness.data.dataset import PatchDataset, batch_plan, loader_options, make_loader, stage_plan
from harness.data.prepared import PreparedData
from harness.data.splits import RunSplit, run_split, val_cases
from harness.io import write_json_atomic
from harness.method import Method, Progress, StageSpec
from harness.method.build import build_method, stage_spec
from harness.numerics.precision import memory_format, set_tf32, to_memory_format
from harness.run.code import code_identity
from harness.run.folder import StageFiles
from harness.run.identity import Identity, stage_config_sha256
from harness.run.jobs import JobStopped, StopRequest
from harness.train.checkpoint import init_from_previous_stage, resume, save_atomic, save_checkpoint, truncate_log
from harness.train.monitor import Monitor
from harness.train.optim import Optimisation, backward_and_step, compile_networks, make_optimisation
from harness.train.seeding import seed_everything
from harness.train.tensorboard import TrainBoard

logger = logging.getLogger(__name__)

#: The command that trains (a run's main training and each pre-training stage): its code is a training job's code.
TRAIN_ENTRY = "harness.train.commands:cmd_train"


@dataclass(frozen=True)
class Bookkeeping:
    """How a training job reports and saves itself: never part of its identity (the numbers do not depend on it;
    `compute.*` in config, `resources` of the train rule so that changing them reruns nothing)."""

    log_every: int = 10
    """Training-log (JSONL, TensorBoard) period in iterations."""
    checkpoint_every: int = 1000
    """Resume-checkpoint period in iterations (a stop request writes one too)."""
    loader_workers: int = 0
    """Data-loader worker processes; the batches do not depend on it (harness.data.dataset)."""

    def __post_init__(self) -> None:
        if min(self.log_every, self.checkpoint_every) < 1 or self.loader_workers < 0:
            raise ValueError(f"log_every and checkpoint_every must be >= 1 and loader_workers >= 0: {self}")


def _train_ids(cfg: RunConfig, data: PreparedData) -> list[str]:
    if len(data.train_ids) != cfg.data.n_train:
        raise ValueError(
            f"{data.root / 'train.list'} has {len(data.train_ids)} IDs but data.n_train is {cfg.data.n_train}"
        )
    return list(data.train_ids)


def split_of(cfg: RunConfig, data: PreparedData) -> RunSplit:
    """The run's labeled, unlabeled and validation cases (`harness.data.splits`): by default the first N of
    train.list labeled, the rest unlabeled, no validation case."""
    train_ids, v = _train_ids(cfg, data), cfg.data.val
    val = val_cases(train_ids, count=v.count, seed=v.seed, ids=v.ids, after=v.after) if v.count or v.ids else []
    return run_split(train_ids, cfg.n_labeled, val=tuple(val), labeled=cfg.data.labeled_subset, seed=cfg.seed)


def stage_cases(spec: StageSpec, split: RunSplit) -> tuple[list[str], list[str]]:
    """(labeled, unlabeled) case IDs a stage reads: "images" every training image without its label, "labeled" the
    labeled cases, "labeled+unlabeled" those plus the unlabeled ones (images only). Never a test or validation
    case."""
    if spec.data == "images":
        return [], [*split.labeled, *split.unlabeled]
    if spec.data == "labeled":
        return list(split.labeled), []
    return list(split.labeled), list(split.unlabeled)


def training_data(cfg: RunConfig, method: Method, data: PreparedData, spec: StageSpec) -> tuple[PatchDataset, int, int]:
    """Load the stage's labeled cases (image + label) and unlabeled ones (image only: their labels never enter
    memory); every file is checked against the data's manifest (`PreparedData`)."""
    labeled_ids, unlabeled_ids = stage_cases(spec, split_of(cfg, data))
    labeled = [data.load(i, with_label=True) for i in labeled_ids]
    unlabeled = [data.load(i, with_label=False)[0] for i in unlabeled_ids]
    dataset = stage_dataset(cfg, method, labeled, unlabeled)
    logger.info("data: %d labeled, %d unlabeled cases from %s", len(labeled), len(unlabeled), data.root)
    return dataset, len(labeled), len(unlabeled)


def stage_dataset(cfg: RunConfig, method: Method, labeled: list[tuple[Any, Any]], unlabeled: list[Any]) -> PatchDataset:
    """The patches a stage of `cfg`'s run trains on: its patch size, augmentation and seed, the method's label
    transforms and case IDs (also what `harness.gpucheck` measures)."""
    return PatchDataset(
        labeled,
        unlabeled,
        patch_size=cfg.data.patch_size,
        augment_mode=cfg.data.augment,
        seed=cfg.seed,
        label_transforms=method.label_transforms(),
        with_case_id=method.needs_case_id,
    )


def make_monitor(cfg: RunConfig, data: PreparedData, folder: Path, device: torch.device) -> Monitor:
    """The main training's evaluations (`cfg.selection`): the validation cases (selection `val`) and the test cases
    (the selection audit), with their labels; none for the default protocol."""
    sel = cfg.selection
    val = split_of(cfg, data).val if sel.mode == "val" else ()
    test = data.test_ids if sel.audit_every else ()
    val_cases_ = [(c, *data.load(c, with_label=True)) for c in val]
    test_cases = [(c, *data.load(c, with_label=True)) for c in test]
    return Monitor(cfg, folder, val_cases_, test_cases, device)


def make_plan(spec: StageSpec, n_l: int, n_u: int, seed: int, start_it: int) -> Iterator[list[Any]]:
    """Sample keys of the stage from `start_it` on: two streams (labeled + unlabeled), or `batch_volumes` cases ×
    `views` (labeled cases, or every image as unlabeled samples)."""
    if spec.data == "labeled+unlabeled":
        return batch_plan(n_l, n_u, spec.batch_volumes, spec.unlabeled_volumes, seed, start_it, spec.iterations)
    kind, n = ("u", n_u) if spec.data == "images" else ("l", n_l)
    return stage_plan(n, kind, spec.batch_volumes, spec.views, seed, start_it, spec.iterations)


def train(
    cfg: RunConfig,
    run_dir: Path,
    *,
    device: torch.device,
    bookkeeping: Bookkeeping = Bookkeeping(),
    stop_after: int | None = None,
    stage: str | None = None,
    stop: StopRequest | None = None,
    previous_model: Path | None = None,
) -> dict[str, Any]:
    """Train one run (or one pre-training stage of it); resume from its checkpoint_last.pt if it exists; write
    model.pt and run_info.json last.

    Args:
        cfg: the validated run configuration.
        run_dir: the run's folder (created if missing); a stage works in `<run_dir>/<stage>/`.
        device: where the networks live (with `cfg.threads` torch intra-op threads).
        bookkeeping: logging and checkpoint periods, loader workers (none of them changes a number).
        stop_after: stop after this many iterations without writing the final outputs (simulates a crash in tests).
        stage: a pre-training stage of the method (`Method.STAGES`), or None for the main training. Every job but
            the first stage starts from the previous stage's model.pt.
        stop: a signal-driven stop request (`harness.run.jobs.StopRequest`): when set, the loop writes a
            checkpoint after the current iteration and raises `JobStopped`.
        previous_model: the previous stage's model.pt when it is not in `run_dir` (a shared stage, trained in the run
            folder of the smallest labeled count; `harness.run.stages`).

    Returns:
        The run-info record (also written to run_info.json when training completes).
    """
    files = StageFiles.of(run_dir, stage)
    files.folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    data = PreparedData.open(cfg.data.root, cfg.data.format)
    code = code_identity(TRAIN_ENTRY, cfg.base_method)
    p, spec = cfg.protocol, stage_spec(cfg, stage)
    seeds = seed_everything(cfg.seed, deterministic=p.deterministic)
    precision = {"tf32": p.tf32, **set_tf32(p.tf32), "channels_last": p.channels_last}
    method = build_method(cfg, device, stage)
    shared = method.stage is not None and method.stage.shared
    identity = Identity(stage_config_sha256(cfg, stage, shared), code.sha256, data.manifest_sha256, cfg.threads)
    to_memory_format(method.modules().values(), p.channels_last)
    started_from = init_from_previous_stage(cfg, Path(run_dir), method, stage, data.manifest_sha256, previous_model)
    dataset, n_l, n_u = training_data(cfg, method, data, spec)
    optim = make_optimisation(method, spec, p.amp, device)
    start_it, extra = resume(files, identity, method, optim)
    monitor = make_monitor(cfg, data, files.folder, device) if stage is None else None
    if monitor is not None:
        monitor.load_state(extra, start_it)
    if p.compile:
        compile_networks(method)
    truncate_log(files.log, start_it)
    plan = make_plan(spec, n_l, n_u, cfg.seed, start_it)
    workers, book = bookkeeping.loader_workers, bookkeeping
    cuda, layout = device.type == "cuda", memory_format(p.channels_last)
    loader = make_loader(dataset, plan, num_workers=workers, seed=cfg.seed, cuda=cuda)
    t0, last_logs, n_it = time.time(), {}, spec.iterations
    stage_label = f" stage {stage}" if stage else ""
    bar = tqdm(
        total=n_it,
        initial=start_it,
        desc=f"{cfg.method}{stage_label} {cfg.dataset} n={cfg.n_labeled}",
        mininterval=2.0,
        unit="it",
    )
    board = TrainBoard(files.folder, start_it, optim.optimizers)  # event files beside the log, truncated alike
    with files.log.open("a") as log, board, optim.precision.kernels():
        for it, batch in zip(range(start_it, n_it), loader, strict=False):
            on_device = batch.to(device, non_blocking=cuda, memory_format=layout)
            last_logs = run_step(method, optim, on_device, Progress(it, n_it, spec.lr_at(it)))
            if (it + 1) % book.log_every == 0 or it + 1 == n_it:
                record = {"it": it, "lr": spec.lr_at(it), **last_logs}
                log.write(json.dumps(record) + "\n")
                log.flush()
                board.log(record)
            if monitor is not None and monitor.active:
                monitor.step(method, it + 1, last=it + 1 == n_it)
            extra = monitor.state() if monitor is not None else None
            if (it + 1) % book.checkpoint_every == 0 or it + 1 == n_it:
                save_checkpoint(files, it + 1, identity, method, optim, extra)
            bar.update(1)
            bar.set_postfix(loss=f"{last_logs.get('loss', float('nan')):.4f}", refresh=False)
            if stop is not None and stop.requested and it + 1 < n_it:
                bar.close()
                save_checkpoint(files, it + 1, identity, method, optim, extra)
                raise JobStopped(
                    f"{stop.reason}: stopped after iteration {it + 1} of {n_it}; {files.checkpoint} holds it and "
                    "a rerun resumes from it (with the numbers of an uninterrupted run)"
                )
            if stop_after is not None and it + 1 >= stop_after:
                bar.close()
                return {"stopped_at": it + 1}
    bar.close()
    split = split_of(cfg, data)
    selected = monitor.selected() if monitor is not None else None
    if selected is not None:  # selection `val`: the best validation snapshot is the run's model
        method.load_state_dict(selected["state"])
    return finish(
        files,
        cfg,
        method,
        device,
        identity,
        {
            "code": code.as_dict(),
            "split": split.as_dict(),
            "split_sha256": sha256_of(split.as_dict()),
            "selection": selection_record(cfg, selected, n_it) if stage is None else None,
            "stage": stage,
            "iterations": n_it,
            "wall_time_s": time.time() - t0,
            "resumed_from": start_it,
            "previous_stage_model_sha256": started_from,
            "final_logs": last_logs,
            "loader_workers": workers,
            "amp": p.amp,
            "compile": p.compile,
            **precision,
            "loader_options": loader_options(workers, cuda),
            "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            **seeds,
        },
    )


def selection_record(cfg: RunConfig, selected: dict[str, Any] | None, n_it: int) -> dict[str, Any]:
    """What run_info.json says of the reported checkpoint: the mode, its iteration and validation Dice, and the
    evaluation settings of the training job."""
    sel = cfg.selection
    record = {
        "mode": sel.mode,
        "iteration": n_it,
        "val_dice": None,
        "val_every": sel.val_every,
        "audit_every": sel.audit_every,
    }
    if selected is not None:
        record |= {"iteration": selected["iteration"], "val_dice": selected["val_dice"]}
    return record


def run_step(method: Method, optim: Optimisation, batch: Any, progress: Progress) -> dict[str, float]:
    """One optimiser step: set the LR, compute the losses (under autocast if AMP), backward, step, post-step hook."""
    for opt in optim.optimizers.values():
        for group in opt.param_groups:
            group["lr"] = progress.lr
    method.train()
    with optim.precision.autocast():
        out = method.stage_step(batch, progress)
    backward_and_step(out.loss, optim.optimizers, optim.scaler)
    method.after_optimizer_step(progress)
    total = sum(v.item() for v in out.loss.values()) if isinstance(out.loss, dict) else out.loss.item()
    return {"loss": total, **out.logs}


def finish(
    files: StageFiles, cfg: RunConfig, method: Method, device: torch.device, identity: Identity, extra: dict
) -> dict[str, Any]:
    """Write model.pt (the method's state and its identity, for evaluation) and then run_info.json (provenance,
    with the sha256 of the model file that predictions record), both atomically."""
    weights = {"method": cfg.method, "version": method.VERSION, **identity.as_dict(), "state": method.state_dict()}
    save_atomic(weights, files.model)
    info = provenance.collect(
        config=cfg.to_dict(),
        config_sha256=identity.config_sha256,
        code_sha256=identity.code_sha256,
        data_manifest_sha256=identity.data_sha256,
        threads=identity.threads,
        model_sha256=provenance.file_sha256(files.model),
        method=cfg.method,
        method_version=method.VERSION,
        **provenance.device_info(device),
        **extra,
    )
    write_json_atomic(files.info, info)
    logger.info("finished %s: model %s", files.folder, files.model)
    return info
