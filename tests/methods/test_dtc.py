"""dtc: the loss terms by hand with a stand-in dual-head network, the eval adapter, the loader hook.

Source: docs/methods/dtc.md.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from method_fakes import DualHead

from harness.config import from_dict
from harness.method import Batch, Progress
from harness.nets import build_net
from harness.numerics.sdf import signed_distance_map
from methods.dtc import DTC, Config

CPU = torch.device("cpu")


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def method(**overrides) -> DTC:
    torch.manual_seed(0)
    return DTC(from_dict(Config, overrides, "dtc"), partial(build_net, n_filters=2), CPU)


def hand_batch() -> Batch:
    """Labeled inputs 0 (σ = 0.5, SDM 0); unlabeled (0.001, −0.001) and (0, 0); labels and target SDMs below."""
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.001, -0.001], [0.0, 0.0]]).reshape(4, 1, 2, 1, 1)
    y = torch.tensor([[1, 0], [1, 1]]).reshape(2, 2, 1, 1)
    sdf = torch.tensor([[0.5, -1.0], [0.0, 1.0]]).reshape(2, 2, 1, 1)
    return Batch(x=x, y=y, n_labeled=2, extras={"sdf": sdf})


def test_loss_by_hand_without_bce():
    m = method()
    m.net = DualHead()  # SDM = x, logit = x
    out = m.training_step(hand_batch(), Progress(it=0, max_it=6000, lr=0.01))
    # Dice_fg on σ(0) = 0.5: Σpg = 1.5, Σp² = 1, Σg² = 3 → 1 − (3 + 1e-5)/(4 + 1e-5) = 0.24999844
    dice = 1 - (3 + 1e-5) / (4 + 1e-5)
    sdf = (0.5**2 + 1.0**2 + 0.0**2 + 1.0**2) / 4  # MSE(0, target SDM) over 2 × 2 voxels = 0.5625
    assert out.logs["loss/dice"] == pytest.approx(dice, abs=1e-7)
    assert out.logs["loss/sdf"] == pytest.approx(sdf, abs=1e-7)
    assert out.logs["loss/sup"] == pytest.approx(dice + 0.3 * sdf, abs=1e-7)  # BCE not added
    assert "loss/bce" not in out.logs
    # consistency over all 4 samples × 2 voxels: zero wherever x = 0 (σ(0) − σ(0)); sample 2:
    # (σ(−1.5) − σ(0.001))² + (σ(1.5) − σ(−0.001))² = 2·(0.18242552 − 0.50025)² = 0.20202
    cons = ((sigmoid(-1.5) - sigmoid(0.001)) ** 2 + (sigmoid(1.5) - sigmoid(-0.001)) ** 2) / 8
    assert out.logs["loss/cons"] == pytest.approx(cons, abs=1e-7)
    assert out.logs["w/cons"] == pytest.approx(math.exp(-5))  # 1.0·r(0, 40)
    assert out.loss.item() == pytest.approx(dice + 0.3 * sdf + math.exp(-5) * cons, abs=1e-6)


def test_use_bce_adds_the_bce_term():
    m = method(use_bce=True)
    m.net = DualHead()
    plain = method()
    plain.net = DualHead()
    progress = Progress(it=0, max_it=6000, lr=0.01)
    out, ref = m.training_step(hand_batch(), progress), plain.training_step(hand_batch(), progress)
    # logits 0 → BCE = −ln σ(0) = −ln(1 − σ(0)) = ln 2 on every labeled voxel
    assert out.logs["loss/bce"] == pytest.approx(math.log(2), abs=1e-7)
    assert out.loss.item() == pytest.approx(ref.loss.item() + math.log(2), abs=1e-6)


def test_needs_the_sdf_and_real_labels():
    m = method()
    batch = hand_batch()
    with pytest.raises(KeyError, match="sdf"):
        m.training_step(Batch(x=batch.x, y=batch.y, n_labeled=2), Progress(0, 10, 0.01))
    bad = Batch(x=batch.x, y=-batch.y, n_labeled=2, extras=batch.extras)
    with pytest.raises(ValueError, match="sentinel"):
        m.training_step(bad, Progress(0, 10, 0.01))


def test_one_dual_head_network_whose_segmentation_head_is_evaluated():
    m = method()
    assert set(m.modules()) == {"net"} and m.output_kind == "sigmoid"
    assert m.label_transforms() == {"sdf": signed_distance_map}
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    net = m.eval_network().eval()
    with torch.no_grad():
        sdm, logits = m.net(x)
        assert torch.equal(net(x), logits) and net(x).shape == (1, 1, 16, 16, 16)
