"""VNet backbones of the UA-MT / DTC line of work (`docs/methods/README.md` §1.1, §1.2).

Both networks keep the reference code's attribute names and registration order (yulequan/UA-MT
`code/networks/vnet.py` class `VNet`; HiLab-git/DTC `code/networks/vnet_sdf.py` class `VNet_sdf`), so a reference
state_dict maps key for key: `block_one.conv.0.weight`, `block_one.conv.1.running_mean`, `block_five_up.conv.0.weight`,
`out_conv.bias`, ... Every stage is a plain stack of conv units (not residual); the decoder adds (not concatenates) the
encoder feature of the same scale.

Shapes: input `[B, n_channels, X, Y, Z]` with X, Y, Z divisible by 16; outputs `[B, n_classes, X, Y, Z]`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NORMALIZATIONS = ("batchnorm", "groupnorm", "instancenorm", "none")
GROUPNORM_GROUPS = 16
DOWNSAMPLING_FACTOR = 16  # four stride-2 steps
DROPOUT_P = 0.5
#: Builds a ×2 up-sampling block from (n_in, n_out, normalization).
UpBlock = Callable[[int, int, str], nn.Module]


def _norm_layers(normalization: str, channels: int) -> list[nn.Module]:
    """The normalisation layer after a convolution (an empty list for "none").

    Args:
        normalization: one of `NORMALIZATIONS`.
        channels: number of feature channels being normalised.
    """
    if normalization == "batchnorm":
        return [nn.BatchNorm3d(channels)]
    if normalization == "groupnorm":
        if channels % GROUPNORM_GROUPS:
            raise ValueError(
                f"normalization='groupnorm' uses {GROUPNORM_GROUPS} groups and needs channel counts divisible by "
                f"{GROUPNORM_GROUPS}; got a layer with {channels} channels (raise n_filters to a multiple of 16)"
            )
        return [nn.GroupNorm(num_groups=GROUPNORM_GROUPS, num_channels=channels)]
    if normalization == "instancenorm":
        return [nn.InstanceNorm3d(channels)]
    if normalization == "none":
        return []
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


class _SequentialBlock(nn.Module):
    """A block whose layers sit in `self.conv` (an nn.Sequential), as in the reference, so state_dict keys match."""

    conv: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvBlock(_SequentialBlock):
    """`n_stages` conv units (Conv3d 3x3x3, padding 1, bias → norm → ReLU) in one `self.conv` Sequential.

    Shapes: `[B, n_in, X, Y, Z]` → `[B, n_out, X, Y, Z]`. Only the first unit changes the channel count.
    """

    def __init__(self, n_stages: int, n_in: int, n_out: int, normalization: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_stages):
            layers.append(nn.Conv3d(n_in if i == 0 else n_out, n_out, kernel_size=3, padding=1))
            layers.extend(_norm_layers(normalization, n_out))
            layers.append(nn.ReLU(inplace=True))
        self.conv = nn.Sequential(*layers)


class DownsamplingConvBlock(_SequentialBlock):
    """Conv3d kernel 2, stride 2, no padding → norm → ReLU.

    Shapes: `[B, n_in, X, Y, Z]` → `[B, n_out, X/2, Y/2, Z/2]`.
    """

    def __init__(self, n_in: int, n_out: int, normalization: str) -> None:
        super().__init__()
        layers = [nn.Conv3d(n_in, n_out, kernel_size=2, stride=2, padding=0)]
        self.conv = nn.Sequential(*layers, *_norm_layers(normalization, n_out), nn.ReLU(inplace=True))


class UpsamplingDeconvBlock(_SequentialBlock):
    """ConvTranspose3d kernel 2, stride 2 → norm → ReLU. Shapes: `[B, n_in, X, Y, Z]` → `[B, n_out, 2X, 2Y, 2Z]`."""

    def __init__(self, n_in: int, n_out: int, normalization: str) -> None:
        super().__init__()
        layers = [nn.ConvTranspose3d(n_in, n_out, kernel_size=2, stride=2, padding=0)]
        self.conv = nn.Sequential(*layers, *_norm_layers(normalization, n_out), nn.ReLU(inplace=True))


def add_encoder(module: nn.Module, n_channels: int, n_filters: int, normalization: str) -> None:
    """Register stages 1–5 (`block_one` … `block_five`, with the stride-2 convs between them) on `module`, under the
    reference's names and in its order (so initialisation draws and state_dict keys match)."""
    f, norm = n_filters, normalization
    module.n_channels = n_channels
    module.block_one = ConvBlock(1, n_channels, f, norm)
    module.block_one_dw = DownsamplingConvBlock(f, 2 * f, norm)
    module.block_two = ConvBlock(2, 2 * f, 2 * f, norm)
    module.block_two_dw = DownsamplingConvBlock(2 * f, 4 * f, norm)
    module.block_three = ConvBlock(3, 4 * f, 4 * f, norm)
    module.block_three_dw = DownsamplingConvBlock(4 * f, 8 * f, norm)
    module.block_four = ConvBlock(3, 8 * f, 8 * f, norm)
    module.block_four_dw = DownsamplingConvBlock(8 * f, 16 * f, norm)
    module.block_five = ConvBlock(3, 16 * f, 16 * f, norm)


