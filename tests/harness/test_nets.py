"""Tests of harness.nets: parameter counts (docs/methods/README.md §1.1 table), shapes, dropout, feature taps,
registry errors, and loading of reference-code checkpoints checked against an independent functional
re-implementation of the reference architecture written from docs/methods/README.md §1.1–1.2 (not from
harness/nets/vnet.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.nets import VNet, VNetSDF, build_net, count_parameters, load_reference_state_dict, network_names

# --------------------------------------------------------------------------------------------------------------------
# Parameter counts


@pytest.fixture(scope="module")
def full_vnet() -> nn.Module:
    torch.manual_seed(0)
    return build_net("vnet", n_channels=1, n_classes=2, n_filters=16, normalization="batchnorm")


def test_total_parameters_vnet(full_vnet: nn.Module) -> None:
    assert count_parameters(full_vnet) == 9_448_866


def test_total_parameters_vnet_sdf() -> None:
    net = build_net("vnet_sdf", n_channels=1, n_classes=1, n_filters=16)
    assert count_parameters(net) == 9_448_866
    assert count_parameters(net.out_conv) == count_parameters(net.out_conv2) == 17


METHODS_TABLE = {  # docs/methods/README.md §1.1, block → parameters
    "block_one": 480,
    "block_one_dw": 4_192,
    "block_two": 55_488,
    "block_two_dw": 16_576,
    "block_three": 332_352,
    "block_three_dw": 65_920,
    "block_four": 1_328_256,
    "block_four_dw": 262_912,
    "block_five": 5_310_720,
    "block_five_up": 262_528,
    "block_six": 1_328_256,
    "block_six_up": 65_728,
    "block_seven": 332_352,
    "block_seven_up": 16_480,
    "block_eight": 55_488,
    "block_eight_up": 4_144,
    "block_nine": 6_960,
    "out_conv": 34,
}


@pytest.mark.parametrize("block", list(METHODS_TABLE))
def test_block_parameters_match_methods_table(full_vnet: nn.Module, block: str) -> None:
    assert count_parameters(getattr(full_vnet, block)) == METHODS_TABLE[block]


def test_encoder_decoder_split(full_vnet: nn.Module) -> None:
    blocks = list(METHODS_TABLE)
    encoder = sum(count_parameters(getattr(full_vnet, b)) for b in blocks[: blocks.index("block_five") + 1])
    assert encoder == 7_376_896
    assert count_parameters(full_vnet) - encoder == 2_071_970


def test_count_parameters_skips_frozen() -> None:
    net = build_net("vnet", n_filters=2)
    total = count_parameters(net)
    net.out_conv.weight.requires_grad_(False)
    assert count_parameters(net) == total - net.out_conv.weight.numel()


# --------------------------------------------------------------------------------------------------------------------
# Shapes and feature taps


@pytest.mark.parametrize("size", [(16, 16, 16), (32, 32, 16)])
def test_output_and_tap_shapes(size: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    f = 4
    net = build_net("vnet", n_filters=f).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        out = net(x)
        feats = net.forward_features(x)
    small = tuple(s // 16 for s in size)
    assert out.shape == (2, 2, *size)
    assert feats["logits"].shape == (2, 2, *size)
    assert feats["feat_bottleneck"].shape == (2, 16 * f, *small)
    assert feats["feat_top"].shape == (2, f, *size)
    torch.testing.assert_close(feats["logits"], out, rtol=0, atol=0)
    torch.testing.assert_close(net.out_conv(feats["feat_top"]), out, rtol=0, atol=0)


def test_encode_scales() -> None:
    net = build_net("vnet", n_filters=2).eval()
    with torch.no_grad():
        feats = net.encode(torch.randn(1, 1, 32, 32, 16))
    assert [tuple(t.shape) for t in feats] == [
        (1, 2, 32, 32, 16),
        (1, 4, 16, 16, 8),
        (1, 8, 8, 8, 4),
        (1, 16, 4, 4, 2),
        (1, 32, 2, 2, 1),
    ]


def test_vnet_sdf_outputs() -> None:
    torch.manual_seed(0)
    net = build_net("vnet_sdf", n_classes=1, n_filters=4).eval()
    x = torch.randn(2, 1, 32, 32, 16)
    with torch.no_grad():
        sdm, seg = net(x)
        feats = net.forward_features(x)
    assert sdm.shape == seg.shape == (2, 1, 32, 32, 16)
    assert sdm.abs().max() <= 1.0
    torch.testing.assert_close(feats["sdm"], sdm, rtol=0, atol=0)
    torch.testing.assert_close(feats["logits"], seg, rtol=0, atol=0)
    torch.testing.assert_close(torch.tanh(net.out_conv(feats["feat_top"])), sdm, rtol=0, atol=0)
    assert feats["feat_bottleneck"].shape == (2, 64, 2, 2, 1)


@pytest.mark.parametrize("normalization", ["groupnorm", "instancenorm", "none"])
def test_other_normalizations(normalization: str) -> None:
    torch.manual_seed(0)
    f = 16 if normalization == "groupnorm" else 2
    net = build_net("vnet", n_filters=f, normalization=normalization)
    norm_types = {"groupnorm": nn.GroupNorm, "instancenorm": nn.InstanceNorm3d, "none": ()}[normalization]
    assert not any(isinstance(m, nn.BatchNorm3d) for m in net.modules())
    if normalization == "none":
        # Sequential indices shift as in the reference: conv, relu, conv, relu, ...
        assert isinstance(net.block_two.conv[2], nn.Conv3d)
        assert len(net.block_two.conv) == 4
    else:
        assert isinstance(net.block_one.conv[1], norm_types)
    out = net(torch.randn(2, 1, 32, 32, 32 if normalization == "instancenorm" else 16))
    assert out.shape[1] == 2 and torch.isfinite(out).all()


def test_groupnorm_needs_16_divisible_channels() -> None:
    with pytest.raises(ValueError, match="groupnorm"):
        build_net("vnet", n_filters=4, normalization="groupnorm")


def test_bad_normalization() -> None:
    with pytest.raises(ValueError, match="normalization"):
        build_net("vnet", normalization="layernorm")


# --------------------------------------------------------------------------------------------------------------------
# Dropout


class _Recorder(nn.Module):
    """Wraps a module and keeps its inputs and outputs."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        self.inputs.append(x)
        self.outputs.append(y)
        return y


