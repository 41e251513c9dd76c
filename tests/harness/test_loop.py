"""The training loop: determinism, exact resume after a crash, checkpoints, logs and provenance."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from harness.config import ConfigError
from harness.method.build import load_trained, resolve_run
from harness.run.folder import RunId
from harness.train.loop import Bookkeeping, train
from harness.train.optim import Precision
from harness.workflow.grid import cell_params

BOOK = Bookkeeping(log_every=1, checkpoint_every=2)  # bookkeeping: never part of a run's identity

CPU = torch.device("cpu")


def run_config(root: Path, *, iterations: int = 6, seed: int = 1, n_labeled: int = 2, threads: int = 1):
    config = {
        "datasets": {"tiny": {"labeled": [n_labeled]}},
        "data": {"tiny": {"source": "synthetic", "n_train": 4, "patch_size": [16, 16, 16], "augment": "rotflip_crop"}},
        "protocol": {"iterations": iterations, "n_filters": 2, "lr_step": 4},
        "compute": {"train_threads": threads},
    }
    params = cell_params(config, RunId("tiny", "supervised", n_labeled, seed))
    params["data"]["root"] = str(root)
    return resolve_run(params)


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)["state"]["net"]


def test_same_seed_same_losses_and_weights(tiny_dataset, tmp_path):
    cfg = run_config(tiny_dataset)
    train(cfg, tmp_path / "a", device=CPU, bookkeeping=BOOK)
    train(cfg, tmp_path / "b", device=CPU, bookkeeping=BOOK)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert len(losses(tmp_path / "a")) == 6
    for k, v in weights(tmp_path / "a").items():
        assert torch.equal(v, weights(tmp_path / "b")[k]), k
    other = run_config(tiny_dataset, seed=2)
    train(other, tmp_path / "c", device=CPU, bookkeeping=BOOK)
    assert losses(tmp_path / "c") != losses(tmp_path / "a")


def test_resume_after_crash_equals_uninterrupted_run(tiny_dataset, tmp_path):
    cfg = run_config(tiny_dataset)
    train(cfg, tmp_path / "full", device=CPU, bookkeeping=BOOK)
    # crash after iteration 5: the last checkpoint is after iteration 4, iteration 5's log line is stale
    assert train(cfg, tmp_path / "crash", device=CPU, bookkeeping=BOOK, stop_after=5) == {"stopped_at": 5}
    assert not (tmp_path / "crash" / "model.pt").exists() and not (tmp_path / "crash" / "run_info.json").exists()
    assert len(losses(tmp_path / "crash")) == 5
    info = train(cfg, tmp_path / "crash", device=CPU, bookkeeping=BOOK)
    assert info["resumed_from"] == 4
    assert losses(tmp_path / "crash") == losses(tmp_path / "full")
    for k, v in weights(tmp_path / "full").items():
        assert torch.equal(v, weights(tmp_path / "crash")[k]), k


def test_checkpoint_of_another_config_is_set_aside_not_resumed(tiny_dataset, tmp_path):
    train(run_config(tiny_dataset), tmp_path / "r", device=CPU, bookkeeping=BOOK, stop_after=2)
    info = train(run_config(tiny_dataset, iterations=8), tmp_path / "r", device=CPU, bookkeeping=BOOK)
    assert info["resumed_from"] == 0
    assert len(losses(tmp_path / "r")) == 8  # the stale log lines are gone too
    assert len(list((tmp_path / "r").glob("checkpoint_stale_*.pt"))) == 1
    train(run_config(tiny_dataset, iterations=8), tmp_path / "fresh", device=CPU, bookkeeping=BOOK)
    assert losses(tmp_path / "r") == losses(tmp_path / "fresh")


def test_checkpoint_of_other_code_is_set_aside_not_resumed(tiny_dataset, tmp_path, monkeypatch):
    """A rerun after a file the job imports changed (Snakemake reruns the job) must not finish from the old weights."""
    import harness.train.loop
    from harness.run.code import CodeIdentity, code_identity

    cfg = run_config(tiny_dataset)
    train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK)  # complete: checkpoint_last.pt holds the final iteration
    assert train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK)["resumed_from"] == 6  # same code: nothing to redo
    real = code_identity(harness.train.loop.TRAIN_ENTRY, "supervised")
    edited = CodeIdentity(real.sha256[::-1], real.files)
    monkeypatch.setattr(harness.train.loop, "code_identity", lambda entry, method: edited)
    info = train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK)
    assert info["resumed_from"] == 0 and len(losses(tmp_path / "r")) == 6
    assert len(list((tmp_path / "r").glob("checkpoint_stale_*.pt"))) == 1
    assert info["code_sha256"] == edited.sha256 and info["code"] == edited.as_dict()
    assert "methods/supervised.py" in info["code"]["files"] and "harness/train/loop.py" in info["code"]["files"]


def test_thread_count_is_part_of_the_identity(tiny_dataset, tmp_path):
    """A resume with another thread count would mix two runs' CPU rounding: the checkpoint is set aside, and the
    numbers equal those of an uninterrupted run with the new count."""
    one, two = run_config(tiny_dataset, threads=1), run_config(tiny_dataset, threads=2)
    assert one.sha256() != two.sha256()
    assert train(one, tmp_path / "r", device=CPU, bookkeeping=BOOK, stop_after=4) == {"stopped_at": 4}
    info = train(two, tmp_path / "r", device=CPU, bookkeeping=BOOK)
    assert info["resumed_from"] == 0 and info["threads"] == 2 and info["torch_threads"] == 2
    assert len(list((tmp_path / "r").glob("checkpoint_stale_*.pt"))) == 1
    train(two, tmp_path / "fresh", device=CPU, bookkeeping=BOOK)
    assert losses(tmp_path / "r") == losses(tmp_path / "fresh")


def test_bookkeeping_is_not_part_of_the_identity(tiny_dataset, tmp_path):
    """Other log and checkpoint periods and loader workers: the same run, resumed, with the same numbers."""
    cfg = run_config(tiny_dataset)
    train(cfg, tmp_path / "full", device=CPU, bookkeeping=BOOK)
    other = Bookkeeping(log_every=1, checkpoint_every=3, loader_workers=1)
    assert train(cfg, tmp_path / "r", device=CPU, bookkeeping=other, stop_after=4) == {"stopped_at": 4}
    assert train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK)["resumed_from"] == 3
    assert losses(tmp_path / "r") == losses(tmp_path / "full")


def test_lr_schedule_and_provenance_are_recorded(tiny_dataset, tmp_path):
    cfg = run_config(tiny_dataset)
    info = train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.01] * 4 + [0.001] * 2)  # lr_step 4
    on_disk = json.loads((tmp_path / "r" / "run_info.json").read_text())
    assert on_disk["config_sha256"] == cfg.sha256() == info["config_sha256"]
    assert on_disk["config"] == cfg.to_dict()
    assert on_disk["method_version"] == 1 and on_disk["packages"]["torch"].startswith("2.")
    assert "git_commit" in on_disk and on_disk["device"] == "cpu"


def test_trained_model_loads_for_evaluation(tiny_dataset, tmp_path):
    cfg = run_config(tiny_dataset)
    train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK)
    method = load_trained(cfg, tmp_path / "r" / "model.pt", CPU)
    net = method.eval_network().eval()
    out = net(torch.zeros(1, 1, 16, 16, 16))
    assert out.shape == (1, 2, 16, 16, 16)
    with pytest.raises(RuntimeError, match="another configuration"):
        load_trained(run_config(tiny_dataset, seed=9), tmp_path / "r" / "model.pt", CPU)


def test_missing_train_list_entry_count_is_reported(tiny_dataset, tmp_path):
    cfg = run_config(tiny_dataset)
    bad = resolve_run({**cell_params_for(cfg), "data": {**cfg.to_dict()["data"], "n_train": 5}, "n_labeled": 2})
    with pytest.raises(ValueError, match="train.list has 4 IDs but data.n_train is 5"):
        train(bad, tmp_path / "r", device=CPU, bookkeeping=BOOK)


def cell_params_for(cfg) -> dict:
    d = cfg.to_dict()
    return {
        "dataset": d["dataset"],
        "method": d["method"],
        "n_labeled": d["n_labeled"],
        "seed": d["seed"],
        "data": d["data"],
        "protocol": d["protocol"],
        "method_overrides": d["method_config"],
    }


def amp_config(root: Path, **protocol):
    cfg = run_config(root, iterations=3)
    return dataclasses.replace(cfg, protocol=dataclasses.replace(cfg.protocol, **protocol))


def test_bf16_autocast_trains_on_cpu_and_is_recorded(tiny_dataset, tmp_path):
    info = train(amp_config(tiny_dataset, amp="bf16"), tmp_path / "bf16", device=CPU, bookkeeping=BOOK)
    fp32 = train(amp_config(tiny_dataset), tmp_path / "fp32", device=CPU, bookkeeping=BOOK)
    assert info["amp"] == "bf16" and info["config"]["protocol"]["amp"] == "bf16" and fp32["amp"] == "off"
    assert all(math.isfinite(x) for x in losses(tmp_path / "bf16"))
    # autocast really ran in bf16: the first loss differs from the fp32 run's (same seed, same batch)
    assert losses(tmp_path / "bf16")[0] != losses(tmp_path / "fp32")[0]
    assert losses(tmp_path / "bf16")[0] == pytest.approx(losses(tmp_path / "fp32")[0], rel=0.05)


def test_cpu_mixed_precision_runs_without_onednn_and_restores_it():
    before = torch.backends.mkldnn.enabled
    with Precision("bf16", CPU).kernels():
        assert torch.backends.mkldnn.enabled is False  # oneDNN's bf16 conv3d backward gave NaN gradients
    assert torch.backends.mkldnn.enabled == before
    with Precision("off", CPU).kernels():
        assert torch.backends.mkldnn.enabled == before  # fp32 keeps the default kernels (and their numbers)


def test_precision_contexts():
    assert Precision("off", CPU).scaler().is_enabled() is False
    assert Precision("fp16", CPU).scaler().is_enabled() is True
    with Precision("bf16", CPU).autocast():
        y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert y.dtype == torch.bfloat16


def test_amp_value_is_validated(tiny_dataset):
    with pytest.raises(ConfigError, match="protocol.amp: 'fp8'"):
        amp_config(tiny_dataset, amp="fp8")


@pytest.mark.slow
def test_torch_compile_gives_the_eager_numbers(tiny_dataset, tmp_path):
    # without dropout: compiled kernels draw random numbers differently from eager ones
    def no_dropout(cfg):
        return dataclasses.replace(cfg, method_config={"has_dropout": False})

    eager = train(no_dropout(amp_config(tiny_dataset)), tmp_path / "eager", device=CPU, bookkeeping=BOOK)
    compiled = train(
        no_dropout(amp_config(tiny_dataset, compile=True)), tmp_path / "compiled", device=CPU, bookkeeping=BOOK
    )
    assert compiled["compile"] is True and eager["compile"] is False
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=2e-3)  # kernel rounding
    assert set(weights(tmp_path / "compiled")) == set(weights(tmp_path / "eager"))  # plain state_dict keys


def copy_dataset(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_changed_data_never_resumes_the_old_model(tiny_dataset, tmp_path):
    """Issue 11 §1: a rerun on re-prepared data (another synthetic seed) trains from scratch."""
    from harness.data.synthetic import write_synthetic_la

    root = copy_dataset(tiny_dataset, tmp_path / "data")
    cfg = run_config(root)
    first = train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK)
    assert (
        train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK)["resumed_from"] == 6
    )  # same data: the final checkpoint is resumed
    write_synthetic_la(root, n_train=4, n_test=2, seed=6, shape_xy=((36, 40), (34, 38)), shape_z=20)
    info = train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK)
    assert info["resumed_from"] == 0 and info["data_manifest_sha256"] != first["data_manifest_sha256"]
    [stale] = (tmp_path / "r").glob("checkpoint_stale_*.pt")
    assert torch.load(stale, weights_only=True)["data_sha256"] == first["data_manifest_sha256"]
    fresh = train(run_config(root), tmp_path / "fresh", device=CPU, bookkeeping=BOOK)
    assert losses(tmp_path / "r") == losses(tmp_path / "fresh") and info["model_sha256"] == fresh["model_sha256"]


def test_run_info_names_the_model_file_and_the_data(tiny_dataset, tmp_path):
    from harness.provenance import file_sha256

    info = train(run_config(tiny_dataset), tmp_path / "r", device=CPU, bookkeeping=BOOK)
    assert info["model_sha256"] == file_sha256(tmp_path / "r" / "model.pt")
    assert info["data_manifest_sha256"] == file_sha256(tiny_dataset / "manifest.json")
    saved = torch.load(tmp_path / "r" / "model.pt", weights_only=True)
    assert saved["data_sha256"] == info["data_manifest_sha256"] and saved["code_sha256"] == info["code_sha256"]


@pytest.mark.parametrize("damage", ["truncated", "pickle"])
def test_unreadable_checkpoint_is_set_aside_and_training_restarts(tiny_dataset, tmp_path, damage, caplog):
    import pickle

    cfg = run_config(tiny_dataset)
    train(cfg, tmp_path / "full", device=CPU, bookkeeping=BOOK)
    train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK, stop_after=4)
    checkpoint = tmp_path / "r" / "checkpoint_last.pt"
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    else:  # an object weights_only refuses to unpickle (it could run code)
        checkpoint.write_bytes(pickle.dumps(Path("x")))
    info = train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK)
    assert info["resumed_from"] == 0
    assert (tmp_path / "r" / "checkpoint_unreadable.pt").exists()
    assert f"{checkpoint} cannot be loaded" in caplog.text and "restarts from iteration 0" in caplog.text
    assert losses(tmp_path / "r") == losses(tmp_path / "full")


def test_stop_request_checkpoints_the_current_iteration_and_resume_is_exact(tiny_dataset, tmp_path):
    from harness.run.jobs import JobStopped, StopRequest

    class StopAfter(StopRequest):
        """Asks to stop once `n` log lines were written (as SIGTERM would, mid-run)."""

        def __init__(self, log: Path, n: int) -> None:
            super().__init__()
            self.log, self.n = log, n

        @property
        def requested(self) -> bool:
            if self.log.exists() and len(self.log.read_text().splitlines()) >= self.n:
                self.reason = "SIGTERM"
            return self.reason is not None

    cfg, every_4 = run_config(tiny_dataset, iterations=7), Bookkeeping(log_every=1, checkpoint_every=4)
    train(cfg, tmp_path / "full", device=CPU, bookkeeping=every_4)
    with pytest.raises(JobStopped, match="SIGTERM: stopped after iteration 3 of 7"):
        train(
            cfg, tmp_path / "r", device=CPU, bookkeeping=every_4, stop=StopAfter(tmp_path / "r" / "train_log.jsonl", 3)
        )
    assert torch.load(tmp_path / "r" / "checkpoint_last.pt", weights_only=True)["next_it"] == 3
    assert not (tmp_path / "r" / "model.pt").exists()
    assert train(cfg, tmp_path / "r", device=CPU, bookkeeping=every_4)["resumed_from"] == 3
    assert losses(tmp_path / "r") == losses(tmp_path / "full")
    for k, v in weights(tmp_path / "full").items():
        assert torch.equal(v, weights(tmp_path / "r")[k]), k


def test_poly_and_constant_schedules_hand_values():
    """poly: the reference sets the LR after each step from the step count before it, so steps 0 and 1 run at the
    base LR and step k at lr·(1 − (k − 1)/iterations)^0.9 (SSL4MIS / AD-MT); constant: MC-Net+."""
    from harness.config import ProtocolConfig
    from harness.method.contract import main_stage

    poly = main_stage(ProtocolConfig(iterations=4, lr=0.01, lr_schedule="poly"), needs_unlabeled=True)
    assert [poly.lr_at(k) for k in range(4)] == pytest.approx([0.01, 0.01, 0.01 * 0.75**0.9, 0.01 * 0.5**0.9])
    constant = main_stage(ProtocolConfig(iterations=4, lr=0.01, lr_schedule="constant"), needs_unlabeled=True)
    assert {constant.lr_at(k) for k in range(4)} == {0.01}
    with pytest.raises(ConfigError, match="protocol.lr_schedule: 'cosine'"):
        ProtocolConfig(lr_schedule="cosine")


def selection_config(root: Path, *, mode: str = "last", audit: int = 0, val: dict | None = None, iterations: int = 6):
    config = {
        "datasets": {"tiny": {"labeled": [2]}},
        "data": {
            "tiny": {
                "source": "synthetic",
                "n_train": 4,
                "patch_size": [16, 16, 16],
                "augment": "rotflip_crop",
                "stride": [8, 8, 8],
                **({"val": val} if val else {}),
            }
        },
        "protocol": {"iterations": iterations, "n_filters": 2, "lr_step": 4, "selection": mode, "val_every": 2},
        "report": {"selection_audit": {"every": audit}},
        "eval": {"windows_per_batch": 2},
        "compute": {"train_threads": 1},
    }
    params = cell_params(config, RunId("tiny", "supervised", 2, 1))
    params["data"]["root"] = str(root)
    return resolve_run(params)


def test_the_audit_leaves_the_trained_model_bit_identical(tiny_dataset, tmp_path):
    """Scoring the test cases during training (eval mode, no gradient, no random draw) changes no weight, no loss."""
    plain, audited = selection_config(tiny_dataset), selection_config(tiny_dataset, audit=2)
    train(plain, tmp_path / "plain", device=CPU, bookkeeping=BOOK)
    train(audited, tmp_path / "audited", device=CPU, bookkeeping=BOOK)
    assert losses(tmp_path / "plain") == losses(tmp_path / "audited")
    for k, v in weights(tmp_path / "plain").items():
        assert torch.equal(v, weights(tmp_path / "audited")[k]), k
    rows = (tmp_path / "audited" / "test_curve.csv").read_text().splitlines()
    assert rows[0] == "iteration,case,dice" and {r.split(",")[0] for r in rows[1:]} == {"2", "4", "6"}
    assert not (tmp_path / "plain" / "test_curve.csv").exists()


def test_selection_on_the_validation_split_reports_the_best_snapshot(tiny_dataset, tmp_path, monkeypatch):
    """With validation Dice made known (0.2, 0.9, 0.5 after 2, 4, 6 steps), the model reported is the one after 4
    steps: its weights equal an uninterrupted 4-step run's, and run_info.json says so."""
    import harness.train.monitor

    scores = iter([0.2, 0.9, 0.5])
    monkeypatch.setattr(harness.train.monitor, "case_dice", lambda pred, gt: next(scores))
    cfg = selection_config(tiny_dataset, mode="val", val={"count": 1, "seed": 0})
    info = train(cfg, tmp_path / "val", device=CPU, bookkeeping=BOOK)
    assert info["selection"] == {"mode": "val", "iteration": 4, "val_dice": 0.9, "val_every": 2, "audit_every": 0}
    assert len(info["split"]["val"]) == 1 and not set(info["split"]["val"]) & set(info["split"]["labeled"])
    assert not set(info["split"]["val"]) & set(info["split"]["unlabeled"])
    four = selection_config(tiny_dataset, val={"count": 1, "seed": 0}, iterations=4)  # the same cases, 4 steps
    train(four, tmp_path / "four", device=CPU, bookkeeping=BOOK)
    for k, v in weights(tmp_path / "four").items():
        assert torch.equal(v, weights(tmp_path / "val")[k]), k