def add_decoder(module: nn.Module, n_filters: int, normalization: str, up: UpBlock = UpsamplingDeconvBlock) -> None:
    """Register stages 6–9 (`block_five_up` … `block_nine`) on `module`, reference names and order; `up(n_in, n_out,
    normalization)` builds each ×2 up-sampling block (the V-Net's transposed conv by default)."""
    f, norm = n_filters, normalization
    module.block_five_up = up(16 * f, 8 * f, norm)
    module.block_six = ConvBlock(3, 8 * f, 8 * f, norm)
    module.block_six_up = up(8 * f, 4 * f, norm)
    module.block_seven = ConvBlock(3, 4 * f, 4 * f, norm)
    module.block_seven_up = up(4 * f, 2 * f, norm)
    module.block_eight = ConvBlock(2, 2 * f, 2 * f, norm)
    module.block_eight_up = up(2 * f, f, norm)
    module.block_nine = ConvBlock(1, f, f, norm)


def run_encoder(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Encoder features [x1, x2, x3, x4, x5] of `add_encoder`'s blocks at scales 1, 1/2, 1/4, 1/8, 1/16 (x5 before
    any dropout): x_k is `[B, 2**(k-1) * n_filters, X / 2**(k-1), Y / 2**(k-1), Z / 2**(k-1)]`.

    Raises:
        ValueError: `x` is not `[B, n_channels, X, Y, Z]` with every side divisible by 16.
    """
    if x.dim() != 5 or x.shape[1] != module.n_channels:
        raise ValueError(f"input x must have shape [B, {module.n_channels}, X, Y, Z], got {tuple(x.shape)}")
    if any(s % DOWNSAMPLING_FACTOR for s in x.shape[2:]):
        raise ValueError(
            f"every patch side of input x must be divisible by {DOWNSAMPLING_FACTOR} (four stride-2 steps), "
            f"got shape {tuple(x.shape)}"
        )
    x1 = module.block_one(x)
    x2 = module.block_two(module.block_one_dw(x1))
    x3 = module.block_three(module.block_two_dw(x2))
    x4 = module.block_four(module.block_three_dw(x3))
    x5 = module.block_five(module.block_four_dw(x4))
    return [x1, x2, x3, x4, x5]


def run_decoder(module: nn.Module, feats: list[torch.Tensor]) -> torch.Tensor:
    """Stage-9 output x9 `[B, n_filters, X, Y, Z]` of `add_decoder`'s blocks from [x1, .., x5]: each up-sampled
    feature plus the encoder feature of the same scale (added, not concatenated)."""
    x1, x2, x3, x4, x5 = feats
    x6 = module.block_six(module.block_five_up(x5) + x4)
    x7 = module.block_seven(module.block_six_up(x6) + x3)
    x8 = module.block_eight(module.block_seven_up(x7) + x2)
    return module.block_nine(module.block_eight_up(x8) + x1)


class _VNetTrunk(nn.Module):
    """Encoder (stages 1–5) and decoder (stages 6–9) shared by `VNet` and `VNetSDF`; subclasses add the heads.

    Attributes are registered in the reference order; `self.dropout` is a Dropout3d(p=0.5) when `has_dropout`,
    otherwise an Identity (neither holds parameters or buffers, so state_dicts are unaffected).
    """

    def __init__(self, n_channels: int, n_filters: int, normalization: str) -> None:
        super().__init__()
        for name, value in (("n_channels", n_channels), ("n_filters", n_filters)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        add_encoder(self, n_channels, n_filters, normalization)
        add_decoder(self, n_filters, normalization)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features [x1, x2, x3, x4, x5], x5 BEFORE dropout (`run_encoder`); `x` `[B, n_channels, X, Y, Z]`,
        every side divisible by 16."""
        return run_encoder(self, x)

    def _trunk(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Runs the trunk; returns pre-dropout taps and `x9` after dropout (the input of the heads)."""
        feats = self.encode(x)
        x5 = feats[4]
        x9 = run_decoder(self, [*feats[:4], self.dropout(x5)])
        return {"feat_bottleneck": x5, "feat_top": x9, "x9": self.dropout(x9)}


class VNet(_VNetTrunk):
    """Plain VNet of UA-MT (`docs/methods/README.md` §1.1): 9,448,866 parameters for (1, 2, 16, "batchnorm").

    Args:
        n_channels: input channels.
        n_classes: output channels of the 1x1x1 output conv (2 for the softmax benchmark head).
        n_filters: channels of stage 1; stage k has `2**(k-1) * n_filters` (k ≤ 5).
        normalization: "batchnorm" (default, the benchmark's), "groupnorm" (16 groups), "instancenorm" or "none".
        has_dropout: apply Dropout3d(p=0.5) to the bottleneck x5 and to x9 (active in train mode only).
    """

    def __init__(
        self,
        n_channels: int = 1,
        n_classes: int = 2,
        n_filters: int = 16,
        normalization: str = "batchnorm",
        has_dropout: bool = False,
    ) -> None:
        super().__init__(n_channels, n_filters, normalization)
        self.out_conv = nn.Conv3d(n_filters, n_classes, kernel_size=1, padding=0)
        self.has_dropout = has_dropout
        self.dropout = nn.Dropout3d(p=DROPOUT_P) if has_dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits `[B, n_classes, X, Y, Z]` for `x` `[B, n_channels, X, Y, Z]` (sides divisible by 16)."""
        return self.out_conv(self._trunk(x)["x9"])

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits plus feature taps, with the same segmentation path (and dropout draws) as `forward`.

        Returns:
            "logits" `[B, n_classes, X, Y, Z]`; "feat_bottleneck" x5 before dropout `[B, 16 n_filters, X/16, Y/16,
            Z/16]`; "feat_top" x9 before dropout `[B, n_filters, X, Y, Z]`.
        """
        t = self._trunk(x)
        return {"logits": self.out_conv(t["x9"]), "feat_bottleneck": t["feat_bottleneck"], "feat_top": t["feat_top"]}


class VNetSDF(_VNetTrunk):
    """Dual-head VNet of DTC (`docs/methods/README.md` §1.2): `out_conv` → tanh SDM head, `out_conv2` → seg. logit.

    Built with n_classes=1 as the reference does (9,448,866 parameters for (1, 1, 16, "batchnorm")). Arguments as
    in `VNet`; both heads read the same x9 (after dropout).
    """

    def __init__(
        self,
        n_channels: int = 1,
        n_classes: int = 1,
        n_filters: int = 16,
        normalization: str = "batchnorm",
        has_dropout: bool = False,
    ) -> None:
        super().__init__(n_channels, n_filters, normalization)
        self.out_conv = nn.Conv3d(n_filters, n_classes, kernel_size=1, padding=0)
        self.out_conv2 = nn.Conv3d(n_filters, n_classes, kernel_size=1, padding=0)
        self.has_dropout = has_dropout
        self.dropout = nn.Dropout3d(p=DROPOUT_P) if has_dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tanh SDM in [-1, 1], segmentation logits), each `[B, n_classes, X, Y, Z]`."""
        x9 = self._trunk(x)["x9"]
        return torch.tanh(self.out_conv(x9)), self.out_conv2(x9)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """As `VNet.forward_features`, plus "sdm" (the tanh SDM head output `[B, n_classes, X, Y, Z]`)."""
        t = self._trunk(x)
        return {
            "logits": self.out_conv2(t["x9"]),
            "sdm": torch.tanh(self.out_conv(t["x9"])),
            "feat_bottleneck": t["feat_bottleneck"],
            "feat_top": t["feat_top"],
        }
