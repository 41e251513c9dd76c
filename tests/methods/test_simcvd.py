"""simcvd: config, ramp, loss composition and EMA of the projection head on a tiny V-Net."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from harness.method import Batch, Progress
from harness.nets import build_net
from harness.numerics.ramps import sigmoid_rampup
from methods.simcvd import Config, SimCVD, ramp_value

CPU = torch.device("cpu")


def make(**kw) -> SimCVD:
    torch.manual_seed(0)
    cfg = Config(head_pool=8, head_hidden=(16,), head_out=8, **kw)
    return SimCVD(cfg, partial(build_net, n_filters=2), CPU)


def batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 16, 16, 16, generator=g)
    y = (torch.rand(2, 16, 16, 16, generator=g) > 0.5).long()
    return Batch(x=x, y=y, n_labeled=2, extras={"sdf": torch.rand(2, 16, 16, 16, generator=g) - 0.5})


def test_config_defaults_are_the_spec_values():
    c = Config()
    assert (c.alpha_sdf, c.lambda_contrast, c.beta_pd, c.gamma_con, c.tau) == (0.1, 0.5, 0.1, 0.1, 0.5)
    assert (c.pd_temperature, c.pd_reduction, c.head_dropout, c.head_pool) == (1.0, "mean", 0.1, 128)
    assert (c.head_hidden, c.head_out, c.l2_normalise, c.ema_decay, c.ema_head) == ((256, 256), 128, True, 0.999, True)
    assert (c.student_noise_unlabeled, c.con_target, c.ramp_mode) == (True, "prob", "stepped")
    for bad in ({"pd_reduction": "max"}, {"ramp_mode": "linear"}, {"con_target": "sdm"}, {"tau": 0.0}):
        with pytest.raises(ValueError):
            Config(**bad)


def test_default_head_has_the_spec_parameter_count():
    head = SimCVD(Config(), partial(build_net, n_filters=2), CPU).head
    assert sum(p.numel() for p in head.parameters()) == 4_293_248


def test_ramp_modes():
    assert ramp_value(Config(), 0) == pytest.approx(sigmoid_rampup(0, 40))
    assert ramp_value(Config(), 299) == pytest.approx(sigmoid_rampup(1, 40))
    assert ramp_value(Config(), 6000) == 1.0
    cont = Config(ramp_mode="continuous")
    assert ramp_value(cont, 299) == pytest.approx(sigmoid_rampup(299, 6000))


def test_loss_is_sup_plus_ramped_weighted_terms():
    m = make()
    out = m.training_step(batch(), Progress(it=3000, max_it=6000, lr=0.01))
    lg, r = out.logs, out.logs["w/ramp"]
    assert r == pytest.approx(sigmoid_rampup(20, 40))
    sup = 0.5 * (lg["loss/bce"] + lg["loss/dice"]) + 0.1 * lg["loss/sdf"]
    assert lg["loss/sup"] == pytest.approx(sup, rel=1e-5)
    total = sup + r * (0.5 * lg["loss/contrast"] + 0.1 * lg["loss/pd"] + 0.1 * lg["loss/con"])
    assert out.loss.item() == pytest.approx(total, rel=1e-5)
    assert lg["loss/contrast"] > 0 and lg["loss/con"] >= 0
    # a 16³ patch has a 1×1×1 bottleneck: the softmax over one position is 1, so L_pd is exactly 0
    assert lg["loss/pd"] == 0.0


def test_gradients_reach_trunk_sdm_head_and_projection_head_not_teacher():
    m = make()
    m.training_step(batch(), Progress(it=6000, max_it=6000, lr=0.01)).loss.backward()
    assert m.net.out_conv.weight.grad.abs().sum() > 0  # SDM head (L_sdf and L_contrast)
    assert all(p.grad is not None for p in m.head.parameters())
    assert all(p.grad is None for p in [*m.teacher.parameters(), *m.teacher_head.parameters()])


def test_ema_updates_teacher_head_and_trunk():
    m = make()
    m.after_optimizer_step(Progress(it=0, max_it=10, lr=0.01))  # a_0 = 0: teacher = student copy
    for t, s in zip([*m.teacher_head.parameters(), *m.teacher.parameters()],
                    [*m.head.parameters(), *m.net.parameters()], strict=True):  # fmt: skip
        assert torch.equal(t, s)
    m_no = make(ema_head=False)
    assert "teacher_head" not in m_no.modules()
    out = m_no.training_step(batch(), Progress(it=0, max_it=10, lr=0.01))
    assert torch.isfinite(out.loss)


def test_missing_sdf_or_unlabeled_is_a_clear_error():
    m, b = make(), batch()
    with pytest.raises(KeyError, match="sdf"):
        m.training_step(Batch(x=b.x, y=b.y, n_labeled=2), Progress(0, 1, 0.01))
    with pytest.raises(ValueError, match="unlabeled"):
        m.training_step(Batch(x=b.x[:2], y=b.y, n_labeled=2, extras=b.extras), Progress(0, 1, 0.01))
