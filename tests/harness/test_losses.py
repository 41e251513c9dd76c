"""Loss terms against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from harness.losses import dice_fg, supervised_loss


def test_dice_fg_squared_denominator_by_hand():
    p = torch.tensor([0.5, 1.0, 0.0, 0.5])
    g = torch.tensor([1, 1, 0, 0])
    # Σpg = 0.5 + 1 = 1.5; Σp² = 0.25 + 1 + 0 + 0.25 = 1.5; Σg² = 2
    expected = 1 - (2 * 1.5 + 1e-5) / (1.5 + 2 + 1e-5)
    assert dice_fg(p, g).item() == pytest.approx(expected, abs=1e-7)
    assert dice_fg(g.float(), g).item() == pytest.approx(0.0, abs=1e-7)


def test_dice_fg_empty_target_and_prediction_is_zero_loss():
    z = torch.zeros(3)
    assert dice_fg(z, z).item() == pytest.approx(0.0)  # (0 + 1e-5) / (0 + 0 + 1e-5) = 1


def test_supervised_loss_by_hand():
    # two voxels, logits (0, 0) and (0, ln 3): softmax fg = 0.5 and 0.75; labels 1 and 0
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3)]]).T.reshape(1, 2, 2, 1, 1)
    target = torch.tensor([1, 0]).reshape(1, 2, 1, 1)
    ce = (-math.log(0.5) - math.log(0.25)) / 2
    dice = 1 - (2 * 0.5 + 1e-5) / (0.25 + 0.5625 + 1 + 1e-5)
    loss, logs = supervised_loss(logits, target)
    assert loss.item() == pytest.approx(0.5 * (ce + dice), abs=1e-6)
    assert logs["loss/ce"] == pytest.approx(ce, abs=1e-6) and logs["loss/dice"] == pytest.approx(dice, abs=1e-6)


def test_supervised_loss_refuses_sentinel_labels():
    with pytest.raises(ValueError, match="sentinel"):
        supervised_loss(torch.zeros(1, 2, 2, 1, 1), torch.tensor([-1, 0]).reshape(1, 2, 1, 1))
