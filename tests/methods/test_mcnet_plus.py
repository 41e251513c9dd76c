"""mcnet_plus: sharpening, the repository's Dice, the mutual consistency, the ramp and the total by hand with a stand-in
three-decoder network; the three-decoder V-Net (parameters, shapes, dropout, up-sampling) against an independent
functional re-implementation written from the reference's key names (docs/methods/mcnet_plus.md); the eval adapter
(decoder 1); the reference state_dict mapping.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.config import from_dict
from harness.method import Batch, Progress
from harness.nets import VNet, build_net, count_parameters, load_reference_state_dict
from harness.nets.mcnet import Decoder1, MCNet3dV2, reference_decoder1_to_vnet, reference_to_mcnet
from methods.mcnet_plus import Config, MCNetPlus, binary_dice_loss, mutual_consistency, sharpen

CPU = torch.device("cpu")


def method(**overrides) -> MCNetPlus:
    torch.manual_seed(0)
    return MCNetPlus(from_dict(Config, overrides, "mcnet_plus"), partial(build_net, n_filters=2), CPU)


# -- sharpening --------------------------------------------------------------------------------------------------------
def test_sharpening_by_hand():
    p = torch.tensor([0.7, 0.6, 0.5, 0.3], dtype=torch.float64)
    # 0.7¹⁰ / (0.7¹⁰ + 0.3¹⁰) = 0.0282475249 / 0.0282534298; 0.6¹⁰ / (0.6¹⁰ + 0.4¹⁰) = 0.0060466176 / 0.0061514752
    expected = torch.tensor([0.9997910024, 0.9829540725, 0.5, 0.0002089976], dtype=torch.float64)
    torch.testing.assert_close(sharpen(p, 0.1), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(sharpen(1 - p, 0.1), 1 - expected, rtol=0, atol=1e-10)  # s(1 − p) = 1 − s(p)
    torch.testing.assert_close(sharpen(p, 1.0), p, rtol=0, atol=1e-15)  # T = 1: the identity
    # T = 0.5 (exponent 2): 0.49 / (0.49 + 0.09)
    assert sharpen(torch.tensor(0.7, dtype=torch.float64), 0.5).item() == pytest.approx(0.49 / 0.58, abs=1e-12)


def test_sharpening_float32_has_no_nan_at_the_ends():
    p = torch.tensor([0.0, 1e-30, 1e-6, 1.0 - 1e-7, 1.0], requires_grad=True)
    s = sharpen(p, 0.1)
    s.sum().backward()
    assert torch.isfinite(s).all() and torch.isfinite(p.grad).all()
    assert s[0].item() == 0.0 and s[-1].item() == 1.0


# -- the repository's Dice ---------------------------------------------------------------------------------------------
def test_dice_by_hand_pooled_unsquared():
    p = torch.tensor([[0.9, 0.2], [0.6, 0.1]], dtype=torch.float64)  # 2 labeled samples × 2 voxels
    g = torch.tensor([[True, False], [True, False]])
    # Σpg = 1.5, Σp = 1.8, Σg = 2: 1 − (3 + 1e−8)/(3.8 + 1e−8) = 0.8/3.8 = 0.2105263
    assert binary_dice_loss(p, g).item() == pytest.approx(1 - (3 + 1e-8) / (3.8 + 1e-8), abs=1e-12)
    assert binary_dice_loss(p, g).item() == pytest.approx(0.2105263158, abs=1e-9)
    # not the squared-denominator variant (1 − 3/(Σp² + Σg²) = 1 − 3/3.22 = 0.0683) ...
    assert binary_dice_loss(p, g).item() != pytest.approx(1 - 3 / 3.22, abs=1e-3)
    # ... and not a mean of per-sample Dice ((1 − 1.8/2.1) + (1 − 1.2/1.7))/2 = 0.2184874
    assert binary_dice_loss(p, g).item() != pytest.approx(0.2184874, abs=1e-4)


def test_dice_epsilon_decides_the_empty_case():
    zeros = torch.zeros(2, 3)
    assert binary_dice_loss(zeros, zeros.bool()).item() == 0.0  # 1 − 1e−8/1e−8
    assert binary_dice_loss(zeros, zeros.bool(), eps=1.0).item() == 0.0
    p, g = torch.tensor([0.5], dtype=torch.float64), torch.tensor([1])
    assert binary_dice_loss(p, g, eps=1.0).item() == pytest.approx(1 - 2 / 2.5, abs=1e-12)  # (1 + 1)/(1.5 + 1)


# -- mutual consistency -----------------------------------------------------------------------------------------------
S7, S6 = 0.9997910024, 0.9829540725  # s(0.7), s(0.6) at T = 0.1
# ordered pairs (i, j) → (p_i − s(p_j))² for p = (0.7, 0.6, 0.5), s = (S7, S6, 0.5):
PAIRS = [(0.7 - S6) ** 2, (0.7 - 0.5) ** 2, (0.6 - S7) ** 2, (0.6 - 0.5) ** 2, (0.5 - S7) ** 2, (0.5 - S6) ** 2]
L_ONE_VOXEL = 0.7729315  # 0.0800630 + 0.04 + 0.1598329 + 0.01 + 0.2497910 + 0.2332447


def two_channel(p_fg: float) -> torch.Tensor:
    return torch.tensor([1 - p_fg, p_fg], dtype=torch.float64).reshape(1, 2, 1, 1, 1)


def test_mutual_consistency_one_voxel_by_hand():
    assert sum(PAIRS) == pytest.approx(L_ONE_VOXEL, abs=1e-7)
    probs = [two_channel(p) for p in (0.7, 0.6, 0.5)]
    cons = mutual_consistency(probs, [sharpen(p, 0.1) for p in probs])
    assert cons.item() == pytest.approx(sum(PAIRS), abs=1e-9)  # both channels give the same terms: mean unchanged
    fg_only = mutual_consistency([p[:, 1:] for p in probs], [sharpen(p, 0.1)[:, 1:] for p in probs])
    assert fg_only.item() == pytest.approx(cons.item(), abs=1e-12)
    # a sum over the 6 ordered pairs, not a mean over them, and the pairs (i, i) are left out
    assert cons.item() != pytest.approx(sum(PAIRS) / 6, abs=1e-3)


def test_mutual_consistency_means_over_every_element():
    a = torch.tensor([0.0, 1.0], dtype=torch.float64)
    b = torch.tensor([0.5, 0.5], dtype=torch.float64)
    # pairs: (a − b)² mean = 0.25, (b − a)² mean = 0.25
    assert mutual_consistency([a, b], [a, b]).item() == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(ValueError, match="sharpened"):
        mutual_consistency([a, b], [a])


def sharpen_slope(p: float, temperature: float = 0.1) -> float:
    """ds/dp = e·(p(1 − p))^(e − 1) / (p^e + (1 − p)^e)², e = 1/T."""
    e = 1 / temperature
    return e * (p * (1 - p)) ** (e - 1) / (p**e + (1 - p) ** e) ** 2


def test_gradient_flows_through_the_sharpened_targets():
    p = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.7, 0.6, 0.5)]
    cons = mutual_consistency(p, [sharpen(v, 0.1) for v in p])
    cons.backward()
    # ∂L/∂p2 = 2[(p2 − s1) + (p2 − s3)] (p2 as the prediction) − 2[(p1 − s2) + (p3 − s2)]·s'(p2) (p2 as a target)
    student = 2 * ((0.6 - S7) + (0.6 - 0.5))  # −0.599582
    target = -2 * ((0.7 - S6) + (0.5 - S6)) * sharpen_slope(0.6)  # s'(0.6) = 0.698140 → +1.069422
    assert sharpen_slope(0.6) == pytest.approx(0.698140, abs=1e-6)
    assert p[1].grad.item() == pytest.approx(student + target, abs=1e-9)  # 0.469840, a detached target: −0.599582
    assert p[1].grad.item() == pytest.approx(0.469840, abs=1e-6)


# -- the whole step with a stand-in three-decoder network -------------------------------------------------------------
def logit(p: float) -> float:
    return math.log(p / (1 - p))


class ThreeFixedLogits(nn.Module):
    """Three decoders whose logits are parameters `[4, 2, 1, 1, 1]` (background 0, foreground logit(p)): sample 0
    has foreground probabilities (0.7, 0.6, 0.5) in decoders 1–3, samples 1–3 have 0.5 everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.ParameterList()
        for p in (0.7, 0.6, 0.5):
            values = torch.zeros(4, 2, 1, 1, 1, dtype=torch.float64)
            values[0, 1] = logit(p)
            self.logits.append(nn.Parameter(values))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        assert x.shape == (4, 1, 1, 1, 1)
        return tuple(self.logits)


