"""sup_local_contrast: stage hand-off, leakage guards, stage data, intensity views and the stage schedule."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import torch

from harness.config import SAFE_NAME, from_dict
from harness.data.prepared import PreparedData
from harness.data.splits import read_list
from harness.method import Batch, Progress, StageSpec
from harness.method.build import resolve_run
from harness.method.registry import get_method
from harness.nets import build_net
from harness.run.folder import RunId
from harness.run.method_table import read_methods
from harness.train.loop import Bookkeeping, train
from harness.workflow.grid import cell_params
from methods.sup_local_contrast import (
    ENCODER,
    Config,
    Intensity,
    intensity_view,
    local_supcon,
    nt_xent,
    position_groups,
)

BOOK = Bookkeeping(log_every=1, checkpoint_every=1)  # bookkeeping: never part of a run's identity

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[2]
SHORT = {"stage1": {"iterations": 3, "batch_volumes": 2}, "stage2": {"iterations": 2, "stride": 4}}


def run_config(root: Path, overrides: dict | None = None, n_labeled: int = 2, seed: int = 1):
    config = {
        "datasets": {"tiny": {"labeled": [2, 3]}},
        "data": {"tiny": {"source": "synthetic", "n_train": 4, "patch_size": [16, 16, 16], "augment": "rotflip_crop"}},
        "protocol": {
            "iterations": 2,
            "n_filters": 2,
        },
        "method_overrides": {"sup_local_contrast": {**SHORT, **(overrides or {})}},
    }
    params = cell_params(config, RunId("tiny", "sup_local_contrast", n_labeled, seed))
    params["data"]["root"] = str(root)
    return resolve_run(params)


def make_method(stage: str | None, seed: int = 0):
    torch.manual_seed(seed)
    cls = get_method("sup_local_contrast")
    method = cls(from_dict(Config, SHORT, "sup_local_contrast"), partial(build_net, n_filters=2), CPU)
    method.set_stage(stage)
    return method


def test_stage_names_are_safe():
    for entry in read_methods(REPO).values():  # rule names, folder names and a shell argument
        assert all(SAFE_NAME.match(stage) for stage in entry.stages), entry


def test_stage2_takes_only_the_encoder_of_stage1_and_stage3_all_but_the_output_conv():
    first = make_method("stage1", seed=1)
    with torch.no_grad():
        for p in first.net.parameters():
            p.add_(1.0)  # "trained" weights, different from any fresh init
    second = make_method("stage2", seed=2)
    fresh_decoder = second.net.block_six.state_dict()
    second.start_from(first.state_dict())
    for name in ENCODER:
        for k, v in getattr(first.net, name).state_dict().items():
            assert torch.equal(getattr(second.net, name).state_dict()[k], v), f"{name}.{k}"
    for k, v in fresh_decoder.items():  # the decoder stays the stage-2 network's own random init
        assert torch.equal(second.net.block_six.state_dict()[k], v)
    with torch.no_grad():
        for p in second.net.parameters():
            p.mul_(3.0)
    third = make_method(None, seed=3)
    fresh_out = third.net.out_conv.weight.clone()
    third.start_from(second.state_dict())
    assert torch.equal(third.net.block_nine.conv[0].weight, second.net.block_nine.conv[0].weight)
    assert torch.equal(third.net.out_conv.weight, fresh_out)  # fresh output convolution


def test_stage_modules_and_optimised_parameters():
    first, second, third = make_method("stage1"), make_method("stage2"), make_method(None)
    assert set(first.modules()) == {"net", "global_head"} and set(second.modules()) == {"net", "local_head"}
    assert set(third.modules()) == {"net"}
    encoder = {id(p) for name in ENCODER for p in getattr(first.net, name).parameters()}
    group = {id(p) for p in first.optim_groups()["main"]}
    assert encoder <= group and not {id(p) for p in first.net.out_conv.parameters()} & group
    with pytest.raises(ValueError, match="stages"):
        make_method("stage3")


def recorded_loads(monkeypatch) -> list[tuple[str, bool]]:
    """(case ID, with_label) of every case file the training loop reads (all reads go through PreparedData.load)."""
    seen: list[tuple[str, bool]] = []
    original = PreparedData.load

    def spy(self, case_id, *, with_label):
        seen.append((case_id, with_label))
        return original(self, case_id, with_label=with_label)

    monkeypatch.setattr(PreparedData, "load", spy)
    return seen


def test_leakage_guards_per_stage(tiny_dataset, tmp_path, monkeypatch):
    """Stage 1: every training image, no label, no test case. Stages 2-3: the first N labeled cases only."""
    train_ids, test_ids = read_list(tiny_dataset / "train.list"), read_list(tiny_dataset / "test.list")
    cfg = run_config(tiny_dataset)
    seen = recorded_loads(monkeypatch)
    train(cfg, tmp_path, device=CPU, bookkeeping=BOOK, stage="stage1")
    assert sorted(seen) == sorted((i, False) for i in train_ids) and not {i for i, _ in seen} & set(test_ids)
    for stage in ("stage2", None):
        seen.clear()
        train(cfg, tmp_path, device=CPU, bookkeeping=BOOK, stage=stage)
        assert seen == [(i, True) for i in train_ids[:2]], stage


def test_stage_batches_views_and_sizes(tiny_dataset, tmp_path, monkeypatch):
    cfg = run_config(tiny_dataset)
    cls, shapes = get_method("sup_local_contrast"), []
    original = cls.stage_step

    def recording(self, batch, progress):
        stage = self.stage.name if self.stage else None
        shapes.append((stage, batch.x.shape[0], batch.n_labeled, tuple(batch.y.shape), progress.lr))
        return original(self, batch, progress)

    monkeypatch.setattr(cls, "stage_step", recording)
    for stage in ("stage1", "stage2", None):
        train(cfg, tmp_path, device=CPU, bookkeeping=BOOK, stage=stage)
    s1 = [s for s in shapes if s[0] == "stage1"]
    assert [s[1:4] for s in s1] == [(4, 0, (0, 16, 16, 16))] * 3  # 2 volumes x 2 views, image only
    assert [s[4] for s in s1] == pytest.approx([3e-4 * 0.5 * (1 + math.cos(math.pi * k / 3)) for k in range(3)])
    assert [s[1:] for s in shapes if s[0] == "stage2"] == [(2, 2, (2, 16, 16, 16), 1e-4)] * 2
    assert [s[1:4] for s in shapes if s[0] is None] == [(4, 4, (4, 16, 16, 16))] * 2


def test_main_training_needs_the_last_stage_and_refuses_a_stale_one(tiny_dataset, tmp_path):
    cfg = run_config(tiny_dataset)
    with pytest.raises(FileNotFoundError, match="stage2"):
        train(cfg, tmp_path, device=CPU, bookkeeping=BOOK)
    train(cfg, tmp_path, device=CPU, bookkeeping=BOOK, stage="stage1")
    train(cfg, tmp_path, device=CPU, bookkeeping=BOOK, stage="stage2")
    other = run_config(tiny_dataset, {"stage2": {"iterations": 2, "stride": 4, "tau": 0.2}})
    with pytest.raises(RuntimeError, match="another configuration"):
        train(other, tmp_path, device=CPU, bookkeeping=BOOK)


def test_stage1_reads_no_labels_so_one_model_serves_every_labeled_count(tiny_dataset, tmp_path):
    """The DAG trains stage 1 once per dataset and seed (SHARED_STAGES): training it for 3 labeled cases gives the
    very model trained for 2, and the stage 2 of 3 labeled cases starts from the model in the 2-labeled folder."""
    two, three = run_config(tiny_dataset, n_labeled=2), run_config(tiny_dataset, n_labeled=3)
    train(two, tmp_path / "two", device=CPU, bookkeeping=BOOK, stage="stage1")
    train(three, tmp_path / "three", device=CPU, bookkeeping=BOOK, stage="stage1")
    shared = tmp_path / "two" / "stage1" / "model.pt"
    a, b = (torch.load(p / "stage1" / "model.pt", weights_only=True) for p in (tmp_path / "two", tmp_path / "three"))
    assert a["config_sha256"] == b["config_sha256"]
    for module, tensors in a["state"].items():
        for key, value in tensors.items():
            assert torch.equal(value, b["state"][module][key]), f"{module}.{key}"
    info = train(three, tmp_path / "shared", device=CPU, bookkeeping=BOOK, stage="stage2", previous_model=shared)
    assert (tmp_path / "shared" / "stage2" / "model.pt").exists() and not (tmp_path / "shared" / "stage1").exists()
    assert info["previous_stage_model_sha256"] is not None
    # another seed's stage 1 is another model: refused
    with pytest.raises(RuntimeError, match="another configuration"):
        other = run_config(tiny_dataset, n_labeled=3, seed=2)
        train(other, tmp_path / "other", device=CPU, bookkeeping=BOOK, stage="stage2", previous_model=shared)


def test_stage_resume_equals_uninterrupted(tiny_dataset, tmp_path):
    cfg = run_config(tiny_dataset)
    train(cfg, tmp_path / "full", device=CPU, bookkeeping=BOOK, stage="stage1")
    assert train(cfg, tmp_path / "crash", device=CPU, bookkeeping=BOOK, stage="stage1", stop_after=2) == {
        "stopped_at": 2
    }
    assert train(cfg, tmp_path / "crash", device=CPU, bookkeeping=BOOK, stage="stage1")["resumed_from"] == 2
    full = torch.load(tmp_path / "full" / "stage1" / "model.pt", weights_only=True)["state"]
    resumed = torch.load(tmp_path / "crash" / "stage1" / "model.pt", weights_only=True)["state"]
    for module, tensors in full.items():
        for key, value in tensors.items():
            assert torch.equal(value, resumed[module][key]), f"{module}.{key}"


def test_intensity_view_hand_values():
    x = torch.tensor([0.0, 1.0, 2.0]).reshape(1, 1, 3, 1, 1)
    doubled = intensity_view(x, Intensity(brightness=(2.0, 2.0), gamma=(1.0, 1.0), noise_std=0.0))
    assert torch.allclose(doubled.flatten(), torch.tensor([0.0, 2.0, 4.0]))
    squared = intensity_view(x, Intensity(brightness=(1.0, 1.0), gamma=(2.0, 2.0), noise_std=0.0))
    assert torch.allclose(squared.flatten(), torch.tensor([0.0, 0.5, 2.0]))  # ((x - 0) / 2)^2 * 2
    torch.manual_seed(0)
    noisy = intensity_view(torch.zeros(2, 1, 8, 8, 8), Intensity(noise_std=0.1))
    assert 0.08 < noisy.std().item() < 0.12


def test_warmup_cosine_schedule_hand_values():
    spec = StageSpec(
        name="s",
        iterations=10,
        batch_volumes=1,
        views=1,
        data="images",
        optimizer="adam",
        lr=1.0,
        weight_decay=0.0,
        schedule="warmup_cosine",
        warmup_fraction=0.2,
    )
    assert [spec.lr_at(i) for i in (0, 1)] == [0.5, 1.0]  # linear warm-up over 2 steps
    assert spec.lr_at(2) == 1.0 and spec.lr_at(6) == pytest.approx(0.5)  # cosine over the remaining 8
    with pytest.raises(ValueError, match="data in"):
        StageSpec(
            name="s",
            iterations=10,
            batch_volumes=1,
            views=1,
            data="test_images",
            optimizer="adam",
            lr=1.0,
            weight_decay=0.0,
        )


def test_config_rejects_a_block_that_is_not_a_multiple_of_the_stride():
    with pytest.raises(ValueError, match="block_size"):
        Config(stage2=from_dict(type(Config().stage2), {"stride": 3}, "stage2"))


def test_local_head_on_strided_positions_equals_sampling_the_full_map():
    method = make_method("stage2")
    feats = torch.randn(2, 2, 16, 16, 16)
    full = method.local_head(feats)[:, :, ::4, ::4, ::4]
    assert torch.allclose(method.local_head(feats[:, :, ::4, ::4, ::4]), full, atol=1e-6)


def test_block_mode_trains_and_checks_the_patch():
    torch.manual_seed(0)
    cls = get_method("sup_local_contrast")
    cfg = from_dict(Config, {"stage2": {"mode": "block", "stride": 4, "block_size": 8}}, "sup_local_contrast")
    method = cls(cfg, partial(build_net, n_filters=2), CPU)
    method.set_stage("stage2")
    y = torch.zeros(2, 16, 16, 16, dtype=torch.long)
    y[:, 4:12, 4:12, 4:12] = 1
    x = torch.randn(2, 1, 16, 16, 16)
    out = method.stage_step(Batch(x=x, y=y, n_labeled=2), Progress(0, 2, 1e-4))
    assert torch.isfinite(out.loss) and out.loss.item() > 0 and out.logs["w/anchors"] > 0
    bad = cls(
        from_dict(Config, {"stage2": {"mode": "block", "stride": 4, "block_size": 12}}, "x"),
        partial(build_net, n_filters=2),
        CPU,
    )
    bad.set_stage("stage2")
    with pytest.raises(ValueError, match="block_size 12 must divide the patch"):
        bad.stage_step(Batch(x=x, y=y, n_labeled=2), Progress(0, 2, 1e-4))


# -- the method's own numerics, hand-computed -----------------------------------------------------------------------
def test_nt_xent_identical_views_orthogonal_negatives_hand_value():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    z = torch.stack([e1, e2, e1, e2])  # view-major: rows 0/2 and 1/3 are the positive pairs
    # anchor 0: positive e1 (sim 1), negatives rows 1 and 3 (sim 0); self excluded. tau 0.5 -> -log(e^2 / (e^2 + 2))
    expected = math.log(1 + 2 * math.exp(-2))
    assert nt_xent(z, 0.5).item() == pytest.approx(expected, rel=1e-6)
    swapped = torch.stack([e1, e2, e2, e1])  # the positive of row 0 is now orthogonal: a worse loss
    assert nt_xent(swapped, 0.5).item() > expected


def test_nt_xent_rejects_odd_batches():
    with pytest.raises(ValueError, match="2B"):
        nt_xent(torch.ones(3, 2), 0.5)


def test_local_supcon_positive_sets_with_background_anchors_excluded():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    f = torch.stack([e1, e1, e2, -e2])[None]  # one group of 4 positions
    labels = torch.tensor([[1, 1, 0, 0]])
    # anchors 0 and 1 only (background never anchors): positive sim 1; denominator e^1 + e^0 + e^0 (self excluded)
    expected = math.log(math.e + 2) - 1
    # (background anchors would add 1 + log(2 + e^-1) = 1.86 for anchors 2 and 3 and move the mean to 1.21)
    assert local_supcon(f, labels, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_local_supcon_averages_over_every_positive_of_an_anchor():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    f = torch.stack([e1, e1, e2])[None]
    labels = torch.tensor([[1, 1, 1]])  # anchor 0: positives 1 (sim 1) and 2 (sim 0), same denominator e + 1
    log_den = math.log(math.e + 1)
    a0 = -((1 - log_den) + (0 - log_den)) / 2
    a2 = -((0 - math.log(2)) + (0 - math.log(2))) / 2  # anchor 2: sims 0, 0
    assert local_supcon(f, labels, 1.0).item() == pytest.approx((2 * a0 + a2) / 3, rel=1e-6)


def test_local_supcon_without_anchors_is_zero_with_a_gradient_path():
    f = torch.randn(1, 5, 3, requires_grad=True)
    loss = local_supcon(f, torch.zeros(1, 5, dtype=torch.long), 0.1)
    assert loss.item() == 0.0 and loss.requires_grad


def test_position_groups_stride_and_block_modes():
    emb = torch.arange(2 * 1 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4, 4)
    labels = (emb[:, 0] % 2).long()
    f, lab = position_groups(emb, labels, stride=2)
    assert f.shape == (1, 16, 1) and torch.equal(f[0, :8, 0], emb[0, 0, ::2, ::2, ::2].flatten())
    assert torch.equal(lab, (f[..., 0] % 2).long())
    blocks, block_labels = position_groups(emb, labels, stride=1, block=2)
    assert blocks.shape == (8, 16, 1)  # 8 blocks of 2x2x2 voxels, from both volumes
    first = torch.cat([emb[0, 0, :2, :2, :2].flatten(), emb[1, 0, :2, :2, :2].flatten()])
    assert torch.equal(blocks[0, :, 0], first) and torch.equal(block_labels[0], (first % 2).long())
    last = torch.cat([emb[0, 0, 2:, 2:, 2:].flatten(), emb[1, 0, 2:, 2:, 2:].flatten()])
    assert torch.equal(blocks[7, :, 0], last)
    with pytest.raises(ValueError, match="multiple of stride"):
        position_groups(emb, labels, stride=2, block=3)
