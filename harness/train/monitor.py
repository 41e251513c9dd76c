"""What a training job evaluates on the way (`harness.config.SelectionConfig`): the validation cases, whose mean Dice
selects the checkpoint a run reports when `protocol.selection` is `val`, and the test cases for the test-set selection
audit, which nothing reads but the audit table (docs/protocol.md, "Checkpoint selection").

Each evaluation is the `predict` rule's sliding window (`harness.evaluate.inference.sliding_window`, the run's window
and stride, the same windows per pass) and Dice of `harness.evaluate.metrics`, on the method's evaluation network in
eval mode under `torch.inference_mode()`: no gradient, no random draw, no BatchNorm statistic is touched, and the
modules' train/eval modes are restored, so a training with evaluations ends with bit-identical weights (tested). The
per-case scores go to `val_curve.csv` / `test_curve.csv` (iteration, case, dice; iteration = optimiser steps done),
outputs of the training job rewritten whole after each evaluation; they and the best validation snapshot travel in
the checkpoint, so a resumed run (whose curve files Snakemake deleted) writes and selects what an uninterrupted one
would.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.config import RunConfig
from harness.evaluate.inference import sliding_window
from harness.evaluate.overlap import case_dice
from harness.io import write_text_atomic
from harness.method import Method
from harness.numerics.precision import memory_format
from harness.run.folder import TEST_CURVE, VAL_CURVE

logger = logging.getLogger(__name__)

CURVE_COLUMNS = ("iteration", "case", "dice")


@contextlib.contextmanager
def as_in_predict(method: Method) -> Iterator[None]:
    """Evaluate as the `predict` job will: eager forwards (`protocol.compile` replaced each network's forward by a
    compiled one, whose kernels may round differently) and oneDNN at torch's default (training with CPU mixed
    precision turns it off, `harness.train.optim.Precision.kernels`). Both are restored afterwards."""
    compiled = {m: m.__dict__.pop("forward") for m in method.modules().values() if "forward" in m.__dict__}
    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = True
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = onednn
        for module, forward in compiled.items():
            module.forward = forward


class Monitor:
    """The evaluations of one main training (none for a pre-training stage or the default protocol).

    Args:
        cfg: the run's configuration (`cfg.selection`, the patch size as the window).
        folder: the run folder (curves beside train_log.jsonl).
        val: (case, image, label) of the validation cases.
        test: (case, image, label) of the test cases (the audit only; empty when it is off).
        device: where the network runs.
    """

    def __init__(self, cfg: RunConfig, folder: Path, val: list[tuple], test: list[tuple], device: torch.device) -> None:
        self.cfg, self.sel, self.device = cfg, cfg.selection, device
        self.val, self.test = val, test
        self.curves = {"val": Path(folder) / VAL_CURVE, "test": Path(folder) / TEST_CURVE}
        self.rows: dict[str, list[tuple]] = {"val": [], "test": []}
        self.best: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        return bool(self.val or self.test)

    def due(self, done: int, last: bool) -> tuple[bool, bool]:
        """(evaluate the validation cases, score the test cases) after `done` optimiser steps."""
        val = bool(self.val) and (last or done % self.sel.val_every == 0)
        test = bool(self.test) and (last or val or done % self.sel.audit_every == 0)
        return val, test

    def step(self, method: Method, done: int, last: bool) -> None:
        """Run the evaluations due after `done` steps; keep the best validation snapshot (first of ties)."""
        val, test = self.due(done, last)
        if val:
            scores = self._score(method, self.val, "val", done)
            mean = float(np.mean(scores))
            if self.best is None or mean > self.best["val_dice"]:
                self.best = {"iteration": done, "val_dice": mean, "state": _cpu_state(method)}
            logger.info(
                "validation Dice after %d iterations: %.4f (best %.4f at %d)",
                done,
                mean,
                self.best["val_dice"],
                self.best["iteration"],
            )
        if test:
            self._score(method, self.test, "test", done)

    def _score(self, method: Method, cases: list[tuple], kind: str, done: int) -> list[float]:
        net = method.eval_network()
        modes = {m: m.training for m in [*method.modules().values(), net]}
        net.eval()
        num_classes = 1 if method.output_kind == "sigmoid" else 2
        layout = memory_format(self.cfg.protocol.channels_last)

        def predict(x: torch.Tensor) -> torch.Tensor:
            return net(x.to(self.device, memory_format=layout)).float().cpu()

        def dice(image: np.ndarray, label: np.ndarray) -> float:
            window, stride, per_pass = self.cfg.data.patch_size, self.sel.stride, self.sel.windows_per_batch
            pred, _ = sliding_window(predict, image, window, stride, num_classes, windows_per_batch=per_pass)
            return case_dice(pred, label)

        try:
            with as_in_predict(method):
                scores = [dice(image, label) for _, image, label in cases]
        finally:
            for module, training in modes.items():
                module.train(training)
        self.rows[kind] += [(done, case, score) for (case, _, _), score in zip(cases, scores, strict=True)]
        write_curve(self.curves[kind], self.rows[kind])
        return scores

    def state(self) -> dict[str, Any] | None:
        """What a checkpoint must carry for a resume to write and select as an uninterrupted run would."""
        return {"best": self.best, "rows": self.rows} if self.active else None

    def load_state(self, state: dict[str, Any] | None, start_it: int) -> None:
        """Continue from a checkpoint's state (None: from scratch); rewrite the curves of the evaluations before it."""
        state = state or {"best": None, "rows": {"val": [], "test": []}}
        self.best = state["best"]
        self.rows = {kind: [tuple(r) for r in rows if r[0] <= start_it] for kind, rows in state["rows"].items()}
        for kind, path in self.curves.items():
            if self.rows[kind] or path.exists():
                write_curve(path, self.rows[kind])

    def selected(self) -> dict[str, Any] | None:
        """The best validation snapshot (selection `val`), or None (the last checkpoint is reported)."""
        return self.best if self.sel.mode == "val" else None


def _cpu_state(method: Method) -> dict[str, dict[str, torch.Tensor]]:
    """A copy of the method's state on the CPU (the snapshot a later improvement replaces)."""
    return {k: {n: t.detach().to("cpu", copy=True) for n, t in sd.items()} for k, sd in method.state_dict().items()}


def write_curve(path: Path, rows: list[tuple]) -> None:
    """The curve file: a header, then one row per evaluated case (the float's repr: read back, the same number)."""
    lines = [",".join(CURVE_COLUMNS), *(f"{it},{case},{float(dice)!r}" for it, case, dice in rows)]
    write_text_atomic(path, "\n".join(lines) + "\n")