def hand_batch() -> Batch:
    return Batch(x=torch.zeros(4, 1, 1, 1, 1), y=torch.tensor([1, 0]).reshape(2, 1, 1, 1), n_labeled=2)


# Dice of decoder d on the labeled samples (p_d, 0.5) with labels (1, 0): 1 − (2·p_d + ε)/(p_d + 0.5 + 1 + ε)
DICE = [1 - (2 * p + 1e-8) / (p + 1.5 + 1e-8) for p in (0.7, 0.6, 0.5)]  # 0.8/2.2, 0.9/2.1, 0.5
# consistency: sample 0 (both channels) gives the one-voxel terms, samples 1–3 give 0; mean over 4 × 2 elements
CONS = 2 * sum(PAIRS) / 8  # 0.1932329


@pytest.mark.parametrize(
    ("it", "weight"),
    [
        (0, math.exp(-5)),
        (148, math.exp(-5)),
        (149, 0.008624701),
        (2999, 0.2865048),
        (5998, 0.9968799),
        (5999, 1.0),
        (14999, 1.0),
    ],
)
def test_total_with_the_ramp_by_hand(it, weight):
    """Step t (0-based) uses r(⌊(t + 1)/150⌋, 40): the reference increments iter_num before the weight. The step
    computes in float32 (logits cast), hence the tolerances."""
    m = method()
    m.net = ThreeFixedLogits()
    out = m.training_step(hand_batch(), Progress(it=it, max_it=15000, lr=0.01))
    assert pytest.approx([0.8 / 2.2, 0.9 / 2.1, 0.5], abs=1e-8) == DICE
    assert [out.logs[f"loss/dice{d}"] for d in (1, 2, 3)] == pytest.approx(DICE, abs=1e-7)
    assert out.logs["loss/dice"] == pytest.approx(sum(DICE), abs=1e-7)  # 1.2922078
    assert out.logs["loss/cons"] == pytest.approx(CONS, abs=1e-7)
    assert out.logs["w/cons"] == pytest.approx(weight, abs=1e-7)
    assert out.loss.item() == pytest.approx(0.5 * sum(DICE) + weight * CONS, abs=1e-7)  # no CE, no 1/3


