"""Network registry (`build_net`), parameter counting and loading of reference-code checkpoints.

Networks: "vnet" (UA-MT VNet, `docs/methods/README.md` §1.1), "vnet_sdf" (DTC dual-head VNet, §1.2; pass
n_classes=1) and "mcnet3d_v2" (MC-Net+'s three-decoder VNet, `harness/nets/mcnet.py`, docs/methods/mcnet_plus.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from harness.nets.mcnet import MCNet3dV2
from harness.nets.vnet import VNet, VNetSDF

logger = logging.getLogger(__name__)

__all__ = ["VNet", "VNetSDF", "build_net", "count_parameters", "load_reference_state_dict", "network_names"]

DATAPARALLEL_PREFIX = "module."


def _registry() -> dict[str, type[nn.Module]]:
    return {"vnet": VNet, "vnet_sdf": VNetSDF, "mcnet3d_v2": MCNet3dV2}


def network_names() -> list[str]:
    """Sorted names accepted by `build_net`."""
    return sorted(_registry())


def build_net(
    name: str,
    *,
    n_channels: int = 1,
    n_classes: int = 2,
    n_filters: int = 16,
    normalization: str = "batchnorm",
    has_dropout: bool = False,
) -> nn.Module:
    """Builds a network by registry name (PyTorch default initialisation).

    Args:
        name: "vnet", "vnet_sdf" or "mcnet3d_v2" (forward returns the three decoders' logits).
        n_channels: input channels.
        n_classes: output channels per head (2 for the softmax VNet; 1 for "vnet_sdf", as the reference builds it).
        n_filters: stage-1 width (16 in the benchmark).
        normalization: "batchnorm", "groupnorm", "instancenorm" or "none".
        has_dropout: Dropout3d(p=0.5) on the bottleneck and before the output conv(s) in train mode.

    Raises:
        KeyError: unknown `name` (the message lists the available names).
    """
    registry = _registry()
    if name not in registry:
        raise KeyError(f"unknown network {name!r}; available: {', '.join(sorted(registry))}")
    return registry[name](
        n_channels=n_channels,
        n_classes=n_classes,
        n_filters=n_filters,
        normalization=normalization,
        has_dropout=has_dropout,
    )


def count_parameters(net: nn.Module) -> int:
    """Number of trainable scalar parameters (`requires_grad`), buffers excluded."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Removes the DataParallel "module." prefix from every key that has it; checks values are tensors."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"state_dict value for key {key!r} must be a torch.Tensor, got {type(value).__name__}")
        out[key.removeprefix(DATAPARALLEL_PREFIX)] = value
    return out


def _state_dict_problems(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable lines for missing keys, unexpected keys and shape mismatches (empty when compatible)."""
    problems = []
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(given[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {'; '.join(mismatched)}")
    return problems


def load_reference_state_dict(net: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Loads a state_dict saved by the reference code (UA-MT `VNet`, DTC/SASSNet `VNet_sdf`) into `net`, strictly.

    Our networks use the reference attribute names, so keys map one to one after removing a DataParallel
    "module." prefix. BatchNorm `num_batches_tracked` buffers may be absent (checkpoints from PyTorch < 0.4.1);
    the network keeps its own value for them. Everything else must match exactly.

    Args:
        net: a `VNet` or `VNetSDF` built with the checkpoint's n_channels / n_classes / n_filters / normalization.
        state_dict: key → tensor, as returned by `torch.load` of a reference `state_dict()`.

    Raises:
        ValueError: listing every missing key, unexpected key and shape mismatch.
    """
    given = _strip_prefix(state_dict)
    expected = net.state_dict()
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in given:
            given[key] = expected[key]
    problems = _state_dict_problems(expected, given)
    if problems:
        raise ValueError(f"reference state_dict does not fit {type(net).__name__}:\n  " + "\n  ".join(problems))
    net.load_state_dict(given, strict=True)
    logger.info("loaded a reference state_dict with %d entries into %s", len(given), type(net).__name__)
