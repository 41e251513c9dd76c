"""protocol.tf32 / protocol.channels_last and the CUDA loader options: set as configured inside training and
prediction, recorded in run_info.json, and the CPU numbers of the defaults unchanged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import harness.evaluate.predict as predict_module
import harness.train.loop as loop
from harness.data.dataset import Batch, PatchDataset, batch_plan, make_loader
from harness.evaluate.predict import predict_cases
from harness.method.build import resolve_run
from harness.run.folder import RunId
from harness.train.loop import Bookkeeping, train
from harness.workflow.grid import cell_params

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import losses, weights  # noqa: E402

BOOK = Bookkeeping(log_every=1, checkpoint_every=3)  # bookkeeping: never part of a run's identity

CPU = torch.device("cpu")
LAYOUT = torch.channels_last_3d


@pytest.fixture(autouse=True)
def restore_torch_switches():
    """The runs below set torch's process-wide TF32 switches; leave them as found."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def run_config(root: Path, method: str = "supervised", **protocol):
    config = {
        "datasets": {"tiny": {"labeled": [2]}},
        "data": {"tiny": {"source": "synthetic", "n_train": 4, "patch_size": [16, 16, 16], "augment": "rotflip_crop"}},
        "protocol": {"iterations": 3, "n_filters": 2, **protocol},
    }
    params = cell_params(config, RunId("tiny", method, 2, 1))
    params["data"]["root"] = str(root)
    return resolve_run(params)


def spy_on_steps(monkeypatch) -> list[dict]:
    """Record, at every training step, torch's TF32 switches and the layout of the network and the batch."""
    seen: list[dict] = []
    real = loop.run_step

    def spy(method, optim, batch, progress):
        # a 3×3×3 convolution with several input channels: its two layouts have different strides
        conv = next(p for p in method.net.parameters() if p.dim() == 5 and p.shape[1] > 1 and p.shape[2] > 1)
        seen.append(
            {
                "cudnn": torch.backends.cudnn.allow_tf32,
                "matmul": torch.backends.cuda.matmul.allow_tf32,
                "net_cl": conv.is_contiguous(memory_format=LAYOUT) and not conv.is_contiguous(),
                "batch_cl": batch.x.stride(1) == 1,
            }
        )  # one channel: stride 1 only when channels-last
        return real(method, optim, batch, progress)

    monkeypatch.setattr(loop, "run_step", spy)
    return seen


@pytest.mark.parametrize("tf32", [True, False])
def test_switches_are_set_inside_training_and_recorded(tiny_dataset, tmp_path, monkeypatch, tf32):
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = not tf32  # the opposite beforehand
    seen = spy_on_steps(monkeypatch)
    info = train(
        run_config(tiny_dataset, tf32=tf32, channels_last=tf32), tmp_path / "run", device=CPU, bookkeeping=BOOK
    )
    assert len(seen) == 3
    assert all(s == {"cudnn": tf32, "matmul": tf32, "net_cl": tf32, "batch_cl": tf32} for s in seen)
    on_disk = json.loads((tmp_path / "run" / "run_info.json").read_text())
    for record in (info, on_disk):
        assert record["tf32"] is tf32 and record["channels_last"] is tf32
        assert record["cudnn_allow_tf32"] is tf32 and record["cuda_matmul_allow_tf32"] is tf32
        assert record["config"]["protocol"]["tf32"] is tf32
        assert record["loader_options"] == {"pin_memory": False, "persistent_workers": False}  # CPU: no pinning


def test_defaults_and_explicit_defaults_give_bit_identical_cpu_runs(tiny_dataset, tmp_path):
    default = run_config(tiny_dataset, method="dtc")
    explicit = run_config(tiny_dataset, method="dtc", tf32=False, channels_last=False)
    assert default.protocol.tf32 is False and default.protocol.channels_last is False
    train(default, tmp_path / "default", device=CPU, bookkeeping=BOOK)
    with_worker = Bookkeeping(log_every=1, checkpoint_every=3, loader_workers=1)  # a loader worker: the same batches
    train(explicit, tmp_path / "explicit", device=CPU, bookkeeping=with_worker)
    assert losses(tmp_path / "default") == losses(tmp_path / "explicit")
    for k, v in weights(tmp_path / "default").items():
        assert torch.equal(v, weights(tmp_path / "explicit")[k]), k