def test_consistency_covers_labeled_samples_and_its_targets_take_gradients():
    m = method(dice_weight=0.0)
    m.net = ThreeFixedLogits()
    out = m.training_step(hand_batch(), Progress(it=5999, max_it=15000, lr=0.01))  # w = 1: loss = L_cons
    assert out.loss.item() == pytest.approx(CONS, abs=1e-7)  # sample 0 is labeled: on unlabeled only it would be 0
    out.loss.backward()
    # only sample 0's foreground logit of decoder 2 moves p_2 there: ∂L/∂l = (2/8)·∂f/∂p2·p2(1 − p2), and the
    # background logit the negative of it
    df_dp2 = 2 * ((0.6 - S7) + (0.6 - 0.5)) - 2 * ((0.7 - S6) + (0.5 - S6)) * sharpen_slope(0.6)
    grad = m.net.logits[1].grad
    assert grad[0, 1].item() == pytest.approx(0.25 * df_dp2 * 0.24, abs=1e-7)  # +0.028190; detached: −0.035975
    assert grad[0, 0].item() == pytest.approx(-grad[0, 1].item(), abs=1e-7)
    assert grad[1:].abs().max().item() == 0.0


def test_config_defaults_are_the_reference_values():
    cfg = Config()
    assert (cfg.temperature, cfg.dice_weight, cfg.dice_eps, cfg.consistency_weight) == (0.1, 0.5, 1e-8, 1.0)
    assert cfg.ramp == (150, 40.0) and cfg.has_dropout is True
    for bad in ({"temperature": 0.0}, {"dice_eps": -1.0}, {"ramp": (0, 40.0)}):
        with pytest.raises(ValueError):
            Config(**bad)