def test_dropout_active_only_in_train_mode() -> None:
    torch.manual_seed(0)
    net = build_net("vnet", n_filters=4, has_dropout=True)
    assert sum(isinstance(m, nn.Dropout3d) for m in net.modules()) == 1
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        a, b = net(x), net(x)
        assert not torch.allclose(a, b)
        net.eval()
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)


def test_no_dropout_module_without_has_dropout() -> None:
    net = build_net("vnet", n_filters=4, has_dropout=False)
    assert not any(isinstance(m, nn.Dropout3d) for m in net.modules())
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():  # train mode: batch statistics, still deterministic without dropout
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["vnet", "vnet_sdf"])
def test_taps_are_taken_before_dropout(name: str) -> None:
    torch.manual_seed(0)
    net = build_net(name, n_classes=1 if name == "vnet_sdf" else 2, n_filters=4, has_dropout=True)
    rec = _Recorder(net.dropout)
    net.dropout = rec
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        feats = net.forward_features(x)
    assert len(rec.inputs) == 2  # x5 and x9
    assert feats["feat_bottleneck"] is rec.inputs[0]
    assert feats["feat_top"] is rec.inputs[1]
    assert not torch.equal(rec.outputs[1], rec.inputs[1])  # dropout did act on x9 ...
    head = net.out_conv2 if name == "vnet_sdf" else net.out_conv
    torch.testing.assert_close(feats["logits"], head(rec.outputs[1]), rtol=0, atol=0)  # ... and the head saw it


