"""TensorBoard event files beside a stage's `train_log.jsonl`, for watching curves while a run trains.

Every line the loop writes to train_log.jsonl is also written as scalars at step `it` (the line's iteration, the same
number as in the JSONL): each of its keys (`loss`, `lr`, the method's `loss/...`, `w/...`), plus `lr/<optimiser>`
(`lr/<optimiser>/<group>` for an optimiser with several parameter groups) read from the optimisers, and `time/s_per_it`,
the wall-clock seconds per iteration since the previous line (the first line after a (re)start includes the start-up).
The events are flushed with every line, as the JSONL is. train_log.jsonl stays the source of the report's figures;
nothing here feeds back into training (no randomness is drawn, no tensor touched).

A (re)start mirrors `harness.train.checkpoint.truncate_log`:
- from iteration 0 (a new run, or a checkpoint set aside): the folder's old event files are deleted, as the JSONL is
  emptied;
- resumed at iteration k: a new event file whose first record is TensorBoard's restart marker at step k (a
  `SessionLog.START`, SummaryWriter's `purge_step`), so TensorBoard drops the steps ≥ k of the earlier files (logged
  after the checkpoint, before the crash) and shows each step once, from the file that wrote it last. The earlier
  files stay on disk; a resumed run's folder holds one event file per (re)start.

The event file is created at the first line logged (a job resumed at its last iteration writes none). TensorBoard
reads a folder's files in name order and the name starts with the second the file was created in, so a file is never
created in the same second as the newest one already there (a resume right after a stop waits for the next second).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

#: The names SummaryWriter gives its event files: events.out.tfevents.<10-digit second>.<host>.<pid>.<n>
EVENT_GLOB = "events.out.tfevents.*"
STEP_TIME_TAG = "time/s_per_it"


def event_files(log_dir: Path) -> list[Path]:
    """The folder's TensorBoard event files, in the order TensorBoard reads them (by name)."""
    return sorted(Path(log_dir).glob(EVENT_GLOB))


def lr_tags(optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, tuple[str, int]]:
    """Tag → (optimiser, parameter group) of every LR curve: `lr/<optimiser>`, or `lr/<optimiser>/<group>` when the
    optimiser has several groups."""
    tags = {}
    for name, opt in optimizers.items():
        groups = range(len(opt.param_groups))
        tags |= {f"lr/{name}" if len(groups) == 1 else f"lr/{name}/{i}": (name, i) for i in groups}
    return tags


def _created_second(path: Path) -> int | None:
    parts = path.name.split(".")
    return int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else None


def _wait_for_a_later_name(log_dir: Path) -> None:
    """Sleep (< 1 s) while the current second is that of the newest event file, so a new file sorts after it."""
    seconds = [s for s in map(_created_second, event_files(log_dir)) if s is not None]
    if not seconds:
        return
    newest = max(seconds)
    if newest > math.floor(time.time()):
        logger.warning(
            "%s holds an event file from a later second than now (clock changed?): TensorBoard reads it after the "
            "new one, so its steps may hide the resumed ones",
            log_dir,
        )
        return
    while math.floor(time.time()) <= newest:
        time.sleep(0.05)


class TrainBoard:
    """The event files of one stage folder: `log(record)` after each train_log.jsonl line; a context manager."""

    def __init__(self, log_dir: Path, start_it: int, optimizers: Mapping[str, torch.optim.Optimizer]) -> None:
        self.log_dir, self.start_it, self.optimizers = Path(log_dir), start_it, optimizers
        self._writer: Any = None
        self._last_it, self._last_time = start_it - 1, time.perf_counter()
        if start_it == 0:
            for path in event_files(self.log_dir):
                path.unlink()

    def __enter__(self) -> TrainBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self, record: Mapping[str, Any]) -> None:
        """Write one train_log.jsonl line (`{"it": ..., "lr": ..., **logs}`) and the LRs and seconds per iteration."""
        it, now = int(record["it"]), time.perf_counter()
        writer = self._open()
        for key, value in record.items():
            if key != "it" and isinstance(value, int | float):
                writer.add_scalar(key, float(value), it)
        for tag, (name, group) in lr_tags(self.optimizers).items():
            writer.add_scalar(tag, float(self.optimizers[name].param_groups[group]["lr"]), it)
        writer.add_scalar(STEP_TIME_TAG, (now - self._last_time) / max(it - self._last_it, 1), it)
        writer.flush()
        self._last_it, self._last_time = it, now

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _open(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            _wait_for_a_later_name(self.log_dir)
            purge_step = self.start_it if self.start_it > 0 else None
            self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)
        return self._writer