def test_refuses_sentinel_labels():
    m = method()
    m.net = ThreeFixedLogits()
    batch = hand_batch()
    with pytest.raises(ValueError, match="sentinel"):
        m.training_step(Batch(x=batch.x, y=-batch.y, n_labeled=2), Progress(0, 10, 0.01))


# -- the network -------------------------------------------------------------------------------------------------------
def test_parameter_count_is_the_references():
    net = build_net("mcnet3d_v2", n_channels=1, n_classes=2, n_filters=16)
    assert type(net) is MCNet3dV2
    assert count_parameters(net) == 15_246_566
    parts = [count_parameters(getattr(net, k)) for k in ("encoder", "decoder1", "decoder2", "decoder3")]
    assert parts == [7_376_896, 2_071_970, 2_898_850, 2_898_850]
    assert count_parameters(net.decoder1.block_five_up) == 262_272 + 256  # 8·256·128 + 128, BN 2·128
    assert count_parameters(net.decoder2.block_five_up) == 884_864 + 256  # 27·256·128 + 128
    assert count_parameters(net.decoder1.out_conv) == 34 and count_parameters(net.encoder.block_one.conv[0]) == 448
    assert count_parameters(build_net("vnet", n_filters=16)) == parts[0] + parts[1]  # encoder + decoder 1 = V-Net
    sd = net.state_dict()
    counts = [sum(k.startswith(p + ".") for k in sd) for p in ("encoder", "decoder1", "decoder2", "decoder3")]
    assert len(sd) == 391 and counts == [112, 93, 93, 93]
    bn = sum(v.numel() for k, v in sd.items() if k.rsplit(".", 1)[1] in ("running_mean", "running_var"))
    assert bn + sum(k.endswith("num_batches_tracked") for k in sd) == 9_239


def test_three_decoders_shapes_and_up_sampling():
    torch.manual_seed(0)
    net = build_net("mcnet3d_v2", n_filters=2).eval()
    x = torch.randn(2, 1, 32, 16, 16)
    with torch.no_grad():
        outs = net(x)
    assert len(outs) == 3 and all(o.shape == (2, 2, 32, 16, 16) for o in outs)
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])
    assert isinstance(net.decoder1.block_five_up.conv[0], nn.ConvTranspose3d)
    for decoder, mode, align in ((net.decoder2, "trilinear", True), (net.decoder3, "nearest", None)):
        up = decoder.block_eight_up.conv
        assert isinstance(up[0], nn.Upsample) and up[0].scale_factor == 2
        assert (up[0].mode, up[0].align_corners) == (mode, align)
        assert isinstance(up[1], nn.Conv3d) and up[1].kernel_size == (3, 3, 3) and isinstance(up[2], nn.BatchNorm3d)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.zeros(1, 1, 16, 16, 8))


def test_dropout_shared_bottleneck_and_one_per_decoder():
    net = build_net("mcnet3d_v2", n_filters=2, has_dropout=True)
    drops = [name for name, m in net.named_modules() if isinstance(m, nn.Dropout3d)]
    assert drops == ["encoder.dropout", "decoder1.dropout", "decoder2.dropout", "decoder3.dropout"]
    calls = []
    for name, m in net.named_modules():
        if isinstance(m, nn.Dropout3d):
            m.register_forward_hook(lambda mod, inp, out, name=name: calls.append(name))
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        a, b = net(x), net(x)
        assert not torch.equal(a[0], b[0])
        assert calls == drops * 2  # the bottleneck drawn once per forward, shared by the three decoders
        net.eval()
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)
    assert not any(isinstance(m, nn.Dropout3d) for m in build_net("mcnet3d_v2", n_filters=2).modules())


def test_eval_network_is_decoder_1_and_runs_only_decoder_1():
    m = method()
    net = m.eval_network()
    assert isinstance(net, Decoder1) and net.net is m.net and m.output_kind == "softmax"
    assert set(m.modules()) == {"net"} and m.net.has_dropout
    ran = []
    for name in ("decoder1", "decoder2", "decoder3"):
        getattr(m.net, name).register_forward_hook(lambda mod, inp, out, name=name: ran.append(name))
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.no_grad():
        out = net(x)
        assert ran == ["decoder1"]
        torch.testing.assert_close(out, m.net(x)[0], rtol=0, atol=0)
    assert out.shape == (1, 2, 16, 16, 16)


