"""MC-Net+'s three-decoder V-Net `mcnet3d_v2` (docs/methods/mcnet_plus.md), built from the V-Net blocks of
`harness.nets.vnet`.

Source: ycwu1997/MC-Net @ fee453ca299a5d2c845cc2f3de4e416fd667d9c2, `code/networks/VNet.py` classes `Encoder`
(#L124-L166), `Decoder` (#L168-L217), `Upsampling_function` (#L94-L122), `MCNet3d_v2` (#L245-L259), and
`code/networks/net_factory.py` (#L17-L18 train: batchnorm, has_dropout=True; #L23-L24 test: has_dropout=False).

* One shared encoder (stages 1–5 of the V-Net: plain conv stacks, stride-2 conv down-sampling, BN, ReLU); with
  has_dropout, Dropout3d(0.5) on x5, drawn once and shared by the three decoders.
* Three decoders that differ only in their up-sampling (each followed by BN and ReLU, then the encoder feature of the
  same scale is ADDED): decoder1 ConvTranspose3d k2 s2 (type 0, the plain V-Net's), decoder2 trilinear ×2
  (align_corners=True) + Conv3d 3×3×3 (type 1), decoder3 nearest ×2 + Conv3d 3×3×3 (type 2). With has_dropout each
  decoder applies its own Dropout3d(0.5) to x9 before its 1×1×1 output conv (independent masks).
* forward(x) returns the three decoders' logits `(l1, l2, l3)`, each `[B, n_classes, X, Y, Z]`; the reference tests
  decoder 1 only (`code/test_3d.py#L44-L46`: a one-decoder VNet loaded with strict=False), which is `Decoder1` here.

Module names are the reference's, so its state_dict maps key for key (`encoder.block_one.conv.0.weight`,
`decoder1.block_five_up.conv.0.weight` (ConvTranspose, [in, out, 2, 2, 2]), `decoder2.block_five_up.conv.1.weight`
(Conv after the parameter-free Upsample at index 0), `decoder3.out_conv.bias`, ...): `reference_to_mcnet` checks and
maps a released `mcnet3d_v2_best_model.pth` onto `MCNet3dV2`, `reference_decoder1_to_vnet` maps its encoder and
decoder 1 onto the one-decoder `harness.nets.VNet` (what the reference test script evaluates).
Parameters for (1, 2, 16, "batchnorm"): encoder 7,376,896, decoder1 2,071,970, decoder2 = decoder3 2,898,850,
total 15,246,566 (the reference's, counted by instantiating it).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import torch
from torch import nn

from harness.nets.vnet import (
    DROPOUT_P,
    NORMALIZATIONS,
    UpsamplingDeconvBlock,
    _norm_layers,
    _SequentialBlock,
    add_decoder,
    add_encoder,
    run_decoder,
    run_encoder,
)

#: Up-sampling of decoder k+1 (the reference's `up_type` k): transposed conv, trilinear + conv, nearest + conv.
UP_TYPES = ("transposed", "trilinear", "nearest")
#: The reference's top-level modules (state_dict key prefixes).
PREFIXES = ("encoder", "decoder1", "decoder2", "decoder3")
DATAPARALLEL_PREFIX = "module."


class UpsamplingInterpBlock(_SequentialBlock):
    """×2 interpolation (`mode` "trilinear" with align_corners=True, or "nearest") → Conv3d 3×3×3, padding 1, bias →
    norm → ReLU; the Upsample sits at `conv.0`, so the conv is `conv.1` and the norm `conv.2`, as in the reference.

    Shapes: `[B, n_in, X, Y, Z]` → `[B, n_out, 2X, 2Y, 2Z]`.
    """

    def __init__(self, n_in: int, n_out: int, normalization: str, mode: str) -> None:
        super().__init__()
        if mode not in ("trilinear", "nearest"):
            raise ValueError(f"mode must be 'trilinear' or 'nearest'; got {mode!r}")
        upsample = nn.Upsample(scale_factor=2, mode=mode, align_corners=True if mode == "trilinear" else None)
        layers = [upsample, nn.Conv3d(n_in, n_out, kernel_size=3, padding=1)]
        self.conv = nn.Sequential(*layers, *_norm_layers(normalization, n_out), nn.ReLU(inplace=True))


def upsampling_block(up_type: str, n_in: int, n_out: int, normalization: str) -> nn.Module:
    """The ×2 up-sampling block of a decoder: `UpsamplingDeconvBlock` (the V-Net's) or `UpsamplingInterpBlock`."""
    if up_type == "transposed":
        return UpsamplingDeconvBlock(n_in, n_out, normalization)
    if up_type in ("trilinear", "nearest"):
        return UpsamplingInterpBlock(n_in, n_out, normalization, up_type)
    raise ValueError(f"up_type must be one of {UP_TYPES}; got {up_type!r}")


def _dropout(has_dropout: bool) -> nn.Module:
    """Dropout3d(0.5) (active in train mode only) or an Identity; neither holds parameters or buffers."""
    return nn.Dropout3d(p=DROPOUT_P) if has_dropout else nn.Identity()


class Encoder(nn.Module):
    """V-Net stages 1–5 (reference `Encoder`); forward returns [x1, x2, x3, x4, x5], x5 after the dropout."""

    def __init__(self, n_channels: int, n_filters: int, normalization: str, has_dropout: bool) -> None:
        super().__init__()
        add_encoder(self, n_channels, n_filters, normalization)
        self.dropout = _dropout(has_dropout)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        *skips, x5 = run_encoder(self, x)
        return [*skips, self.dropout(x5)]


class Decoder(nn.Module):
    """V-Net stages 6–9 with additive skips and the output conv (reference `Decoder`), up-sampling by `up_type`."""

    def __init__(self, n_classes: int, n_filters: int, normalization: str, has_dropout: bool, up_type: str) -> None:
        super().__init__()
        add_decoder(self, n_filters, normalization, partial(upsampling_block, up_type))
        self.out_conv = nn.Conv3d(n_filters, n_classes, kernel_size=1, padding=0)
        self.dropout = _dropout(has_dropout)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Logits `[B, n_classes, X, Y, Z]` from the encoder's [x1, .., x5]."""
        return self.out_conv(self.dropout(run_decoder(self, feats)))


class MCNet3dV2(nn.Module):
    """MC-Net+'s V-Net: one encoder, three decoders (transposed conv, trilinear, nearest up-sampling).

    Args:
        n_channels: input channels.
        n_classes: output channels of each decoder (2 in the reference: softmax).
        n_filters: channels of stage 1 (16 in the reference).
        normalization: one of `harness.nets.vnet.NORMALIZATIONS` ("batchnorm" in the reference).
        has_dropout: Dropout3d(0.5) on x5 (shared) and on each decoder's x9 (its own), in train mode only.
    """

    def __init__(
        self,
        n_channels: int = 1,
        n_classes: int = 2,
        n_filters: int = 16,
        normalization: str = "batchnorm",
        has_dropout: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("n_channels", n_channels), ("n_classes", n_classes), ("n_filters", n_filters)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.has_dropout = has_dropout
        self.encoder = Encoder(n_channels, n_filters, normalization, has_dropout)
        self.decoder1 = Decoder(n_classes, n_filters, normalization, has_dropout, UP_TYPES[0])
        self.decoder2 = Decoder(n_classes, n_filters, normalization, has_dropout, UP_TYPES[1])
        self.decoder3 = Decoder(n_classes, n_filters, normalization, has_dropout, UP_TYPES[2])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three decoders' logits, each `[B, n_classes, X, Y, Z]`, from one encoder pass (dropout drawn in the
        reference's order: encoder, decoder1, decoder2, decoder3)."""
        feats = self.encoder(x)
        return self.decoder1(feats), self.decoder2(feats), self.decoder3(feats)


class Decoder1(nn.Module):
    """Adapter: forward(x) of an `MCNet3dV2` returns decoder 1's logits only (the encoder and decoder 1 run, the other
    decoders do not): the network the reference tests (`code/test_3d.py#L44-L56@fee453c`)."""

    def __init__(self, net: MCNet3dV2) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.decoder1(self.net.encoder(x))


def reference_to_mcnet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a reference `MCNet3d_v2.state_dict()` (a released `mcnet3d_v2_best_model.pth`) as `MCNet3dV2`'s.

    The module names are the reference's, so the mapping is the identity after removing a DataParallel "module."
    prefix; every key must lie under `encoder.`, `decoder1.`, `decoder2.` or `decoder3.`. Load the result with
    `harness.nets.load_reference_state_dict` (strict: every key of the network must be present, unlike the
    reference's strict=False).

    Raises:
        ValueError: a key outside the four modules, or one of the four without any key.
    """
    out = {key.removeprefix(DATAPARALLEL_PREFIX): value for key, value in state_dict.items()}
    foreign = [key for key in out if key.split(".", 1)[0] not in PREFIXES]
    empty = [p for p in PREFIXES if not any(key.startswith(p + ".") for key in out)]
    problems = [f"keys outside {PREFIXES}: {', '.join(foreign[:5])}"] if foreign else []
    problems += [f"no key under {', '.join(empty)}"] if empty else []
    if problems:
        raise ValueError("not an MC-Net mcnet3d_v2 state_dict: " + "; ".join(problems))
    return out


def reference_decoder1_to_vnet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encoder and decoder 1 of a reference `MCNet3d_v2` (or MC-Net `VNet`) state_dict as `harness.nets.VNet` keys:
    `encoder.X` → `X`, `decoder1.X` → `X`; decoder2.* and decoder3.* are dropped, as the reference test script's
    strict=False load into its one-decoder VNet drops them (`code/test_3d.py#L44-L46@fee453c`)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        module, _, rest = key.removeprefix(DATAPARALLEL_PREFIX).partition(".")
        if module in ("encoder", "decoder1"):
            if rest in out:
                raise ValueError(f"key {rest!r} appears under both encoder. and decoder1.")
            out[rest] = value
        elif module not in ("decoder2", "decoder3"):
            raise ValueError(f"not an MC-Net state_dict: key {key!r} is outside {PREFIXES}")
    if not out:
        raise ValueError("not an MC-Net state_dict: no key under encoder. or decoder1.")
    return out
