"""EMA teacher update: the a_t warm-up, parameters only, no gradients (docs/methods/README.md §0)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.numerics.ema import ema_alpha, freeze_teacher, update_ema


def test_ema_alpha_by_hand():
    assert ema_alpha(0, 0.99) == 0.0  # 1 − 1/1: the first update copies the student
    assert ema_alpha(1, 0.99) == 0.5  # 1 − 1/2
    assert ema_alpha(9, 0.99) == pytest.approx(0.9)  # 1 − 1/10
    assert ema_alpha(99, 0.99) == pytest.approx(0.99)  # 1 − 1/100 = a_max
    assert ema_alpha(5000, 0.99) == 0.99  # capped
    assert ema_alpha(199, 0.999) == pytest.approx(0.995)  # 1 − 1/200 < 0.999
    with pytest.raises(ValueError, match="a_max"):
        ema_alpha(3, 1.5)


def tiny(weight: float, bn_weight: float, running_mean: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.fill_(weight)
        net[1].weight.fill_(bn_weight)
        net[1].bias.fill_(0.0)
        net[1].running_mean.fill_(running_mean)
    return net


def test_update_averages_parameters_only():
    teacher, student = tiny(2.0, 1.0, 7.0), tiny(4.0, 3.0, 1.0)
    assert update_ema(teacher, student, step=1, a_max=0.99) == 0.5
    assert teacher[0].weight.item() == 3.0  # 0.5·2 + 0.5·4
    assert teacher[1].weight.item() == 2.0  # 0.5·1 + 0.5·3 (BN affine weight is a parameter)
    assert teacher[1].running_mean.item() == 7.0  # BN buffers are not averaged
    assert student[0].weight.item() == 4.0  # the student is untouched
    update_ema(teacher, student, step=9, a_max=0.99)  # a = 0.9: 0.9·3 + 0.1·4 = 3.1
    assert teacher[0].weight.item() == pytest.approx(3.1)


def test_first_update_copies_the_student():
    teacher, student = tiny(-5.0, 0.2, 0.0), tiny(4.0, 3.0, 0.0)
    update_ema(teacher, student, step=0, a_max=0.99)
    assert teacher[0].weight.item() == 4.0 and teacher[1].weight.item() == 3.0


def test_frozen_teacher_takes_no_gradients_and_update_keeps_it_so():
    teacher, student = freeze_teacher(tiny(2.0, 1.0, 0.0)), tiny(4.0, 3.0, 0.0)
    assert all(not p.requires_grad for p in teacher.parameters())
    update_ema(teacher, student, step=3, a_max=0.99)
    assert all(not p.requires_grad for p in teacher.parameters()) and teacher[0].weight.grad is None


def test_mismatched_networks_are_refused():
    with pytest.raises(ValueError, match="parameter"):
        update_ema(nn.Linear(2, 1), nn.Linear(3, 1), step=1, a_max=0.99)
