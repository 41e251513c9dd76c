"""mean_teacher: the training step's arithmetic by hand, teacher inputs, EMA wiring (docs/methods/mean_teacher.md)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from method_fakes import ConstantLogits, LinearLogits

from harness.config import from_dict
from harness.method import Batch, Progress
from harness.nets import build_net
from harness.numerics.losses import supervised_loss
from methods.mean_teacher import Config, MeanTeacher

CPU = torch.device("cpu")
LN3 = math.log(3)


def method(**overrides) -> MeanTeacher:
    torch.manual_seed(0)
    return MeanTeacher(from_dict(Config, overrides, "mt"), partial(build_net, n_filters=2), CPU)


def hand_batch() -> Batch:
    """4 samples of 2 voxels; unlabeled inputs (0, ln 3) and (ln 3, 0) → student fg prob 0.5/0.75 and 0.75/0.5."""
    x = torch.tensor([[1.0, -1.0], [2.0, 0.0], [0.0, LN3], [LN3, 0.0]]).reshape(4, 1, 2, 1, 1)
    return Batch(x=x, y=torch.tensor([[1, 0], [1, 1]]).reshape(2, 2, 1, 1), n_labeled=2)


def test_loss_by_hand_consistency_on_unlabeled():
    m = method()
    m.net, m.teacher = LinearLogits(), ConstantLogits()
    batch = hand_batch()
    out = m.training_step(batch, Progress(it=0, max_it=6000, lr=0.01))
    # student p on U: (0.5, 0.5), (0.25, 0.75) | (0.25, 0.75), (0.5, 0.5); teacher (0.5, 0.5) everywhere
    # d: 0, 0.0625 (×2 channels) per unlabeled sample → mean over 2 samples × 2 channels × 2 voxels = 0.25/8
    assert out.logs["loss/cons"] == pytest.approx(0.03125, abs=1e-7)
    assert out.logs["w/cons"] == pytest.approx(0.1 * math.exp(-5))  # it = 0: 0.1·r(0, 40)
    sup, _ = supervised_loss(LinearLogits()(batch.x_l), batch.y)  # tested by hand in test_losses.py
    assert out.loss.item() == pytest.approx(sup.item() + 0.1 * math.exp(-5) * 0.03125, abs=1e-7)
    assert [t.shape[0] for t in m.teacher.inputs] == [2]  # the teacher sees the 2 unlabeled samples only
    noise = m.teacher.inputs[0] - batch.x_u
    assert 0 < noise.abs().max() <= 0.2 + 1e-6  # ξ(x_U): clipped Gaussian noise


def test_consistency_on_all_samples():
    m = method(consistency_on="all")
    m.net, m.teacher = LinearLogits(), ConstantLogits()
    out = m.training_step(hand_batch(), Progress(it=150, max_it=6000, lr=0.01))
    # labeled student p: x = (1, −1) → fg σ(1), σ(−1); x = (2, 0) → σ(2), 0.5; d per voxel = (p_fg − 0.5)² × 2 channels
    s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    labeled = sum((s(v) - 0.5) ** 2 for v in (1.0, -1.0, 2.0, 0.0)) * 2
    assert out.logs["loss/cons"] == pytest.approx((labeled + 0.25) / 16, abs=1e-7)  # 4 samples × 2 ch × 2 voxels
    assert out.logs["w/cons"] == pytest.approx(0.1 * math.exp(-5 * 0.975**2))  # ⌊150/150⌋ = 1
    assert [t.shape[0] for t in m.teacher.inputs] == [4]


def test_teacher_is_a_frozen_separate_vnet_in_train_mode_and_only_the_student_is_optimised():
    m = method()
    assert m.teacher is not m.net and all(not p.requires_grad for p in m.teacher.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(m.net.parameters(), m.teacher.parameters(), strict=True))
    m.train()
    assert m.teacher.training and m.net.training
    assert [id(p) for p in m.optim_groups()["main"]] == [id(p) for p in m.net.parameters()]


def test_after_optimizer_step_is_the_ema_with_progress_it():
    m = method()
    m.after_optimizer_step(Progress(it=0, max_it=10, lr=0.01))  # a_0 = 0: copy
    assert all(torch.equal(a, b) for a, b in zip(m.net.parameters(), m.teacher.parameters(), strict=True))
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(1.0)
    before = [p.clone() for p in m.teacher.parameters()]
    m.after_optimizer_step(Progress(it=1, max_it=10, lr=0.01))  # a_1 = 0.5: halfway to the student
    for t, b in zip(m.teacher.parameters(), before, strict=True):
        assert torch.allclose(t, b + 0.5)


def test_config_is_checked():
    with pytest.raises(ValueError, match="consistency_on"):
        Config(consistency_on="labeled")
    with pytest.raises(ValueError, match="ema_decay"):
        Config(ema_decay=1.5)
