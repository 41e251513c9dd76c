"""The single training loop: data, optimisers, LR schedule, logging and resume (DESIGN.md §2); the run folder's files
and checkpoints are in `harness.run_files`.

Resume is exact on CPU: augmentation randomness is a pure function of (seed, iteration, batch slot), the batch plan is
regenerated from the seed and skipped to the resumed iteration, and torch's RNG state (dropout, noise) is restored
from the checkpoint together with the weights and the optimiser state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from harness import provenance
from harness.config import RunConfig, code_sha256, method_config
from harness.data.dataset import PatchDataset, batch_plan, make_loader, stage_plan
from harness.data.prepared import PreparedData
from harness.data.splits import labeled_subset
from harness.job_control import JobStopped, StopRequest
from harness.lineage import LineageError
from harness.method import Method, Progress, StageSpec
from harness.nets import build_net
from harness.registry import get_method
from harness.run_files import (
    Identity,
    RunFiles,
    init_from_previous_stage,
    load_weights,
    resume,
    save_atomic,
    save_checkpoint,
    stage_dir,
    stage_sha256,
    truncate_log,
)
from harness.seeding import seed_everything

logger = logging.getLogger(__name__)

#: The project root (holds harness/ and methods/): the code hash of a run covers files below it.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def build_method(cfg: RunConfig, device: torch.device, stage: str | None = None) -> Method:
    """The run's method with its networks (built with the protocol's V-Net width) on `device`, set to `stage`."""
    method_cls = get_method(cfg.method)
    method = method_cls(method_config(cfg), partial(build_net, n_filters=cfg.protocol.n_filters), device)
    method.set_stage(stage)
    return method


def _train_ids(cfg: RunConfig, data: PreparedData) -> list[str]:
    if len(data.train_ids) != cfg.data.n_train:
        raise ValueError(
            f"{data.root / 'train.list'} has {len(data.train_ids)} IDs but data.n_train is {cfg.data.n_train}"
        )
    return list(data.train_ids)


def training_data(
    cfg: RunConfig, method: Method, data: PreparedData, spec: StageSpec | None = None
) -> tuple[PatchDataset, int, int]:
    """Load the labeled cases (image + label) and the unlabeled ones (image only: their labels never enter memory).

    A pre-training stage with `spec.data == "images"` gets every training image as an unlabeled case (no label is
    read); with "labeled", the first N labeled cases only. Test cases are never read here (only train.list), and
    every file is checked against the data's manifest (`PreparedData`).
    """
    labeled_ids, unlabeled_ids = labeled_subset(_train_ids(cfg, data), cfg.n_labeled)
    if spec is not None and spec.data == "images":
        labeled_ids, unlabeled_ids = [], labeled_ids + unlabeled_ids
    elif not method.needs_unlabeled or spec is not None:
        unlabeled_ids = []
    labeled = [data.load(i, with_label=True) for i in labeled_ids]
    unlabeled = [data.load(i, with_label=False)[0] for i in unlabeled_ids]
    transforms = method.label_transforms() if hasattr(method, "label_transforms") else None
    dataset = PatchDataset(
        labeled,
        unlabeled,
        patch_size=cfg.data.patch_size,
        augment_mode=cfg.data.augment,
        seed=cfg.seed,
        label_transforms=transforms,
        with_case_id=method.needs_case_id,
    )
    logger.info("data: %d labeled, %d unlabeled cases from %s", len(labeled), len(unlabeled), data.root)
    return dataset, len(labeled), len(unlabeled)


@dataclass
class Optimisation:
    """The optimisers (one per group, in declaration order), the gradient scaler and the precision settings."""

    optimizers: dict[str, torch.optim.Optimizer]
    scaler: torch.amp.GradScaler
    precision: Precision


def make_optimisation(
    cfg: RunConfig, method: Method, device: torch.device, spec: StageSpec | None = None
) -> Optimisation:
    """SGD of the protocol per optimiser group, or the optimiser a pre-training stage asks for."""
    p = cfg.protocol

    def make(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if spec is None:
            return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
        if spec.optimizer == "adam":
            return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
        return torch.optim.SGD(params, lr=spec.lr, momentum=p.momentum, weight_decay=spec.weight_decay)

    optimizers = {group: make(params) for group, params in method.optim_groups().items()}
    precision = Precision(p.amp, device)
    return Optimisation(optimizers, precision.scaler(), precision)


@dataclass(frozen=True)
class Precision:
    """Mixed-precision settings of a run (`protocol.amp`): an autocast context and a gradient scaler (fp16 only)."""

    amp: str
    device: torch.device

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def kernels(self) -> contextlib.AbstractContextManager:
        """Wraps the whole training loop (forward and backward). Mixed precision on the CPU runs without oneDNN: with
        torch 2.13 its bf16 conv3d backward intermittently returned NaN weight gradients (about 1 in 20 three-step
        runs of a tiny V-Net; never with oneDNN off), apparently reading memory it had not written."""
        if self.amp == "off" or self.device.type != "cpu":
            return contextlib.nullcontext()
        return _onednn_disabled()

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")


@contextlib.contextmanager
def _onednn_disabled() -> Iterator[None]:
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def split_threads(threads: int, device: torch.device, max_workers: int) -> tuple[int, int]:
    """(torch intra-op threads, loader workers) for a job given `threads` cores, so jobs never oversubscribe.

    On a GPU the main process only feeds the device: one intra-op thread, the other cores run loader workers. On the
    CPU the network needs the cores: at most one worker (if there are 2+ cores), the rest intra-op threads.
    """
    threads = max(threads, 1)
    if device.type == "cuda":
        workers = min(max_workers, threads - 1)
        return 1, workers
    workers = min(max_workers, 1 if threads >= 2 else 0)
    return threads - workers, workers


def compile_networks(method: Method) -> None:
    """torch.compile each network's forward in place (state_dict keys stay those of the plain modules)."""
    for module in method.modules().values():
        module.forward = torch.compile(module.forward)


