"""bcp: cube geometry, mixing directions, losses by hand, pseudo labels and LCC, EMA, the two stages and their hand-off
(docs/methods/bcp.md). The hand values follow the reference functions' arithmetic (`context_mask`, `mix_loss`,
`mask_DiceLoss`, `LargestCC_pancreas`, `update_ema_variables` of DeepMed-Lab-ECNU/BCP @ 7879f98)."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from method_fakes import LinearLogits
from torch import nn

from harness.config import from_dict
from harness.data.prepared import PreparedData
from harness.data.splits import read_list
from harness.method import Batch, Progress
from harness.method.build import resolve_run, stage_spec
from harness.method.registry import get_method
from harness.nets import build_net, load_reference_state_dict
from harness.run.folder import RunId
from harness.train.loop import Bookkeeping, train
from harness.workflow.grid import cell_params
from methods.bcp import (
    BCP,
    Config,
    bcp_dice_loss,
    cube_mask,
    cube_side,
    ema_fixed,
    largest_component,
    mix,
    mix_loss,
    pseudo_labels,
    reference_to_vnet,
)

CPU = torch.device("cpu")
R = 2 / 3
BOOK = Bookkeeping(log_every=1, checkpoint_every=1)


class FixedLogits(nn.Module):
    """2-class logits (b0, b1) at every voxel whatever the input, recording its inputs (a stand-in teacher)."""

    def __init__(self, b0: float, b1: float) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor([b0, b1]))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.b.reshape(1, 2, 1, 1, 1).expand(x.shape[0], 2, *x.shape[2:])


def method(stage: str | None = None, **overrides) -> BCP:
    torch.manual_seed(0)
    m = BCP(from_dict(Config, overrides, "bcp"), partial(build_net, n_filters=2), CPU)
    m.set_stage(stage)
    return m


def fixed_corner(monkeypatch, corner: tuple[int, int, int]) -> list[tuple[int, int]]:
    """Make the cube corner (w, h, z) = `corner`; returns the (low, high) of every corner draw."""
    draws, values = [], iter(corner)

    def randint(low, high, size, **kwargs):
        draws.append((low, high))
        return torch.tensor([next(values)])

    monkeypatch.setattr(torch, "randint", randint)
    return draws


def hand_mask(shape=(8, 8, 8), corner=(1, 2, 0), side=(5, 5, 5)) -> torch.Tensor:
    m = torch.ones(shape)
    m[corner[0] : corner[0] + side[0], corner[1] : corner[1] + side[1], corner[2] : corner[2] + side[2]] = 0
    return m


def const(values, shape=(8, 8, 8)) -> torch.Tensor:
    """Images `[B, 1, *shape]`, sample i constant values[i]."""
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1, 1, 1).expand(-1, 1, *shape).clone()


def labels(values, shape=(8, 8, 8)) -> torch.Tensor:
    return torch.tensor(values).reshape(-1, 1, 1, 1).expand(-1, *shape).clone()


# -- T1: cube geometry ------------------------------------------------------------------------------------------------
def test_cube_sides_follow_int_of_patch_times_two_thirds():
    assert [cube_side(s, R) for s in (112, 112, 80)] == [74, 74, 53]  # LA: 290,228 of 1,003,520 voxels in the cube
    assert cube_side(96, R) == 64 and cube_side(8, R) == 5 and cube_side(16, R) == 10
    assert Config().mask_ratio == R


def test_cube_at_a_given_corner_is_zero_inside_one_outside(monkeypatch):
    draws = fixed_corner(monkeypatch, (1, 2, 0))
    m = cube_mask((8, 8, 8), R)
    assert draws == [(0, 3), (0, 3), (0, 3)]  # w, h, z each in {0, 1, 2}: randint(0, 8 - 5), upper bound exclusive
    assert torch.equal(m, hand_mask())
    assert int((m == 0).sum()) == 125 and int((m == 1).sum()) == 387
    assert m[1, 2, 0] == 0 and m[5, 6, 4] == 0 and m[0, 2, 0] == 1 and m[6, 2, 0] == 1 and m[1, 7, 0] == 1
    assert m[1, 2, 5] == 1


def test_la_corner_ranges(monkeypatch):
    draws = fixed_corner(monkeypatch, (37, 37, 26))
    m = cube_mask((112, 112, 80), R)
    assert draws == [(0, 38), (0, 38), (0, 27)]
    assert int((m == 0).sum()) == 74 * 74 * 53 == 290228
    assert m[37:111, 37:111, 26:79].sum() == 0 and m[36, 40, 30] == 1
    # the exclusive upper bound: even the largest corner leaves the last slice of every axis outside the cube
    assert m[111].min() == 1 and m[:, 111].min() == 1 and m[:, :, 79].min() == 1


def test_corner_is_drawn_from_torchs_rng_in_range():
    torch.manual_seed(7)
    masks = [cube_mask((8, 8, 8), R) for _ in range(60)]
    corners = {tuple(int(i.min()) for i in torch.nonzero(m == 0, as_tuple=True)) for m in masks}
    assert corners <= {(w, h, z) for w in range(3) for h in range(3) for z in range(3)} and len(corners) > 10
    torch.manual_seed(7)
    assert all(torch.equal(cube_mask((8, 8, 8), R), m) for m in masks)  # same seed, same cubes


# -- T2: mixing --------------------------------------------------------------------------------------------------------
def test_mix_of_constant_images_and_labels():
    m = hand_mask()
    mixl = mix(const([1.0]), const([3.0]), m)  # labeled img_a outside, unlabeled unimg_a in the cube
    assert mixl.sum() == 762 and mixl.mean() == pytest.approx(1.48828125)
    mixu = mix(const([3.0]), const([1.0]), m)  # unlabeled unimg_b outside, labeled img_b in the cube
    assert mixu.mean() == pytest.approx(2.51171875)
    lab = mix(labels([1]), labels([0]), m)  # GT lab_a ≡ 1 outside, pseudo label ≡ 0 inside
    assert lab.dtype == torch.int64 and int(lab.sum()) == 387 and torch.equal(lab[0], m.long())


def test_training_step_mixes_both_directions_with_one_cube(monkeypatch):
    draws = fixed_corner(monkeypatch, (1, 2, 0))
    m = method()
    m.net, m.teacher = LinearLogits(), FixedLogits(1.0, 0.0)
    # img_a ≡ 1, img_b ≡ 2, unimg_a ≡ 3, unimg_b ≡ 4
    batch = Batch(x=const([1.0, 2.0, 3.0, 4.0]), y=labels([1, 1]), n_labeled=2)
    m.training_step(batch, Progress(0, 10, 0.01))
    assert len(draws) == 3  # one cube per iteration, for both mixed images
    # halves of one volume: one teacher pass on both unlabeled halves and one student pass on both mixed images
    assert [t.shape[0] for t in m.teacher.inputs] == [2] and torch.equal(m.teacher.inputs[0], batch.x_u)
    (student,) = m.net.inputs
    mask = hand_mask()
    assert torch.equal(student[0, 0], 1 * mask + 3 * (1 - mask))  # mixl: labeled outside, unlabeled in the cube
    assert torch.equal(student[1, 0], 4 * mask + 2 * (1 - mask))  # mixu: unlabeled outside, labeled in the cube


def test_reference_batch_of_four_plus_four_runs_separate_passes(monkeypatch):
    fixed_corner(monkeypatch, (0, 0, 0))
    m = method()
    m.net, m.teacher = LinearLogits(), FixedLogits(1.0, 0.0)
    batch = Batch(x=const([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]), y=labels([1, 1, 0, 0]), n_labeled=4)
    m.training_step(batch, Progress(0, 10, 0.01))
    assert [t[:, 0, 7, 7, 7].tolist() for t in m.teacher.inputs] == [[5.0, 6.0], [7.0, 8.0]]  # unimg_a, then unimg_b
    # two student passes of 2 (mixl, then mixu); voxel (0,0,0) is in the cube, (7,7,7) outside
    assert [t[:, 0, 7, 7, 7].tolist() for t in m.net.inputs] == [[1.0, 2.0], [7.0, 8.0]]
    assert [t[:, 0, 0, 0, 0].tolist() for t in m.net.inputs] == [[5.0, 6.0], [3.0, 4.0]]


def test_min_pass_volumes_one_keeps_two_passes_of_one():
    m = method(min_pass_volumes=1)
    m.net, m.teacher = LinearLogits(), FixedLogits(1.0, 0.0)
    m.training_step(Batch(x=const([1.0, 2.0, 3.0, 4.0]), y=labels([1, 1]), n_labeled=2), Progress(0, 10, 0.01))
    assert [t.shape[0] for t in m.teacher.inputs] == [1, 1] and [t.shape[0] for t in m.net.inputs] == [1, 1]


# -- T3/T4: Dice, CE and the mixed loss by hand ------------------------------------------------------------------------
P1 = torch.tensor([0.8, 0.6, 0.3, 0.1])


def hand_logits() -> torch.Tensor:
    """Logits log p so that softmax returns p: `[1, 2, 4, 1, 1]`."""
    return torch.stack([torch.log(1 - P1), torch.log(P1)]).reshape(1, 2, 4, 1, 1)


def vox(values) -> torch.Tensor:
    return torch.tensor(values).reshape(1, 4, 1, 1)


def test_dice_both_classes_non_squared_by_hand():
    assert bcp_dice_loss(hand_logits(), vox([1, 1, 0, 0])).item() == pytest.approx(0.2506259, abs=1e-6)
    masked = bcp_dice_loss(hand_logits(), vox([1, 1, 0, 0]), vox([1.0, 1.0, 1.0, 0.0]))
    assert masked.item() == pytest.approx(0.3172726, abs=1e-6)


def test_dice_averages_per_volume():
    two = torch.cat([hand_logits(), hand_logits()])
    assert bcp_dice_loss(two, torch.cat([vox([1, 1, 0, 0])] * 2)).item() == pytest.approx(0.2506259, abs=1e-6)


@pytest.mark.parametrize("filler", [0, 1])
def test_mix_loss_by_hand(filler):
    mask = vox([1, 1, 0, 0])  # voxels 2 and 3 are in the cube
    gt, pseudo = vox([1, 0, filler, filler]), vox([filler, filler, 0, 1])  # each read only in its own region
    loss, logs = mix_loss(hand_logits(), gt, pseudo, mask, 1.0, 0.5)  # GT outside (1), pseudo inside (0.5)
    assert loss.item() == pytest.approx(0.9904324, abs=1e-6)
    assert logs["dice"] == pytest.approx(0.416664 + 0.5 * 0.659337, abs=1e-5)
    assert logs["ce"] == pytest.approx(0.569717 + 0.5 * 1.329630, abs=1e-5)
    swapped, _ = mix_loss(hand_logits(), gt, pseudo, mask, 0.5, 1.0)  # the reference's unlab=True
    assert swapped.item() == pytest.approx(1.2410787, abs=1e-6)


def test_masked_ce_is_a_mean_over_the_kept_voxels():
    mask = vox([1.0, 1.0, 1.0, 0.0])
    _, logs = mix_loss(hand_logits(), vox([1, 1, 0, 0]), vox([1, 1, 0, 0]), mask, 1.0, 0.0)
    assert logs["ce"] == pytest.approx(0.3635480, abs=1e-6)


def test_mix_loss_with_the_mixed_label_equals_the_two_targets():
    torch.manual_seed(1)
    logits, mask = torch.randn(2, 2, 8, 8, 8), hand_mask()
    lab, plab = (torch.rand(2, 8, 8, 8) > 0.5).long(), (torch.rand(2, 8, 8, 8) > 0.5).long()
    mixed = mix(lab, plab, mask)
    a, _ = mix_loss(logits, lab, plab, mask, 1.0, 0.5)
    b, _ = mix_loss(logits, mixed, mixed, mask, 1.0, 0.5)
    assert torch.allclose(a, b)


def test_training_loss_is_loss_l_plus_loss_u(monkeypatch):
    fixed_corner(monkeypatch, (1, 2, 0))
    m = method()
    m.net, m.teacher = LinearLogits(), FixedLogits(1.0, 0.0)  # teacher: background everywhere → pseudo labels 0
    batch = Batch(x=const([0.5, -1.0, 2.0, -0.3]), y=labels([1, 0]), n_labeled=2)
    out = m.training_step(batch, Progress(0, 10, 0.01))
    mask, student = hand_mask(), LinearLogits()
    zeros = labels([0])
    mixl, mixu = mix(const([0.5]), const([2.0]), mask), mix(const([-0.3]), const([-1.0]), mask)
    loss_l, _ = mix_loss(student(mixl), labels([1]), zeros, mask, 1.0, 0.5)
    loss_u, _ = mix_loss(student(mixu), zeros, labels([0]), mask, 0.5, 1.0)
    assert out.logs["pl/fg"] == 0.0
    assert out.logs["loss/l"] == pytest.approx(loss_l.item()) and out.logs["loss/u"] == pytest.approx(loss_u.item())
    assert out.loss.item() == pytest.approx(loss_l.item() + loss_u.item(), abs=1e-6)


def test_u_weight_is_the_pseudo_label_weight(monkeypatch):
    fixed_corner(monkeypatch, (1, 2, 0))
    m = method(u_weight=0.25)
    m.net, m.teacher = LinearLogits(), FixedLogits(0.0, 1.0)  # pseudo labels 1
    batch = Batch(x=const([0.5, -1.0, 2.0, -0.3]), y=labels([1, 0]), n_labeled=2)
    out = m.training_step(batch, Progress(0, 10, 0.01))
    mask, student, ones = hand_mask(), LinearLogits(), labels([1])
    mixl, mixu = mix(const([0.5]), const([2.0]), mask), mix(const([-0.3]), const([-1.0]), mask)
    loss_l, _ = mix_loss(student(mixl), labels([1]), ones, mask, 1.0, 0.25)
    loss_u, _ = mix_loss(student(mixu), ones, labels([0]), mask, 0.25, 1.0)
    assert out.logs["pl/fg"] == 1.0
    assert out.loss.item() == pytest.approx(loss_l.item() + loss_u.item(), abs=1e-6)


# -- pseudo labels and the largest connected component ----------------------------------------------------------------
def two_components() -> np.ndarray:
    v = np.zeros((5, 5, 5), dtype=np.int64)
    v[0, 0, 0] = v[1, 1, 1] = v[2, 2, 2] = 1  # 3 voxels touching at corners only: one component in 26-connectivity
    v[4, 0, 0] = v[4, 0, 1] = 1  # 2 face neighbours
    return v


def test_lcc_keeps_the_largest_component_per_connectivity():
    v = two_components()
    kept = largest_component(v, 3)
    assert kept.dtype == v.dtype and kept.sum() == 3 and kept[2, 2, 2] == 1 and kept[4, 0, 0] == 0
    for connectivity in (1, 2):  # the diagonal chain falls apart into singletons: the pair is the largest
        kept = largest_component(v, connectivity)
        assert kept.sum() == 2 and kept[4, 0, 1] == 1 and kept[0, 0, 0] == 0
    edge = np.zeros((3, 3, 3), dtype=np.int64)
    edge[0, 0, 0] = edge[1, 1, 0] = edge[2, 2, 0] = 1  # edge neighbours: 18- but not 6-connected
    assert largest_component(edge, 2).sum() == 3 and largest_component(edge, 1).sum() == 1


def test_lcc_tie_keeps_the_first_in_c_order_and_empty_stays():
    v = np.zeros((4, 1, 1), dtype=np.int64)
    v[0] = v[3] = 1
    assert largest_component(v, 3)[:, 0, 0].tolist() == [1, 0, 0, 0]
    assert largest_component(np.zeros((3, 3, 3), dtype=np.int64), 3).sum() == 0


def test_pseudo_labels_threshold_inclusive_then_lcc_per_volume():
    v = torch.from_numpy(two_components())
    fg = torch.stack([v, 1 - v]).float()  # volume 0: the two components; volume 1: their complement (one component)
    logits = torch.stack([torch.zeros_like(fg), torch.where(fg > 0, 0.0, -5.0)], dim=1)  # p = 0.5 on fg: kept (≥)
    labels_ = pseudo_labels(logits, 0.5, lcc=True, connectivity=3)
    assert labels_.dtype == torch.int64 and labels_.shape == (2, 5, 5, 5)
    assert labels_[0].sum() == 3 and labels_[1].sum() == 125 - 5
    assert pseudo_labels(logits, 0.5, lcc=False, connectivity=3)[0].sum() == 5
    assert pseudo_labels(logits, 0.51, lcc=False, connectivity=3).sum() == 0


def test_training_step_applies_lcc_to_pseudo_labels(monkeypatch):
    fixed_corner(monkeypatch, (0, 0, 0))
    blob = torch.zeros(8, 8, 8)
    blob[6:8, 6:8, 6:8] = 1  # 8 voxels, outside the cube at corner 0 (cube: 0..4)
    blob[0, 7, 0] = 1  # a stray voxel

    class Teacher(FixedLogits):
        def forward(self, x):
            self.inputs.append(x)
            return torch.stack([torch.zeros_like(blob), blob * 2 - 1]).expand(x.shape[0], 2, 8, 8, 8)

    m = method()
    m.net, m.teacher = LinearLogits(), Teacher(0.0, 0.0)
    out = m.training_step(Batch(x=const([1.0, 2.0, 3.0, 4.0]), y=labels([1, 1]), n_labeled=2), Progress(0, 10, 0.01))
    assert out.logs["pl/fg"] == pytest.approx(8 / 512)  # the stray voxel is dropped
    m_off = method(lcc=False)
    m_off.net, m_off.teacher = LinearLogits(), Teacher(0.0, 0.0)
    fixed_corner(monkeypatch, (0, 0, 0))
    out = m_off.training_step(Batch(x=const([1.0, 2.0, 3.0, 4.0]), y=labels([1, 1]), n_labeled=2), Progress(0, 1, 0))
    assert out.logs["pl/fg"] == pytest.approx(9 / 512)


# -- EMA, teacher, hand-off --------------------------------------------------------------------------------------------
def test_ema_fixed_decay_without_warm_up():
    m = method()
    with torch.no_grad():
        for p in m.teacher.parameters():
            p.fill_(1.0)
        for p in m.net.parameters():
            p.fill_(0.0)
    buffers = {k: v.clone() for k, v in m.teacher.named_buffers()}
    m.after_optimizer_step(Progress(it=0, max_it=10, lr=0.01))  # step 0 already uses 0.99 (UA-MT's rule would copy)
    assert all(torch.allclose(p, torch.full_like(p, 0.99)) for p in m.teacher.parameters())
    m.after_optimizer_step(Progress(it=1, max_it=10, lr=0.01))
    assert all(torch.allclose(p, torch.full_like(p, 0.9801)) for p in m.teacher.parameters())
    assert all(torch.equal(v, buffers[k]) for k, v in m.teacher.named_buffers())  # BatchNorm buffers untouched


def test_ema_fixed_mixes_teacher_and_student():
    t, s = nn.Linear(1, 1), nn.Linear(1, 1)
    with torch.no_grad():
        t.weight.fill_(2.0), s.weight.fill_(-1.0)
    ema_fixed(t, s, 0.99)
    assert t.weight.item() == pytest.approx(0.99 * 2.0 + 0.01 * -1.0)


def test_teacher_frozen_in_train_mode_and_only_the_student_optimised():
    m = method()
    assert all(not p.requires_grad for p in m.teacher.parameters())
    m.train()
    assert m.teacher.training and m.net.training and m.net.has_dropout and m.teacher.has_dropout
    assert [id(p) for p in m.optim_groups()["main"]] == [id(p) for p in m.net.parameters()]
    assert m.eval_network() is m.net


def test_pretrain_stage_has_no_teacher_update_and_trains_the_student_only():
    m = method("pretrain")
    assert set(m.modules()) == {"net"} and set(m.state_dict()) == {"net"}
    before = [p.clone() for p in m.teacher.parameters()]
    m.after_optimizer_step(Progress(0, 10, 0.01))
    assert all(torch.equal(a, b) for a, b in zip(before, m.teacher.parameters(), strict=True))


def test_hand_off_student_and_teacher_both_start_from_the_pretrained_net():
    first = method("pretrain")
    with torch.no_grad():
        for p in first.net.parameters():
            p.add_(1.0)
    first.net.train()
    first.net(torch.randn(2, 1, 16, 16, 16))  # BatchNorm running buffers away from their init
    torch.manual_seed(5)
    main = BCP(Config(), partial(build_net, n_filters=2), CPU)
    main.set_stage(None)
    main.start_from(first.state_dict())
    for net in (main.net, main.teacher):
        for k, v in first.net.state_dict().items():
            assert torch.equal(net.state_dict()[k], v), k
    assert all(not p.requires_grad for p in main.teacher.parameters())
    assert set(main.state_dict()) == {"net", "teacher"}


# -- pre-training step ------------------------------------------------------------------------------------------------
def test_pretrain_step_mixes_labeled_halves_by_hand(monkeypatch):
    draws = fixed_corner(monkeypatch, (1, 2, 0))
    m = method("pretrain")
    m.net, m.teacher = LinearLogits(), FixedLogits(0.0, 0.0)
    m.net.a.data.zero_()  # logits (0, 0): p = 0.5 everywhere
    batch = Batch(x=const([1.0, 2.0, 3.0, 4.0]), y=labels([1, 1, 0, 0]), n_labeled=4)
    out = m.stage_step(batch, Progress(0, 2000, 0.01))
    assert len(draws) == 3 and not m.teacher.inputs
    (x,) = m.net.inputs
    mask = hand_mask()
    assert torch.equal(x[0, 0], 1 * mask + 3 * (1 - mask)) and torch.equal(x[1, 0], 2 * mask + 4 * (1 - mask))
    # labels mixed alike: lab_a = 1 outside (387 voxels), lab_b = 0 in the cube (125); p = 0.5 → CE = ln 2,
    # Dice fg = 387 / (256 + 387), Dice bg = 125 / (256 + 125), the same for both volumes
    dice = 1 - (387 / 643 + 125 / 381) / 2
    assert out.logs["loss/ce"] == pytest.approx(math.log(2), abs=1e-6)
    assert out.logs["loss/dice"] == pytest.approx(dice, abs=1e-6)
    assert out.loss.item() == pytest.approx((math.log(2) + dice) / 2, abs=1e-6)


def test_pretrain_step_is_ce_plus_dice_on_the_mixed_labels(monkeypatch):
    fixed_corner(monkeypatch, (2, 0, 1))
    m = method("pretrain")
    m.net = LinearLogits()
    batch = Batch(x=const([0.3, -2.0, 1.0, 0.7]), y=labels([0, 1, 1, 0]), n_labeled=4)
    out = m.stage_step(batch, Progress(0, 2000, 0.01))
    mask = hand_mask(corner=(2, 0, 1))
    logits = LinearLogits()(mix(const([0.3, -2.0]), const([1.0, 0.7]), mask))
    target = mix(labels([0, 1]), labels([1, 0]), mask)
    expected = (F.cross_entropy(logits, target) + bcp_dice_loss(logits, target)) / 2
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-6)


# -- batch composition -------------------------------------------------------------------------------------------------
def test_odd_or_unequal_splits_are_refused_naming_the_keys():
    m = method()
    with pytest.raises(ValueError, match=r"protocol\.labeled_bs"):
        m.training_step(Batch(x=const([1.0] * 6), y=labels([1, 1, 1]), n_labeled=3), Progress(0, 1, 0.01))
    with pytest.raises(ValueError, match=r"protocol\.batch_size - protocol\.labeled_bs"):
        m.training_step(Batch(x=const([1.0] * 6), y=labels([1, 1]), n_labeled=2), Progress(0, 1, 0.01))
    with pytest.raises(ValueError, match=r"method_overrides\.bcp\.pretrain\.batch_volumes"):
        from_dict(Config, {"pretrain": {"batch_volumes": 3}}, "bcp")
    with pytest.raises(ValueError, match=r"method_overrides\.bcp\.pretrain\.batch_volumes"):
        method("pretrain").stage_step(Batch(x=const([1.0]), y=labels([1]), n_labeled=1), Progress(0, 1, 0.01))


def grid_config(root: Path | None = None, protocol: dict | None = None, pretrain: dict | None = None):
    config = {
        "datasets": {"tiny": {"labeled": [2]}},
        "data": {"tiny": {"source": "synthetic", "n_train": 4, "patch_size": [16, 16, 16], "augment": "rotflip_crop"}},
        "protocol": {"iterations": 2, "n_filters": 2},
        "method_overrides": {"bcp": {"protocol": protocol or {}, "pretrain": pretrain or {}}},
    }
    params = cell_params(config, RunId("tiny", "bcp", 2, 1))
    if root is not None:
        params["data"]["root"] = str(root)
    return resolve_run(params)


def test_stage_specs_and_the_reference_protocol():
    spec = stage_spec(grid_config(), "pretrain")
    assert (spec.iterations, spec.batch_volumes, spec.data, spec.optimizer, spec.schedule) == (
        2000,
        4,
        "labeled",
        "sgd",
        "constant",
    )
    assert (spec.lr, spec.weight_decay, spec.momentum) == (0.01, 1e-4, 0.9) and spec.lr_at(1999) == 0.01
    reference = {"iterations": 15000, "batch_size": 8, "labeled_bs": 4, "lr_step": 2500, "lr_gamma": 0.1}
    main = stage_spec(grid_config(protocol=reference), None)
    assert (main.batch_volumes, main.unlabeled_volumes, main.iterations) == (4, 4, 15000)
    lrs = [main.lr_at(t - 1) for t in (2500, 2501, 7501, 15000)]  # 1-based steps of the reference
    assert lrs == pytest.approx([1e-2, 1e-3, 1e-5, 1e-7])


def test_stages_through_the_loop_read_labeled_cases_only_then_hand_off(tiny_dataset, tmp_path, monkeypatch):
    cfg = grid_config(tiny_dataset, pretrain={"iterations": 2})
    train_ids = read_list(tiny_dataset / "train.list")
    seen, original = [], PreparedData.load

    def spy(self, case_id, *, with_label):
        seen.append((case_id, with_label))
        return original(self, case_id, with_label=with_label)

    monkeypatch.setattr(PreparedData, "load", spy)
    shapes, step = [], get_method("bcp").stage_step

    def recording(self, batch, progress):
        shapes.append((self.stage.name if self.stage else None, batch.x.shape[0], batch.n_labeled, progress.lr))
        return step(self, batch, progress)

    monkeypatch.setattr(get_method("bcp"), "stage_step", recording)
    with pytest.raises(FileNotFoundError, match="pretrain"):
        train(cfg, tmp_path, device=CPU, bookkeeping=BOOK)
    seen.clear()
    train(cfg, tmp_path, device=CPU, bookkeeping=BOOK, stage="pretrain")
    assert seen == [(i, True) for i in train_ids[:2]]  # the first N labeled cases, nothing else
    seen.clear()
    info = train(cfg, tmp_path, device=CPU, bookkeeping=BOOK)
    assert info["previous_stage_model_sha256"] is not None
    assert sorted(seen) == sorted([(i, True) for i in train_ids[:2]] + [(i, False) for i in train_ids[2:]])
    assert shapes == [("pretrain", 4, 4, 0.01)] * 2 + [(None, 4, 2, 0.01)] * 2


# -- reference weights -------------------------------------------------------------------------------------------------
def test_reference_state_dict_maps_onto_the_vnet():
    net = build_net("vnet", n_filters=2, has_dropout=True)
    encoder = {
        "block_one",
        "block_one_dw",
        "block_two",
        "block_two_dw",
        "block_three",
        "block_three_dw",
        "block_four",
        "block_four_dw",
        "block_five",
    }
    torch.manual_seed(3)
    ref = {
        ("encoder." if k.split(".")[0] in encoder else "decoder.") + k: torch.randn_like(v.float()).to(v.dtype)
        for k, v in net.state_dict().items()
    }
    ref["projection_head.0.weight"] = torch.zeros(3)
    ref["contrastive_class_selector_memory1.0.bias"] = torch.zeros(3)
    other = build_net("vnet", n_filters=2, has_dropout=False)
    load_reference_state_dict(other, reference_to_vnet(ref))
    for k, v in other.state_dict().items():
        assert torch.equal(v, ref[("encoder." if k.split(".")[0] in encoder else "decoder.") + k])