def test_the_selection_resumes_as_an_uninterrupted_run(tiny_dataset, tmp_path):
    cfg = selection_config(tiny_dataset, mode="val", val={"count": 1, "seed": 0}, audit=2)
    full = train(cfg, tmp_path / "full", device=CPU, bookkeeping=BOOK)
    assert train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK, stop_after=5) == {"stopped_at": 5}
    resumed = train(cfg, tmp_path / "r", device=CPU, bookkeeping=BOOK)
    assert resumed["resumed_from"] == 4 and resumed["selection"] == full["selection"]
    for name in ("val_curve.csv", "test_curve.csv"):
        assert (tmp_path / "r" / name).read_text() == (tmp_path / "full" / name).read_text(), name
    for k, v in weights(tmp_path / "full").items():
        assert torch.equal(v, weights(tmp_path / "r")[k]), k


def test_evaluations_during_training_run_as_the_predict_job_would():
    """A compiled forward (protocol.compile) and oneDNN off (CPU mixed precision) are set aside while the monitor
    evaluates, so the curves hold the numbers `predict` computes; both come back afterwards."""
    from harness.train.monitor import as_in_predict

    class OneNet:
        def __init__(self):
            self.net = torch.nn.Conv3d(1, 1, 1)

        def modules(self):
            return {"net": self.net}

    method, x = OneNet(), torch.ones(1, 1, 2, 2, 2)
    eager = method.net(x)
    compiled = lambda t: torch.full_like(t, 42.0)  # noqa: E731 — stands for torch.compile's different rounding
    method.net.forward = compiled
    torch.backends.mkldnn.enabled = False
    try:
        with as_in_predict(method):
            assert torch.equal(method.net(x), eager) and torch.backends.mkldnn.enabled
        assert method.net.forward is compiled and not torch.backends.mkldnn.enabled
    finally:
        torch.backends.mkldnn.enabled = True