def test_channels_last_trains_the_same_maths_on_the_cpu(tiny_dataset, tmp_path):
    """The same step through other kernels: equal up to float rounding after one step (a 2-filter V-Net then
    amplifies the rounding from step to step, so later steps are not compared)."""
    train(run_config(tiny_dataset, iterations=1), tmp_path / "plain", device=CPU, bookkeeping=BOOK)
    cfg = run_config(tiny_dataset, iterations=1, channels_last=True)
    train(cfg, tmp_path / "cl", device=CPU, bookkeeping=BOOK)
    assert losses(tmp_path / "cl") == pytest.approx(losses(tmp_path / "plain"), rel=1e-6)
    plain = weights(tmp_path / "plain")
    for k, v in weights(tmp_path / "cl").items():
        assert torch.allclose(v.float(), plain[k].float(), rtol=0, atol=1e-5), k


def test_prediction_sets_the_run_s_switches(tiny_dataset, tmp_path, monkeypatch):
    cfg = run_config(tiny_dataset, tf32=True, channels_last=True)
    train(cfg, tmp_path / "run", device=CPU, bookkeeping=BOOK)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    seen: list[tuple] = []
    real = predict_module.sliding_window

    def spy(predict, image, *args, **kwargs):
        def watched(x):
            seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
            return predict(x)

        return real(watched, image, *args, **kwargs)

    monkeypatch.setattr(predict_module, "sliding_window", spy)
    predict_cases(
        cfg,
        tmp_path / "run" / "model.pt",
        tmp_path / "run" / "predictions",
        stride=(16, 16, 8),
        windows_per_batch=2,
        spacing_mm=(1.0, 1.0, 1.0),
        device=CPU,
    )
    assert seen and set(seen) == {(True, True)}
    assert sorted(p.name for p in (tmp_path / "run" / "predictions").glob("*.nii.gz"))


def loader(cuda: bool, workers: int):
    image = torch.zeros(20, 20, 20).numpy()
    dataset = PatchDataset([], [image], patch_size=(16, 16, 16), augment_mode="crop", seed=0)
    return make_loader(dataset, batch_plan(1, 1, 1, 1, 0, 0, 1), num_workers=workers, seed=0, cuda=cuda)


def test_loader_options_only_for_cuda():
    for workers in (0, 2):  # the CPU: DataLoader's defaults, as before the switch existed
        cpu = loader(False, workers)
        assert (cpu.pin_memory, cpu.persistent_workers, cpu.prefetch_factor) == (False, False, 2 if workers else None)
    gpu = loader(True, 2)
    assert (gpu.pin_memory, gpu.persistent_workers, gpu.prefetch_factor) == (True, True, 4)
    gpu0 = loader(True, 0)
    assert (gpu0.pin_memory, gpu0.persistent_workers, gpu0.prefetch_factor) == (True, False, None)


def test_batch_to_puts_images_in_the_layout_and_leaves_labels():
    batch = Batch(
        x=torch.randn(2, 3, 16, 16, 16),
        y=torch.zeros(1, 16, 16, 16, dtype=torch.long),
        n_labeled=1,
        extras={"sdf": torch.zeros(1, 16, 16, 16)},
    )
    moved = batch.to(CPU, memory_format=LAYOUT)
    assert moved.x.is_contiguous(memory_format=LAYOUT) and not batch.x.is_contiguous(memory_format=LAYOUT)
    assert torch.equal(moved.x, batch.x) and moved.y is batch.y and moved.extras["sdf"] is batch.extras["sdf"]
    assert batch.to(CPU).x is batch.x  # the default keeps the tensor as it is
