"""TensorBoard event files beside train_log.jsonl: the same tags, steps and values as the log, for a run and a
pre-training stage, after a resume (each step once) and after a restart from scratch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import SessionLog
from test_loop import run_config

from harness.method.build import resolve_run
from harness.run.folder import RunId
from harness.train.loop import Bookkeeping, train
from harness.train.tensorboard import STEP_TIME_TAG, TrainBoard, event_files
from harness.workflow.grid import cell_params

BOOK = Bookkeeping(log_every=1, checkpoint_every=2)  # bookkeeping: never part of a run's identity

CPU = torch.device("cpu")


def read_events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per scalar tag, as TensorBoard shows them (later files purge the steps they rewrite)."""
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def as_stored(value: float) -> float:
    return float(np.float32(value))  # TensorBoard stores scalars as float32


def assert_events_mirror_the_log(folder: Path) -> dict[str, list[tuple[int, float]]]:
    lines, events = read_log(folder), read_events(folder)
    keys = {k for line in lines for k in line} - {"it"}
    lr_tags = {tag for tag in events if tag.startswith("lr/")}
    assert lines and lr_tags
    assert set(events) == keys | lr_tags | {STEP_TIME_TAG}
    for key in keys:
        assert events[key] == [(line["it"], as_stored(line[key])) for line in lines], key
    for tag in lr_tags:  # every optimiser group runs at the logged LR
        assert events[tag] == [(line["it"], as_stored(line["lr"])) for line in lines], tag
    assert [step for step, _ in events[STEP_TIME_TAG]] == [line["it"] for line in lines]
    assert all(seconds > 0 for _, seconds in events[STEP_TIME_TAG])
    return events


def test_events_mirror_the_training_log(tiny_dataset, tmp_path):
    train(run_config(tiny_dataset), tmp_path, device=CPU, bookkeeping=BOOK)
    events = assert_events_mirror_the_log(tmp_path)
    assert {tag for tag in events if tag.startswith("lr")} == {"lr", "lr/main"}
    assert [step for step, _ in events["loss"]] == list(range(6))
    assert len(event_files(tmp_path)) == 1


def test_resumed_run_shows_each_step_once_with_the_uninterrupted_values(tiny_dataset, tmp_path):
    cfg = run_config(tiny_dataset)
    train(cfg, tmp_path / "full", device=CPU, bookkeeping=BOOK)
    train(
        cfg, tmp_path / "crash", device=CPU, bookkeeping=BOOK, stop_after=5
    )  # logged iterations 0-4, checkpoint after 4
    assert train(cfg, tmp_path / "crash", device=CPU, bookkeeping=BOOK)["resumed_from"] == 4
    resumed = assert_events_mirror_the_log(tmp_path / "crash")
    full = read_events(tmp_path / "full")
    assert {t: v for t, v in resumed.items() if t != STEP_TIME_TAG} == {
        t: v for t, v in full.items() if t != STEP_TIME_TAG
    }
    # on disk: one file per start; the second opens with TensorBoard's restart marker at the resumed step
    first, second = event_files(tmp_path / "crash")
    assert sorted({e.step for e in EventFileLoader(str(first)).Load() if e.HasField("summary")}) == [0, 1, 2, 3, 4]
    restart = [e for e in EventFileLoader(str(second)).Load() if e.HasField("session_log")]
    assert [(e.step, e.session_log.status) for e in restart] == [(4, SessionLog.START)]


def test_a_restart_from_scratch_deletes_the_old_curves(tiny_dataset, tmp_path):
    train(run_config(tiny_dataset), tmp_path, device=CPU, bookkeeping=BOOK, stop_after=2)
    assert (
        train(run_config(tiny_dataset, iterations=8), tmp_path, device=CPU, bookkeeping=BOOK)["resumed_from"] == 0
    )  # other config
    events = assert_events_mirror_the_log(tmp_path)
    assert [step for step, _ in events["loss"]] == list(range(8)) and len(event_files(tmp_path)) == 1


def test_a_pretraining_stage_writes_its_own_events(tiny_dataset, tmp_path):
    config = {
        "datasets": {"tiny": {"labeled": [2]}},
        "data": {"tiny": {"source": "synthetic", "n_train": 4, "patch_size": [16, 16, 16], "augment": "rotflip_crop"}},
        "protocol": {
            "iterations": 2,
            "n_filters": 2,
        },
        "method_overrides": {"sup_local_contrast": {"stage1": {"iterations": 3, "batch_volumes": 2}}},
    }
    params = cell_params(config, RunId("tiny", "sup_local_contrast", 2, 1))
    params["data"]["root"] = str(tiny_dataset)
    train(resolve_run(params), tmp_path, device=CPU, bookkeeping=BOOK, stage="stage1")
    events = assert_events_mirror_the_log(tmp_path / "stage1")
    assert [step for step, _ in events["loss"]] == [0, 1, 2]
    assert event_files(tmp_path) == []  # the run folder's own curves are the main training's


def test_writing_the_events_changes_no_number(tiny_dataset, tmp_path, monkeypatch):
    cfg = run_config(tiny_dataset)
    train(cfg, tmp_path / "with", device=CPU, bookkeeping=BOOK)
    monkeypatch.setattr(TrainBoard, "log", lambda self, record: None)
    train(cfg, tmp_path / "without", device=CPU, bookkeeping=BOOK)
    assert event_files(tmp_path / "without") == [] and len(event_files(tmp_path / "with")) == 1
    assert read_log(tmp_path / "with") == read_log(tmp_path / "without")
    saved = [torch.load(tmp_path / run / "model.pt", weights_only=True)["state"]["net"] for run in ("with", "without")]
    assert all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])