def backward_and_step(
    loss: Any, optimizers: dict[str, torch.optim.Optimizer], scaler: torch.amp.GradScaler | None = None
) -> None:
    """Backward each group's loss and step the optimisers in declaration order (DESIGN.md §2).

    With an enabled `scaler` (fp16), losses are scaled before backward and steps skip non-finite gradients.
    """
    losses = loss if isinstance(loss, dict) else {"main": loss}
    if set(losses) != set(optimizers):
        raise KeyError(f"training_step returned losses for {sorted(losses)}, optimiser groups are {sorted(optimizers)}")
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    for group, opt in optimizers.items():
        if not torch.isfinite(losses[group]):
            raise FloatingPointError(f"non-finite loss {losses[group].item()} in optimiser group {group!r}")
        scaler.scale(losses[group]).backward()
        scaler.step(opt)
    scaler.update()


@dataclass(frozen=True)
class Phase:
    """What one training job runs: the main training (spec None) or one pre-training stage of the method."""

    iterations: int
    lr_at: Callable[[int], float]
    spec: StageSpec | None


def make_phase(cfg: RunConfig, method: Method, stage: str | None) -> Phase:
    if stage is None:
        return Phase(cfg.protocol.iterations, cfg.protocol.lr_at, None)
    spec = method.stage_spec(stage)
    return Phase(spec.iterations, spec.lr_at, spec)


def make_plan(cfg: RunConfig, phase: Phase, n_l: int, n_u: int, start_it: int) -> Iterator[list[Any]]:
    """Sample keys from `start_it` on: the protocol's two-stream/labeled-only plan, or a stage's multi-view plan."""
    p = cfg.protocol
    spec = phase.spec
    if spec is not None:
        kind, n = ("u", n_u) if spec.data == "images" else ("l", n_l)
        return stage_plan(n, kind, spec.batch_volumes, spec.views, cfg.seed, start_it, spec.iterations)
    unlabeled_bs = p.batch_size - p.labeled_bs if n_u else 0
    return batch_plan(n_l, n_u, p.labeled_bs, unlabeled_bs, cfg.seed, start_it, p.iterations)


