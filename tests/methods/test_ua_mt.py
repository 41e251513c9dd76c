"""ua_mt: uncertainty passes, threshold, strict mask and masked consistency by hand (docs/methods/ua_mt.md)."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
from method_fakes import ConstantLogits, LinearLogits
from torch import nn

import methods.ua_mt as ua_mt
from harness.config import from_dict
from harness.method import Batch, Progress
from harness.nets import build_net
from harness.numerics.losses import predictive_entropy

CPU = torch.device("cpu")
LN3 = math.log(3)


def method(**overrides) -> ua_mt.UAMT:
    torch.manual_seed(0)
    return ua_mt.UAMT(from_dict(ua_mt.Config, overrides, "ua_mt"), partial(build_net, n_filters=2), CPU)


def hand_batch() -> Batch:
    x = torch.tensor([[1.0, -1.0], [2.0, 0.0], [0.0, LN3], [LN3, 0.0]]).reshape(4, 1, 2, 1, 1)
    return Batch(x=x, y=torch.tensor([[1, 0], [1, 1]]).reshape(2, 2, 1, 1), n_labeled=2)


def test_teacher_passes_one_target_then_t_over_2_runs_of_the_repeated_batch():
    m = method()
    m.net, m.teacher = LinearLogits(), ConstantLogits()
    batch = hand_batch()
    m.training_step(batch, Progress(it=0, max_it=6000, lr=0.01))
    inputs = m.teacher.inputs
    assert [t.shape[0] for t in inputs] == [2, 4, 4, 4, 4]  # target pass on ξ(x_U), then T/2 = 4 runs of 2·n_U
    expected = batch.x_u.repeat(2, 1, 1, 1, 1)  # rows u0, u1, u0, u1
    for run in inputs[1:]:
        assert 0 < (run - expected).abs().max() <= 0.2 + 1e-6
        assert not torch.equal(run[0], run[2])  # the two copies of u0 get different noise
    assert all(not torch.equal(a, b) for a, b in zip(inputs[1:], inputs[2:], strict=False))  # fresh noise per run


def test_uncertainty_groups_the_t_passes_of_each_sample():
    m = method(noise_std=0.0, noise_clip=0.0)
    m.teacher = LinearLogits()  # logits (0, x): fg probability σ(x), deterministic without noise
    x = torch.tensor([0.0, LN3]).reshape(2, 1, 1, 1, 1)  # sample 0: p = (0.5, 0.5); sample 1: p = (0.25, 0.75)
    u = m._uncertainty(x)
    # all 8 passes of a sample agree, so p̄ is that sample's p:
    # u0 = −ln(0.500001) = 0.69314518, u1 = −(0.25·ln 0.250001 + 0.75·ln 0.750001) = 0.56233314
    # (mixing the samples would give p̄ = (0.375, 0.625) and 0.6616 for both)
    assert u.flatten().tolist() == pytest.approx([0.6931451805619453, 0.562333144621475], abs=1e-6)
    assert len(m.teacher.inputs) == 4


def test_masked_consistency_by_hand_at_both_ends_of_the_threshold_ramp():
    m = method()
    m.net, m.teacher = LinearLogits(), ConstantLogits()
    # teacher p̄ = (0.5, 0.5) everywhere → u = 0.69314518 nats
    late = m.training_step(hand_batch(), Progress(it=5999, max_it=6000, lr=0.01))
    # τ(5999) = (0.75 + 0.25·exp(−5·(1/6000)²))·ln 2 = 0.69314716 > u: every voxel kept; d as in the MT test:
    # Σd = 0.25 over 2 samples × 2 channels × 2 voxels, 2·Σmask = 2·4 → 0.25/8
    assert late.logs["unc/threshold"] == pytest.approx(0.6931471563, abs=1e-9)
    assert late.logs["unc/kept"] == 1.0
    assert late.logs["loss/cons"] == pytest.approx(0.03125, abs=1e-7)
    assert late.logs["w/cons"] == pytest.approx(0.0996880, abs=1e-7)  # ⌊5999/150⌋ = 39 → 0.1·exp(−5/1600)
    early = m.training_step(hand_batch(), Progress(it=0, max_it=6000, lr=0.01))
    # τ(0) = 0.52102798 < u: nothing kept, L_cons = 0 / (0 + 1e−16) = 0
    assert early.logs["unc/kept"] == 0.0 and early.logs["loss/cons"] == 0.0


def test_threshold_comparison_is_strict(monkeypatch):
    m = method()
    m.net, m.teacher = LinearLogits(), ConstantLogits()
    u = predictive_entropy(torch.full((1, 2, 1, 1, 1), 0.5)).item()  # the teacher's uncertainty, as float32
    monkeypatch.setattr(ua_mt, "uncertainty_threshold", lambda *args: u)
    out = m.training_step(hand_batch(), Progress(it=10, max_it=6000, lr=0.01))
    assert out.logs["unc/kept"] == 0.0  # u < τ is False when u == τ
    above = float(np.nextafter(np.float32(u), np.float32(1.0)))  # the next float32 (the comparison's precision)
    monkeypatch.setattr(ua_mt, "uncertainty_threshold", lambda *args: above)
    assert m.training_step(hand_batch(), Progress(it=10, max_it=6000, lr=0.01)).logs["unc/kept"] == 1.0


def test_real_teacher_dropout_makes_the_passes_stochastic():
    m = method(noise_std=0.0, noise_clip=0.0)
    m.train()
    seen = []
    m.teacher.register_forward_hook(lambda mod, args, out: seen.append(out.detach().clone()))
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m._uncertainty(x)
    assert len(seen) == 4 and not torch.equal(seen[0], seen[1])  # same input, different dropout masks
    assert not torch.equal(seen[0][0], seen[0][2])  # the copies inside one run differ too (Dropout3d per sample)


def test_config_is_checked():
    with pytest.raises(ValueError, match="uncertainty_passes"):
        ua_mt.Config(uncertainty_passes=7)
    assert isinstance(method().teacher, nn.Module)