def test_forward_features_logits_equal_forward_under_dropout() -> None:
    net = build_net("vnet", n_filters=4, has_dropout=True)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.manual_seed(1)
        feats = net.forward_features(x)
        torch.manual_seed(1)
        out = net(x)
    torch.testing.assert_close(feats["logits"], out, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------------------
# Registry and input errors


def test_build_net_unknown_name() -> None:
    with pytest.raises(KeyError, match="vnet_sdf") as err:
        build_net("unet")
    assert "unet" in str(err.value) and "vnet" in str(err.value)
    assert network_names() == ["mcnet3d_v2", "vnet", "vnet_sdf"]


def test_build_net_types() -> None:
    assert type(build_net("vnet", n_filters=2)) is VNet
    assert type(build_net("vnet_sdf", n_classes=1, n_filters=2)) is VNetSDF


@pytest.mark.parametrize("shape", [(1, 1, 16, 16, 8), (1, 1, 24, 16, 16), (1, 1, 16, 20, 16)])
def test_patch_side_not_divisible_by_16(shape: tuple[int, ...]) -> None:
    net = build_net("vnet", n_filters=2)
    with pytest.raises(ValueError, match="divisible by 16") as err:
        net(torch.zeros(shape))
    assert str(tuple(shape)) in str(err.value)


def test_wrong_input_rank_or_channels() -> None:
    net = build_net("vnet_sdf", n_classes=1, n_filters=2)
    with pytest.raises(ValueError, match=r"\[B, 1, X, Y, Z\]"):
        net(torch.zeros(1, 16, 16, 16))
    with pytest.raises(ValueError, match=r"\(1, 2, 16, 16, 16\)"):
        net(torch.zeros(1, 2, 16, 16, 16))


# --------------------------------------------------------------------------------------------------------------------
# Independent functional reference of the UA-MT VNet / DTC VNet_sdf (docs/methods/README.md §1.1–1.2), reference key
# names.
# A conv block `name` holds a Sequential `conv`: per conv unit, conv at index 3i, BatchNorm at 3i + 1, ReLU at 3i + 2.
# Down: conv.0 = Conv3d k2 s2, conv.1 = BN. Up: conv.0 = ConvTranspose3d k2 s2 (weight [in, out, 2, 2, 2]), conv.1 = BN.

ENCODER = [("block_one", 1), ("block_two", 2), ("block_three", 3), ("block_four", 3), ("block_five", 3)]
DECODER = [("block_six", 3), ("block_seven", 3), ("block_eight", 2), ("block_nine", 1)]


def _bn_entries(prefix: str, c: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": 1 + 0.3 * torch.randn(c, generator=g),
        f"{prefix}.bias": 0.3 * torch.randn(c, generator=g),
        f"{prefix}.running_mean": 0.5 * torch.randn(c, generator=g),
        f"{prefix}.running_var": 0.5 + torch.rand(c, generator=g),
        f"{prefix}.num_batches_tracked": torch.tensor(1234, dtype=torch.long),
    }


def _conv_entries(prefix: str, shape: tuple[int, ...], fan_in: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    n_out = shape[1] if prefix.endswith("_up.conv.0") else shape[0]
    return {
        f"{prefix}.weight": torch.randn(*shape, generator=g) * (2.0 / fan_in) ** 0.5,
        f"{prefix}.bias": 0.1 * torch.randn(n_out, generator=g),
    }


def _reference_state_dict(f: int, n_classes: int, dual: bool, seed: int) -> dict[str, torch.Tensor]:
    """Random state_dict with the reference keys and shapes, built from the §1.1 table (n_channels = 1)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, (name, units) in enumerate(ENCODER):  # stage k+1 has f * 2**k channels
        c, c_in = f * 2**k, (1 if k == 0 else f * 2**k)
        for i in range(units):
            cin = c_in if i == 0 else c
            sd |= _conv_entries(f"{name}.conv.{3 * i}", (c, cin, 3, 3, 3), 27 * cin, g)
            sd |= _bn_entries(f"{name}.conv.{3 * i + 1}", c, g)
        if k < 4:
            sd |= _conv_entries(f"{name}_dw.conv.0", (2 * c, c, 2, 2, 2), 8 * c, g)
            sd |= _bn_entries(f"{name}_dw.conv.1", 2 * c, g)
    ups = ["block_five_up", "block_six_up", "block_seven_up", "block_eight_up"]
    for k, ((name, units), up) in enumerate(zip(DECODER, ups, strict=True)):  # decoder stage k at f * 2**(3-k)
        c = f * 2 ** (3 - k)
        sd |= _conv_entries(f"{up}.conv.0", (2 * c, c, 2, 2, 2), 8 * 2 * c, g)
        sd |= _bn_entries(f"{up}.conv.1", c, g)
        for i in range(units):
            sd |= _conv_entries(f"{name}.conv.{3 * i}", (c, c, 3, 3, 3), 27 * c, g)
            sd |= _bn_entries(f"{name}.conv.{3 * i + 1}", c, g)
    heads = ["out_conv", "out_conv2"] if dual else ["out_conv"]
    for head in heads:
        sd |= _conv_entries(head, (n_classes, f, 1, 1, 1), f, g)
    return sd


def _bn(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.batch_norm(
        x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5
    )


def _stage(x: torch.Tensor, sd: dict[str, torch.Tensor], name: str, units: int) -> torch.Tensor:
    for i in range(units):
        x = F.conv3d(x, sd[f"{name}.conv.{3 * i}.weight"], sd[f"{name}.conv.{3 * i}.bias"], padding=1)
        x = F.relu(_bn(x, sd, f"{name}.conv.{3 * i + 1}"))
    return x


def _reference_forward(x: torch.Tensor, sd: dict[str, torch.Tensor], dual: bool):
    """Eval-mode forward of the reference VNet (dropout inactive in eval)."""
    skips = []
    for k, (name, units) in enumerate(ENCODER):
        x = _stage(x, sd, name, units)
        if k < 4:
            skips.append(x)
            x = F.conv3d(x, sd[f"{name}_dw.conv.0.weight"], sd[f"{name}_dw.conv.0.bias"], stride=2)
            x = F.relu(_bn(x, sd, f"{name}_dw.conv.1"))
    ups = ["block_five_up", "block_six_up", "block_seven_up", "block_eight_up"]
    for (name, units), up in zip(DECODER, ups, strict=True):
        x = F.conv_transpose3d(x, sd[f"{up}.conv.0.weight"], sd[f"{up}.conv.0.bias"], stride=2)
        x = F.relu(_bn(x, sd, f"{up}.conv.1")) + skips.pop()
        x = _stage(x, sd, name, units)
    out = F.conv3d(x, sd["out_conv.weight"], sd["out_conv.bias"])
    if dual:
        return torch.tanh(out), F.conv3d(x, sd["out_conv2.weight"], sd["out_conv2.bias"])
    return out


@pytest.mark.parametrize("prefix", ["", "module."])
def test_reference_checkpoint_vnet(prefix: str) -> None:
    sd = _reference_state_dict(f=4, n_classes=2, dual=False, seed=3)
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = _reference_forward(x, {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}, False)
    net = build_net("vnet", n_classes=2, n_filters=4, has_dropout=True)
    load_reference_state_dict(net, {prefix + k: v for k, v in sd.items()})
    net = net.double().eval()
    with torch.no_grad():
        out = net(x)
    assert expected.abs().mean() > 0.1  # non-trivial activations reach the output
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert int(net.block_one.conv[1].num_batches_tracked) == 1234


@pytest.mark.parametrize("prefix", ["", "module."])
def test_reference_checkpoint_vnet_sdf(prefix: str) -> None:
    sd = _reference_state_dict(f=4, n_classes=1, dual=True, seed=4)
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    sdm_ref, seg_ref = _reference_forward(
        x, {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}, True
    )
    net = build_net("vnet_sdf", n_classes=1, n_filters=4)
    load_reference_state_dict(net, {prefix + k: v for k, v in sd.items()})
    net = net.double().eval()
    with torch.no_grad():
        sdm, seg = net(x)
    assert seg_ref.abs().mean() > 0.1 and not torch.allclose(sdm_ref, torch.tanh(seg_ref))
    torch.testing.assert_close(sdm, sdm_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(seg, seg_ref, rtol=0, atol=1e-5)


def test_reference_key_set_equals_ours() -> None:
    for name, n_classes, dual in (("vnet", 2, False), ("vnet_sdf", 1, True)):
        ours = build_net(name, n_classes=n_classes, n_filters=4).state_dict()
        ref = _reference_state_dict(f=4, n_classes=n_classes, dual=dual, seed=0)
        assert list(ours) == list(ref)  # same registration order, not only the same set
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}


def test_reference_checkpoint_without_num_batches_tracked() -> None:
    sd = {k: v for k, v in _reference_state_dict(4, 2, False, 0).items() if not k.endswith("num_batches_tracked")}
    net = build_net("vnet", n_filters=4)
    load_reference_state_dict(net, sd)
    torch.testing.assert_close(net.block_nine.conv[1].running_var, sd["block_nine.conv.1.running_var"])


def test_reference_checkpoint_missing_key() -> None:
    sd = _reference_state_dict(4, 2, False, 0)
    del sd["block_three.conv.4.running_mean"]
    with pytest.raises(ValueError, match=r"missing keys: block_three\.conv\.4\.running_mean"):
        load_reference_state_dict(build_net("vnet", n_filters=4), sd)


def test_reference_checkpoint_wrong_shape_and_unexpected_key() -> None:
    sd = _reference_state_dict(4, 2, False, 0)
    sd["module.block_five_up.conv.0.weight"] = torch.zeros(32, 64, 2, 2, 2)  # transposed the wrong way round
    del sd["block_five_up.conv.0.weight"]
    sd["out_conv2.weight"] = torch.zeros(2, 4, 1, 1, 1)
    with pytest.raises(ValueError) as err:
        load_reference_state_dict(build_net("vnet", n_filters=4), sd)
    msg = str(err.value)
    assert "block_five_up.conv.0.weight: checkpoint (32, 64, 2, 2, 2) vs network (64, 32, 2, 2, 2)" in msg
    assert "unexpected keys: out_conv2.weight" in msg


def test_vnet_checkpoint_does_not_load_into_vnet_sdf() -> None:
    sd = _reference_state_dict(4, 1, False, 0)
    with pytest.raises(ValueError, match=r"missing keys: out_conv2\.weight, out_conv2\.bias"):
        load_reference_state_dict(build_net("vnet_sdf", n_classes=1, n_filters=4), sd)