def train(
    cfg: RunConfig,
    run_dir: Path,
    *,
    device: torch.device,
    workers: int | None = None,
    stop_after: int | None = None,
    stage: str | None = None,
    stop: StopRequest | None = None,
) -> dict[str, Any]:
    """Train one run (or one pre-training stage of it); resume from its checkpoint_last.pt if it exists; write
    model.pt and run_info.json last.

    Args:
        cfg: the validated run configuration.
        run_dir: the run's folder (created if missing); a stage works in `<run_dir>/<stage>/`.
        device: where the networks live.
        workers: data-loader worker processes (None: protocol.num_workers). Batches do not depend on it.
        stop_after: stop after this many iterations without writing the final outputs (simulates a crash in tests).
        stage: a pre-training stage of the method (`Method.STAGES`), or None for the main training. Every job but
            the first stage starts from the previous stage's model.pt.
        stop: a signal-driven stop request (`harness.job_control.StopRequest`): when set, the loop writes a
            checkpoint after the current iteration and raises `JobStopped`.

    Returns:
        The run-info record (also written to run_info.json when training completes).
    """
    files = RunFiles(stage_dir(run_dir, stage))
    files.run_dir.mkdir(parents=True, exist_ok=True)
    data = PreparedData.open(cfg.data.root, cfg.data.format)
    identity = Identity(stage_sha256(cfg, stage), code_sha256(PROJECT_ROOT, cfg.method), data.manifest_sha256)
    p = cfg.protocol
    seeds = seed_everything(cfg.seed, deterministic=p.deterministic)
    method = build_method(cfg, device, stage)
    phase = make_phase(cfg, method, stage)
    started_from = init_from_previous_stage(cfg, Path(run_dir), method, stage, data.manifest_sha256)
    dataset, n_l, n_u = training_data(cfg, method, data, phase.spec)
    optim = make_optimisation(cfg, method, device, phase.spec)
    start_it = resume(files, identity, method, optim)
    if p.compile:
        compile_networks(method)
    truncate_log(files.log, start_it)
    plan = make_plan(cfg, phase, n_l, n_u, start_it)
    workers = p.num_workers if workers is None else workers
    loader = make_loader(dataset, plan, num_workers=workers, seed=cfg.seed)
    t0, last_logs, n_it = time.time(), {}, phase.iterations
    stage_label = f" stage {stage}" if stage else ""
    bar = tqdm(
        total=n_it,
        initial=start_it,
        desc=f"{cfg.method}{stage_label} {cfg.dataset} n={cfg.n_labeled}",
        mininterval=2.0,
        unit="it",
    )
    with files.log.open("a") as log, optim.precision.kernels():
        for it, batch in zip(range(start_it, n_it), loader, strict=False):
            last_logs = run_step(method, optim, batch.to(device), Progress(it, n_it, phase.lr_at(it)))
            if (it + 1) % p.log_every == 0 or it + 1 == n_it:
                log.write(json.dumps({"it": it, "lr": phase.lr_at(it), **last_logs}) + "\n")
                log.flush()
            if (it + 1) % p.checkpoint_every == 0 or it + 1 == n_it:
                save_checkpoint(files, it + 1, identity, method, optim)
            bar.update(1)
            bar.set_postfix(loss=f"{last_logs.get('loss', float('nan')):.4f}", refresh=False)
            if stop is not None and stop.requested and it + 1 < n_it:
                bar.close()
                save_checkpoint(files, it + 1, identity, method, optim)
                raise JobStopped(
                    f"{stop.reason}: stopped after iteration {it + 1} of {n_it}; {files.checkpoint} holds it and "
                    "a rerun resumes from it (with the numbers of an uninterrupted run)"
                )
            if stop_after is not None and it + 1 >= stop_after:
                bar.close()
                return {"stopped_at": it + 1}
    bar.close()
    return finish(
        files,
        cfg,
        method,
        device,
        identity,
        {
            "stage": stage,
            "wall_time_s": time.time() - t0,
            "resumed_from": start_it,
            "previous_stage_model_sha256": started_from,
            "final_logs": last_logs,
            "loader_workers": workers,
            "amp": p.amp,
            "compile": p.compile,
            "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            **seeds,
        },
    )


def run_step(method: Method, optim: Optimisation, batch: Any, progress: Progress) -> dict[str, float]:
    """One optimiser step: set the LR, compute the losses (under autocast if AMP), backward, step, post-step hook."""
    for opt in optim.optimizers.values():
        for group in opt.param_groups:
            group["lr"] = progress.lr
    method.train()
    with optim.precision.autocast():
        out = method.training_step(batch, progress)
    backward_and_step(out.loss, optim.optimizers, optim.scaler)
    method.after_optimizer_step(progress)
    total = sum(v.item() for v in out.loss.values()) if isinstance(out.loss, dict) else out.loss.item()
    return {"loss": total, **out.logs}


def finish(
    files: RunFiles, cfg: RunConfig, method: Method, device: torch.device, identity: Identity, extra: dict
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
        model_sha256=provenance.file_sha256(files.model),
        method=cfg.method,
        method_version=method.VERSION,
        **provenance.device_info(device),
        **extra,
    )
    tmp = files.info.with_name(files.info.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, default=str))
    tmp.replace(files.info)
    logger.info("finished %s: model %s", files.run_dir, files.model)
    return info


def load_trained(cfg: RunConfig, model_path: Path, device: torch.device, data_sha256: str | None = None) -> Method:
    """The method of a finished run with its trained weights (for evaluation).

    Refuses weights trained with another configuration, or (given `data_sha256`) on another version of the data.
    """
    state = load_weights(model_path)
    if state["config_sha256"] != cfg.sha256():
        raise LineageError(f"{model_path} was trained with another configuration than {cfg.dataset}/{cfg.method}")
    if data_sha256 is not None and state.get("data_sha256") != data_sha256:
        raise LineageError(
            f"{model_path} was trained on another version of {cfg.data.root} (its manifest.json changed since): "
            f"retrain it (`snakemake --forcerun {model_path}` plus your usual options)"
        )
    method = build_method(cfg, device)
    method.load_state_dict(state["state"])
    return method
