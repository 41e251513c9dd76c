"""Loss terms against hand-computed values."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from harness.numerics.losses import (
    add_input_noise,
    dice_fg,
    dual_task_consistency,
    masked_mse,
    predictive_entropy,
    require_labels,
    softmax_mse,
    supervised_loss,
)


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


def test_input_noise_is_clipped_gaussian_from_torch_rng_only():
    x = torch.zeros(200_000)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    torch.manual_seed(0)
    noise = add_input_noise(x)
    assert noise.abs().max().item() == pytest.approx(0.2)  # clip(0.1·ε, −0.2, 0.2)
    # |0.1·ε| > 0.2 ⇔ |ε| > 2: P = 2·(1 − Φ(2)) = 0.0455 of the voxels sit exactly on ±0.2
    assert (noise.abs() == 0.2).float().mean().item() == pytest.approx(0.0455, abs=0.003)
    assert noise.std().item() == pytest.approx(0.1, abs=0.01)  # clipping 4.6 % of the tail shrinks it a little
    torch.manual_seed(0)
    assert torch.equal(add_input_noise(x), noise)  # same torch seed, same noise
    assert not torch.equal(add_input_noise(x), noise)  # fresh noise on the next call
    assert np.array_equal(np.random.get_state()[1], np_state) and random.getstate() == py_state
    x = torch.full((3,), 5.0)
    assert ((add_input_noise(x, std=10.0, clip=0.2) - 5.0).abs() <= 0.2 + 1e-6).all()
    with pytest.raises(ValueError, match="std"):
        add_input_noise(x, std=-1.0)


def test_softmax_mse_by_hand():
    # one sample, two voxels: student logits (0, 0) and (0, ln 3) → p = (0.5, 0.5) and (0.25, 0.75);
    # teacher logits (0, 0) twice → (0.5, 0.5): d = 0 at voxel 0 and (0.25)² = 0.0625 on both channels at voxel 1
    student = torch.tensor([[0.0, 0.0], [0.0, math.log(3)]]).T.reshape(1, 2, 2, 1, 1).requires_grad_()
    teacher = torch.zeros(1, 2, 2, 1, 1, requires_grad=True)
    d = softmax_mse(student, teacher)
    assert d.shape == (1, 2, 2, 1, 1)
    assert d.flatten().tolist() == pytest.approx([0.0, 0.0625, 0.0, 0.0625], abs=1e-7)
    d.sum().backward()
    assert student.grad is not None and teacher.grad is None  # no gradient into the teacher


def test_masked_mse_by_hand():
    # d channel 0 = (1, 2), channel 1 = (3, 4) over two voxels; mask keeps voxel 0 only:
    # Σ(mask·d) = 1 + 3 = 4, 2·Σmask = 2 → 2.0 (the mean over the kept voxel and both channels)
    d = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1, 1)
    mask = torch.tensor([1.0, 0.0]).reshape(1, 1, 2, 1, 1)
    assert masked_mse(d, mask).item() == pytest.approx(2.0)
    assert masked_mse(d, torch.ones_like(mask)).item() == pytest.approx(10.0 / 4.0)  # (1+2+3+4) / (2·2)
    assert masked_mse(d, torch.zeros_like(mask)).item() == 0.0  # 0 / (0 + 1e-16)
    with pytest.raises(ValueError, match="mask"):
        masked_mse(d, torch.ones(1, 2, 2, 1, 1))


def test_predictive_entropy_by_hand():
    p = torch.tensor([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]]).T.reshape(1, 2, 3, 1, 1)
    u = predictive_entropy(p)
    assert u.shape == (1, 1, 3, 1, 1)
    # −2·0.5·ln(0.500001) = 0.69314518; −(0.25·ln 0.250001 + 0.75·ln 0.750001) = 0.56233314;
    # −(1·ln 1.000001 + 0·ln 1e-6) = −1.0e-6 (the +1e-6 inside the log makes it slightly negative)
    assert u.flatten().tolist() == pytest.approx([0.6931451805619453, 0.562333144621475, -9.999995e-07], abs=1e-7)


def test_dual_task_consistency_by_hand():
    # voxel 0: s = 0, o = 0 → σ(0) − σ(0) = 0; voxel 1: s = 0.001, o = ln 3 → σ(−1.5) − σ(ln 3)
    # = 0.18242552 − 0.75 = −0.56757448, squared 0.32214079; mean over 2 voxels = 0.16107039
    sdm = torch.tensor([0.0, 0.001]).reshape(1, 1, 2, 1, 1)
    logits = torch.tensor([0.0, math.log(3)]).reshape(1, 1, 2, 1, 1)
    assert dual_task_consistency(sdm, logits, k=1500).item() == pytest.approx(0.322140786026489 / 2, abs=1e-6)
    sdm.requires_grad_()
    logits.requires_grad_()
    dual_task_consistency(sdm, logits).backward()
    assert sdm.grad.abs().sum() > 0 and logits.grad.abs().sum() > 0  # no stop-gradient on either side


def test_require_labels_refuses_sentinels():
    require_labels(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="sentinel"):
        require_labels(torch.tensor([0, -1]))