# -- the reference state_dict: keys as docs/methods/mcnet_plus.md lists them, an independent forward ------------------
ENCODER = [("block_one", 1), ("block_two", 2), ("block_three", 3), ("block_four", 3), ("block_five", 3)]
DECODER = [("block_six", 3), ("block_seven", 3), ("block_eight", 2), ("block_nine", 1)]
UPS = ["block_five_up", "block_six_up", "block_seven_up", "block_eight_up"]


def _bn(prefix: str, c: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": 1 + 0.3 * torch.randn(c, generator=g),
        f"{prefix}.bias": 0.3 * torch.randn(c, generator=g),
        f"{prefix}.running_mean": 0.3 * torch.randn(c, generator=g),
        f"{prefix}.running_var": 0.5 + torch.rand(c, generator=g),
        f"{prefix}.num_batches_tracked": torch.tensor(77),
    }


def _conv(prefix: str, shape: tuple[int, ...], n_out: int, fan_in: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.randn(*shape, generator=g) * (2.0 / fan_in) ** 0.5,
        f"{prefix}.bias": 0.1 * torch.randn(n_out, generator=g),
    }


def reference_state_dict(f: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """MCNet3d_v2 keys: conv of unit s at `conv.{3s}`, its BN at `conv.{3s+1}`; decoder1's up-blocks ConvTranspose
    `conv.0` [in, out, 2, 2, 2] + BN `conv.1`; decoder2/3's Upsample at `conv.0`, Conv `conv.1` [out, in, 3, 3, 3],
    BN `conv.2`."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, (name, units) in enumerate(ENCODER):
        c, c_in = f * 2**k, (1 if k == 0 else f * 2**k)
        for i in range(units):
            cin = c_in if i == 0 else c
            sd |= _conv(f"encoder.{name}.conv.{3 * i}", (c, cin, 3, 3, 3), c, 27 * cin, g)
            sd |= _bn(f"encoder.{name}.conv.{3 * i + 1}", c, g)
        if k < 4:
            sd |= _conv(f"encoder.{name}_dw.conv.0", (2 * c, c, 2, 2, 2), 2 * c, 8 * c, g)
            sd |= _bn(f"encoder.{name}_dw.conv.1", 2 * c, g)
    for d in (1, 2, 3):
        for k, ((name, units), up) in enumerate(zip(DECODER, UPS, strict=True)):
            c = f * 2 ** (3 - k)
            if d == 1:
                sd |= _conv(f"decoder1.{up}.conv.0", (2 * c, c, 2, 2, 2), c, 16 * c, g)
                sd |= _bn(f"decoder1.{up}.conv.1", c, g)
            else:
                sd |= _conv(f"decoder{d}.{up}.conv.1", (c, 2 * c, 3, 3, 3), c, 54 * c, g)
                sd |= _bn(f"decoder{d}.{up}.conv.2", c, g)
            for i in range(units):
                sd |= _conv(f"decoder{d}.{name}.conv.{3 * i}", (c, c, 3, 3, 3), c, 27 * c, g)
                sd |= _bn(f"decoder{d}.{name}.conv.{3 * i + 1}", c, g)
        sd |= _conv(f"decoder{d}.out_conv", (2, f, 1, 1, 1), 2, f, g)
    return sd


def _norm_relu(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    stats = (sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"])
    return F.relu(F.batch_norm(x, *stats, False, 0.0, 1e-5))


def _units(x: torch.Tensor, sd: dict[str, torch.Tensor], name: str, units: int) -> torch.Tensor:
    for i in range(units):
        x = F.conv3d(x, sd[f"{name}.conv.{3 * i}.weight"], sd[f"{name}.conv.{3 * i}.bias"], padding=1)
        x = _norm_relu(x, sd, f"{name}.conv.{3 * i + 1}")
    return x


def reference_forward(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Eval-mode MCNet3d_v2 (dropout inactive): one encoder, three decoders."""
    skips = []
    for k, (name, units) in enumerate(ENCODER):
        x = _units(x, sd, f"encoder.{name}", units)
        if k < 4:
            skips.append(x)
            x = F.conv3d(x, sd[f"encoder.{name}_dw.conv.0.weight"], sd[f"encoder.{name}_dw.conv.0.bias"], stride=2)
            x = _norm_relu(x, sd, f"encoder.{name}_dw.conv.1")
    outs = []
    for d in (1, 2, 3):
        h = x
        for (name, units), up, skip in zip(DECODER, UPS, reversed(skips), strict=True):
            p = f"decoder{d}.{up}.conv"
            if d == 1:
                h = _norm_relu(F.conv_transpose3d(h, sd[f"{p}.0.weight"], sd[f"{p}.0.bias"], stride=2), sd, f"{p}.1")
            else:
                mode = {"mode": "trilinear", "align_corners": True} if d == 2 else {"mode": "nearest"}
                h = F.conv3d(
                    F.interpolate(h, scale_factor=2, **mode), sd[f"{p}.1.weight"], sd[f"{p}.1.bias"], padding=1
                )
                h = _norm_relu(h, sd, f"{p}.2")
            h = _units(h + skip, sd, f"decoder{d}.{name}", units)
        outs.append(F.conv3d(h, sd[f"decoder{d}.out_conv.weight"], sd[f"decoder{d}.out_conv.bias"]))
    return outs


def as_double(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}


@pytest.mark.parametrize("prefix", ["", "module."])
def test_reference_state_dict_maps_onto_the_three_decoder_net(prefix):
    sd = reference_state_dict(f=4, seed=3)
    assert len(sd) == 391
    x = torch.randn(2, 1, 16, 16, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = reference_forward(x, as_double(sd))
    net = build_net("mcnet3d_v2", n_filters=4, has_dropout=True)
    mapped = reference_to_mcnet({prefix + k: v for k, v in sd.items()})
    assert set(mapped) == set(net.state_dict()) == set(sd)  # every key, nothing silently dropped
    load_reference_state_dict(net, mapped)
    net = net.double().eval()
    with torch.no_grad():
        outs = net(x)
        head = Decoder1(net)(x)
    for out, exp in zip(outs, expected, strict=True):
        assert exp.abs().mean() > 0.1
        torch.testing.assert_close(out, exp, rtol=0, atol=1e-9)
    torch.testing.assert_close(head, expected[0], rtol=0, atol=0)
    assert int(net.decoder3.block_five_up.conv[2].num_batches_tracked) == 77


def test_reference_decoder1_loads_into_the_one_decoder_vnet_as_test_3d_does():
    sd = reference_state_dict(f=4, seed=4)
    x = torch.randn(1, 1, 16, 32, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    vnet = build_net("vnet", n_filters=4)
    mapped = reference_decoder1_to_vnet({"module." + k: v for k, v in sd.items()})
    assert len(mapped) == 112 + 93 == len(vnet.state_dict())  # decoders 2 and 3 dropped
    load_reference_state_dict(vnet, mapped)
    assert isinstance(vnet, VNet)
    with torch.no_grad():
        torch.testing.assert_close(vnet.double().eval()(x), reference_forward(x, as_double(sd))[0], rtol=0, atol=1e-9)


def test_reference_mapping_refuses_other_state_dicts():
    sd = reference_state_dict(f=2)
    with pytest.raises(ValueError, match="outside"):
        reference_to_mcnet({**sd, "block_one.conv.0.weight": torch.zeros(1)})  # a UA-MT VNet key
    with pytest.raises(ValueError, match="decoder3"):
        reference_to_mcnet({k: v for k, v in sd.items() if not k.startswith("decoder3.")})  # MCNet3d_v1
    with pytest.raises(ValueError, match="outside"):
        reference_decoder1_to_vnet({"block_one.conv.0.weight": torch.zeros(1)})
    net = build_net("mcnet3d_v2", n_filters=2)
    with pytest.raises(ValueError, match="missing keys"):  # strict, unlike the reference's strict=False
        load_reference_state_dict(net, {k: v for k, v in sd.items() if not k.startswith("decoder2.")})
    with pytest.raises(ValueError, match="shape mismatches"):
        load_reference_state_dict(net, reference_state_dict(f=4))
