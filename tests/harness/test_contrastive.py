"""Hand-computed values for the shared contrastive losses and the slice projection head."""

from __future__ import annotations

import math

import pytest
import torch

from harness.numerics.contrastive import (
    SliceProjectionHead,
    info_nce,
    local_supcon,
    nt_xent,
    pairwise_distillation,
    position_groups,
    symmetric_info_nce,
)


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


def test_queue_is_fifo_and_excludes_same_case_and_empty_slots():
    from harness.numerics.contrastive import VolumeQueue

    q = VolumeQueue(size=3, dim=2)
    assert not q.negative_mask(torch.tensor([0])).any()  # all slots empty
    q.push(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([10, 11]))
    assert q.case_ids.tolist() == [10, 11, -1] and q.ptr.item() == 2
    q.push(torch.tensor([[3.0, 0.0], [4.0, 0.0]]), torch.tensor([12, 10]))  # wraps: the oldest (10 at slot 0) goes
    assert q.keys[:, 0].tolist() == [4.0, 2.0, 3.0] and q.case_ids.tolist() == [10, 11, 12] and q.ptr.item() == 1
    mask = q.negative_mask(torch.tensor([10, 12, 99]))
    assert mask.tolist() == [[False, True, True], [True, True, False], [True, True, True]]
    assert set(dict(q.named_buffers())) == {"keys", "case_ids", "ptr"}  # checkpointed state


def test_info_nce_masked_hand_computed():
    from harness.numerics.contrastive import info_nce_masked

    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0]])
    negs = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    only_orth = info_nce_masked(a, p, negs, torch.tensor([[True, False]]), 1.0)
    assert only_orth.item() == pytest.approx(-math.log(math.e / (math.e + 1)))
    both = info_nce_masked(a, p, negs, torch.tensor([[True, True]]), 1.0)
    assert both.item() == pytest.approx(-math.log(math.e / (2 * math.e + 1)))
    none = info_nce_masked(a, p, negs, torch.tensor([[False, False]]), 1.0)
    assert none.item() == pytest.approx(0.0, abs=1e-7)


def test_elastic_energy_zero_for_perfect_prediction_and_grows_with_boundary_displacement():
    from harness.numerics.contrastive import elastic_energy, elastic_interaction_loss

    y = torch.zeros(1, 16, 16, 1)
    y[0, 4:10, 4:10, 0] = 1
    assert elastic_interaction_loss(y.clone(), y).item() == pytest.approx(0.0, abs=1e-6)
    losses = []
    for shift in (1, 2, 3):
        p = torch.roll(y, shifts=shift, dims=1)
        losses.append(elastic_interaction_loss(p, y).item())
    assert 0 < losses[0] < losses[1] < losses[2]
    # a constant map has energy only at k = 0, where |k| = 0
    assert elastic_energy(torch.full((4, 4), 0.7)).item() == pytest.approx(0.0, abs=1e-6)
    # a single cosine mode cos(2π·x/4) along x: |F|² = (16/2)² at k = ±2π/4, so E = 2·(π/2)·64/16 = 4π
    xs = torch.arange(4.0)
    d = torch.cos(2 * torch.pi * xs / 4)[:, None].expand(4, 4)
    assert elastic_energy(d).item() == pytest.approx(4 * math.pi, rel=1e-5)


# -- sup_local_contrast (docs/methods/sup_local_contrast.md) --------------------------------------------------------
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
