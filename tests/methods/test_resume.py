"""Every registered method through the real loop: exact resume after an interrupt, and the batch composition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.method.build import resolve_run
from harness.method.registry import get_method, list_methods
from harness.run.folder import RunId
from harness.train.loop import Bookkeeping, train
from harness.workflow.grid import cell_params

BOOK = Bookkeeping(log_every=1, checkpoint_every=2)  # bookkeeping: never part of a run's identity

CPU = torch.device("cpu")
#: Pre-training stages short enough for tests (2000 iterations each by default).
SHORT_STAGES = {"stage1": {"iterations": 3, "batch_volumes": 2}, "stage2": {"iterations": 3, "stride": 4}}
SHORT_BCP = {"pretrain": {"iterations": 3}}


def run_config(root: Path, method: str, *, iterations: int = 6):
    config = {
        "datasets": {"tiny": {"labeled": [2]}},
        "data": {"tiny": {"source": "synthetic", "n_train": 4, "patch_size": [16, 16, 16], "augment": "rotflip_crop"}},
        "protocol": {"iterations": iterations, "n_filters": 2, "lr_step": 4},
        "method_overrides": {"sup_local_contrast": SHORT_STAGES, "bcp": SHORT_BCP},
    }
    params = cell_params(config, RunId("tiny", method, 2, 1))
    params["data"]["root"] = str(root)
    return resolve_run(params)


def pretrain(cfg, run_dir: Path) -> None:
    """Run the method's pre-training stages (if any) so that the main training can start."""
    for stage in get_method(cfg.method).stage_names():
        train(cfg, run_dir, device=CPU, bookkeeping=BOOK, stage=stage)


def log_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def final_state(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(run_dir / "model.pt", weights_only=True)["state"]


@pytest.mark.parametrize("name", list_methods())
def test_resume_after_interrupt_equals_uninterrupted_run(name, tiny_dataset, tmp_path):
    cfg = run_config(tiny_dataset, name)
    pretrain(cfg, tmp_path / "full")
    pretrain(cfg, tmp_path / "crash")
    train(cfg, tmp_path / "full", device=CPU, bookkeeping=BOOK)
    # interrupted after iteration 5: the last checkpoint is after iteration 4; iteration 5 is recomputed on resume
    assert train(cfg, tmp_path / "crash", device=CPU, bookkeeping=BOOK, stop_after=5) == {"stopped_at": 5}
    assert train(cfg, tmp_path / "crash", device=CPU, bookkeeping=BOOK)["resumed_from"] == 4
    full, resumed = log_lines(tmp_path / "full"), log_lines(tmp_path / "crash")
    assert len(full) == 6 and resumed == full  # every logged float, including the ramp weights and the losses
    state_full, state_resumed = final_state(tmp_path / "full"), final_state(tmp_path / "crash")
    assert state_full.keys() == state_resumed.keys()
    for module, tensors in state_full.items():  # the teacher (and its BatchNorm buffers) too
        for key, value in tensors.items():
            assert torch.equal(value, state_resumed[module][key]), f"{module}.{key}"


@pytest.mark.parametrize("name", [m for m in list_methods() if get_method(m).needs_unlabeled])
def test_semi_supervised_batches_hold_two_labeled_then_two_unlabeled(name, tiny_dataset, tmp_path, monkeypatch):
    cls = get_method(name)
    seen = []
    original = cls.training_step

    def recording(self, batch, progress):
        seen.append(
            (batch.n_labeled, batch.x.shape[0], batch.y.shape[0], {k: v.shape for k, v in batch.extras.items()})
        )
        return original(self, batch, progress)

    monkeypatch.setattr(cls, "training_step", recording)
    cfg = run_config(tiny_dataset, name, iterations=3)
    pretrain(cfg, tmp_path / "r")  # a semi-supervised method with pre-training stages (bcp) needs them first
    train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK)
    assert len(seen) == 3
    for n_labeled, batch_size, n_labels, extras in seen:
        assert (n_labeled, batch_size, n_labels) == (2, 4, 2)
        assert all(shape == (2, 16, 16, 16) for name, shape in extras.items() if name != "case_id")
        assert extras.get("case_id", (4,)) == (4,)  # one case ID per sample (methods with needs_case_id)
