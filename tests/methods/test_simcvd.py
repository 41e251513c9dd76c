"""simcvd: config, ramp, loss composition and EMA of the projection head on a tiny V-Net."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from harness.method import Batch, Progress
from harness.nets import build_net
from harness.numerics.ramps import sigmoid_rampup
from methods.simcvd import (
    Config,
    SimCVD,
    SliceProjectionHead,
    info_nce,
    pairwise_distillation,
    ramp_value,
    symmetric_info_nce,
)

CPU = torch.device("cpu")


def make(**kw) -> SimCVD:
    torch.manual_seed(0)
    cfg = Config(head_pool=8, head_hidden=(16,), head_out=8, **kw)
    return SimCVD(cfg, partial(build_net, n_filters=2), CPU)


def batch(side: int = 16) -> Batch:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, side, side, side, generator=g)
    y = (torch.rand(2, side, side, side, generator=g) > 0.5).long()
    return Batch(x=x, y=y, n_labeled=2, extras={"sdf": torch.rand(2, side, side, side, generator=g) - 0.5})


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
    for t, s in zip(
        [*m.teacher_head.parameters(), *m.teacher.parameters()],
        [*m.head.parameters(), *m.net.parameters()],
        strict=True,
    ):
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


# -- ablation switches: a switched-off term is absent (perturbing it changes nothing), a switched-on one is not ------
def step_gradient(monkeypatch, perturb: str | None = None, b: Batch | None = None, **switches) -> torch.Tensor:
    """All student gradients (trunk, SDM head, projection head) of one step at full ramp, optionally with one loss
    term multiplied by 7 (`perturb`: the name of the function in methods.simcvd that computes it)."""
    import methods.simcvd as module

    with monkeypatch.context() as patch:
        if perturb is not None:
            original = getattr(module, perturb)
            patch.setattr(module, perturb, lambda *a, **k: 7.0 * original(*a, **k))
        m = make(**switches)
        torch.manual_seed(1)
        out = m.training_step(b or batch(), Progress(it=6000, max_it=6000, lr=0.01))
        out.loss.backward()
    params = [*m.net.parameters(), *m.head.parameters()]
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])


@pytest.mark.parametrize(
    ("switch", "term"), [("use_contrast", "symmetric_info_nce"), ("use_pd", "pairwise_distillation")]
)
def test_a_switched_off_term_has_no_gradient(monkeypatch, switch, term):
    b = batch(side=32)  # a 2×2×2 bottleneck: L_pd has more than one position to distil
    on = step_gradient(monkeypatch, b=b)
    assert not torch.equal(step_gradient(monkeypatch, perturb=term, b=b), on)  # the term is active by default
    off = step_gradient(monkeypatch, b=b, **{switch: False})
    assert torch.equal(step_gradient(monkeypatch, perturb=term, b=b, **{switch: False}), off)
    assert not torch.equal(off, on)


def test_without_the_sdm_loss_the_sdf_target_is_not_used(monkeypatch):
    moved = batch()
    moved.extras["sdf"] = moved.extras["sdf"] + 0.3
    assert not torch.equal(step_gradient(monkeypatch, b=moved), step_gradient(monkeypatch))
    off = step_gradient(monkeypatch, use_sdm_loss=False)
    assert torch.equal(step_gradient(monkeypatch, b=moved, use_sdm_loss=False), off)
    m = make(use_sdm_loss=False)
    assert "loss/sdf" not in m.training_step(batch(), Progress(it=0, max_it=6000, lr=0.01)).logs


def sdm_head_gradient(**switches) -> float:
    m = make(**switches)
    m.training_step(batch(), Progress(it=6000, max_it=6000, lr=0.01)).loss.backward()
    sdm_params = [p for name, p in m.net.named_parameters() if name.startswith("out_conv.")]  # the tanh SDM head
    return sum(float(p.grad.abs().sum()) for p in sdm_params if p.grad is not None)


def test_without_sdm_the_heads_see_the_plain_image_and_the_sdm_head_learns_nothing(monkeypatch):
    seen = []
    m = make(sdm_input=False)
    monkeypatch.setattr(m.head, "forward", lambda vol, f=m.head.forward: seen.append(vol.clone()) or f(vol))
    b = batch()
    m.training_step(b, Progress(it=6000, max_it=6000, lr=0.01))
    assert torch.equal(seen[0], b.x_u)
    assert sdm_head_gradient(sdm_input=False, use_sdm_loss=False) == 0.0  # "w/o SDM": nothing reaches the SDM head
    assert sdm_head_gradient(use_sdm_loss=False) > 0.0  # boundary-aware input alone still trains it
    assert sdm_head_gradient(sdm_input=False) > 0.0  # and so does L_sdm alone


def test_adaptive_max_pooling_head():
    from methods.simcvd import SliceProjectionHead

    torch.manual_seed(0)
    head = SliceProjectionHead(pool=4, hidden=(8,), out=4, dropout=0.0, l2_normalise=False, pool_mode="max")
    vol = torch.randn(2, 1, 8, 8, 3)
    slices = vol[:, 0].permute(0, 3, 1, 2).reshape(6, 1, 8, 8)
    expected = head.mlp(torch.nn.functional.max_pool2d(slices, 2).flatten(1)).view(2, 3, -1)
    assert torch.allclose(head(vol), expected)
    assert make(head_pool_mode="max").head.pool_fn is torch.nn.functional.adaptive_max_pool2d
    with pytest.raises(ValueError, match="head_pool_mode"):
        Config(head_pool_mode="min")


# -- the method's own numerics, hand-computed -----------------------------------------------------------------------
def test_info_nce_identical_embeddings_orthogonal_negatives_known_optimum():
    e = torch.eye(4)  # 4 orthonormal embeddings; anchor i matches candidate i, orthogonal to the 3 others
    tau = 0.5
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 3))
    assert torch.allclose(info_nce(e, e, tau), torch.full((4,), expected))
    # a lower temperature drives the optimum towards 0
    assert info_nce(e, e, 0.01).max() < 1e-20


def test_info_nce_hand_computed_asymmetric_case():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # anchor 0's positive is orthogonal to it; anchor 1's is identical
    out = info_nce(a, c, 1.0)
    assert out[0].item() == pytest.approx(math.log(2))  # both scores 0
    assert out[1].item() == pytest.approx(-math.log(math.e / (2 * math.e)))  # both scores 1


def test_symmetric_info_nce_is_symmetric_and_averages_both_directions():
    g = torch.Generator().manual_seed(0)
    h_s = torch.nn.functional.normalize(torch.randn(6, 3, generator=g), dim=1)
    h_t = torch.nn.functional.normalize(torch.randn(6, 3, generator=g), dim=1)
    assert symmetric_info_nce(h_s, h_t, 0.5) == pytest.approx(symmetric_info_nce(h_t, h_s, 0.5).item())
    both = 0.5 * (info_nce(h_t, h_s, 0.5) + info_nce(h_s, h_t, 0.5)).mean()
    assert symmetric_info_nce(h_s, h_t, 0.5).item() == pytest.approx(both.item())
    # t→s and s→t differ in general (row vs column softmax), so the symmetrisation matters
    assert not torch.allclose(info_nce(h_t, h_s, 0.5), info_nce(h_s, h_t, 0.5))


def test_info_nce_rejects_bad_input():
    with pytest.raises(ValueError, match="anchors"):
        info_nce(torch.zeros(3, 2), torch.zeros(4, 2), 0.5)
    with pytest.raises(ValueError, match="tau"):
        info_nce(torch.zeros(3, 2), torch.zeros(3, 2), 0.0)


def test_pairwise_distillation_softmax_over_positions_of_the_same_volume():
    # one volume, C = 2, three positions: student (1,0),(0,1),(1,1); teacher (1,0),(0,1),(1,0)
    v_s = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]])
    v_t = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    r = 1 / math.sqrt(2)
    cos = [[1, 0, 1], [0, 1, 0], [r, r, r]]  # cos(v^s_j, v^t_k)
    per_pos = [-math.log(math.exp(cos[j][j]) / sum(math.exp(v) for v in cos[j])) for j in range(3)]
    assert pairwise_distillation(v_s, v_t).item() == pytest.approx(sum(per_pos) / 3, rel=1e-6)
    assert pairwise_distillation(v_s, v_t, reduction="sum").item() == pytest.approx(sum(per_pos), rel=1e-6)
    t = 0.5
    per_pos_t = [-math.log(math.exp(cos[j][j] / t) / sum(math.exp(v / t) for v in cos[j])) for j in range(3)]
    assert pairwise_distillation(v_s, v_t, t).item() == pytest.approx(sum(per_pos_t) / 3, rel=1e-6)


def test_pairwise_distillation_does_not_mix_volumes():
    g = torch.Generator().manual_seed(1)
    v_s, v_t = torch.randn(2, 4, 2, 2, 2, generator=g), torch.randn(2, 4, 2, 2, 2, generator=g)
    each = [pairwise_distillation(v_s[i : i + 1], v_t[i : i + 1]).item() for i in range(2)]
    assert pairwise_distillation(v_s, v_t).item() == pytest.approx(sum(each) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        pairwise_distillation(v_s, v_t, reduction="max")


def test_slice_projection_head_shapes_pooling_and_normalisation():
    head = SliceProjectionHead(pool=4, hidden=(8,), out=3, dropout=0.1).eval()  # eval: AlphaDropout is identity
    vol = torch.randn(2, 1, 4, 4, 5)
    h = head(vol)
    assert h.shape == (2, 5, 3)
    assert torch.allclose(h.norm(dim=-1), torch.ones(2, 5), atol=1e-6)
    # slice (b, z) depends only on vol[b, 0, :, :, z]
    vol2 = vol.clone()
    vol2[1, 0, :, :, 2] += 1.0
    h2 = head(vol2)
    changed = (h2 - h).abs().sum(-1) > 1e-6
    assert changed.tolist() == [[False] * 5, [False, False, True, False, False]]
    # pooling 2×2 → 1×1 feeds the slice mean to the MLP
    head1 = SliceProjectionHead(pool=1, hidden=(), out=1, dropout=0.0, l2_normalise=False).eval()
    x = torch.arange(8.0).view(1, 1, 2, 2, 2)
    w, b = head1.mlp[0].weight.item(), head1.mlp[0].bias.item()
    expected = torch.tensor([x[0, 0, :, :, 0].mean(), x[0, 0, :, :, 1].mean()]) * w + b
    assert torch.allclose(head1(x)[0, :, 0], expected)


def test_slice_projection_head_train_mode_gives_independent_dropout_masks():
    torch.manual_seed(0)
    head = SliceProjectionHead(pool=4, hidden=(8,), out=3, dropout=0.1).train()
    vol = torch.randn(1, 1, 4, 4, 2)
    assert not torch.allclose(head(vol), head(vol))
