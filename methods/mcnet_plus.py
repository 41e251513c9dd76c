"""mcnet_plus: MC-Net+, mutual consistency between the sharpened and raw probabilities of three decoders of one V-Net.

Paper: Wu, Ge, Zhang, Xia, Cai, Chen, "Mutual consistency learning for semi-supervised medical image segmentation",
Medical Image Analysis 81 (2022) 102530 (arXiv 2109.09960).
Reference code: ycwu1997/MC-Net @ fee453ca299a5d2c845cc2f3de4e416fd667d9c2, `code/train_mcnet_3d.py` run with
`--model mcnet3d_v2 --temperature 0.1` (the repository root's `train_mcnet_3d.sh#L2-L3,L12-L13`;
docs/methods/mcnet_plus.md).

Implementation details (permalinks: github.com/ycwu1997/MC-Net/blob/fee453c/code/<file>#L<n>):
1. One network, no teacher: `MCNet3d_v2`, a V-Net encoder shared by three decoders that differ only in their
   up-sampling (transposed conv; trilinear ×2 + conv; nearest ×2 + conv), batchnorm, has_dropout=True (Dropout3d on
   the shared bottleneck and on each decoder's x9) [networks/net_factory.py#L17-L18, networks/VNet.py#L94-L259]
   (harness.nets "mcnet3d_v2", harness/nets/mcnet.py). One forward of the whole batch of 4 gives three logit maps
   (train_mcnet_3d.py#L135).
2. Supervised loss per decoder d: the repository's Dice on the softmax foreground of the 2 labeled samples, pooled
   over the sub-batch, denominator NOT squared, eps 1e-8 in numerator and denominator:
   L_dice,d = 1 − (2·Σ p·g + 1e−8)/(Σ p + Σ g + 1e−8) (#L144-L147; utils/losses.py#L4-L8) [`binary_dice_loss`].
   The cross-entropy the reference computes (#L146) is only logged, never in the loss, and is not computed here.
3. p_d = softmax of decoder d over all 4 samples and both channels (#L149-L151); sharpened targets
   s(p) = p^(1/T)/(p^(1/T) + (1 − p)^(1/T)), T = 0.1 (#L27-L30, #L152) [`sharpen`].
4. Mutual consistency over the 6 ordered pairs i ≠ j: L_cons = Σ_i Σ_(j≠i) mean((p_i − s(p_j))²), the mean over all
   4 samples × 2 channels × voxels, summed over the pairs (not averaged); the targets s(p_j) are NOT detached, so
   gradients flow into both sides (#L154-L158; utils/losses.py#L19-L20) [`mutual_consistency`].
5. Weight w(t) = 1.0·r(⌊(t + 1)/150⌋, 40) with the 0-based step t: the reference increments `iter_num` before it
   computes the weight (#L160-L161, #L23-L25; utils/ramps.py#L19-L26), so the ramp steps up one iteration earlier
   than UA-MT's and reaches 1 at t = 5999 [harness.numerics.ramps.consistency_weight(t + 1, ...)].
6. Total = 0.5·Σ_d L_dice,d + w(t)·L_cons: no 1/3 over the decoders, no CE (#L163, `--lamda 0.5` #L49).
7. Test: decoder 1 only, softmax, argmax (the reference test script builds a one-decoder VNet and loads encoder and
   decoder 1 with strict=False, test_3d.py#L44-L46) [`eval_network` = harness.nets.mcnet.Decoder1].
8. Protocol (config.yaml `method_overrides.mcnet_plus.protocol`): 15000 iterations, SGD lr 0.01 constant (the `lr_`
   variable is never applied), momentum 0.9, weight decay 1e-4, batch 2 labeled + 2 unlabeled (#L37-L40, #L117,
   #L126).

Known deviations: the reference saves the checkpoint with the best decoder-1 Dice on the 20 TEST cases (every 200
iterations from 800, #L203-L215) and its published numbers come from it; the harness evaluates the last
checkpoint. The reference's consistency tensors are CPU float32 copies (#L138-L139); the harness computes the same
float32 arithmetic on the network's device (no effect on the values beyond rounding order). Under
`protocol.amp` the logits are cast to float32 before the softmax [H].
Sanity numbers (repository `pretrained_pth/*/mcnet3d_v2_performance.txt`, best-on-test, decoder 1, no
post-processing): LA Dice 91.07 (16 labels), 88.96 (8); Pancreas-CT 79.37 (12), 70.00 (6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from harness.method import Batch, BuildNet, Method, Progress, StepOutput, register_method
from harness.nets.mcnet import Decoder1
from harness.numerics.losses import require_labels
from harness.numerics.ramps import consistency_weight


@dataclass(frozen=True)
class Config:
    """MC-Net+ hyperparameters; defaults are the reference script's values (train_mcnet_3d.py@fee453c)."""

    temperature: float = 0.1
    """Sharpening temperature T, s(p) = p^(1/T)/(p^(1/T) + (1 − p)^(1/T)) [C: train_mcnet_3d.py#L48@fee453c
    `--temperature 0.1`, passed again by train_mcnet_3d.sh#L2; used at #L27-L30]."""
    dice_weight: float = 0.5
    """Weight of Σ_d L_dice,d in the total [C: same file #L49 `--lamda 0.5`, used at #L163]."""
    dice_eps: float = 1e-8
    """Epsilon in numerator and denominator of the Dice loss [C: utils/losses.py#L4@fee453c `ep=1e-8`]."""
    consistency_weight: float = 1.0
    """Full-strength weight of the mutual consistency [C: train_mcnet_3d.py#L46@fee453c `--consistency 1`]."""
    ramp: tuple[int, float] = (150, 40.0)
    """(iterations per ramp epoch, ramp length in epochs): w = 1.0·r(⌊(t + 1)/150⌋, 40) [C: same file #L47
    `--consistency_rampup 40`, #L160-L161 `iter_num // 150` after `iter_num + 1`]."""
    has_dropout: bool = True
    """Dropout3d(0.5) on the shared bottleneck and on each decoder's x9 during training [C:
    networks/net_factory.py#L17-L18@fee453c]; test time: none (eval mode; #L23-L24 builds it without)."""

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature}")
        if self.dice_eps < 0:
            raise ValueError(f"dice_eps must be >= 0; got {self.dice_eps}")
        if self.ramp[0] < 1 or self.ramp[1] < 0:
            raise ValueError(f"ramp must be (iterations per epoch >= 1, length >= 0); got {self.ramp}")


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """s(p) = p^(1/T) / (p^(1/T) + (1 − p)^(1/T)), elementwise, differentiable (train_mcnet_3d.py#L27-L30@fee453c).

    s(0.5) = 0.5 and s(1 − p) = 1 − s(p); with T = 0.1, s(0.7) = 0.99979100. The denominator is at least 2^(−1/T)
    (one of p, 1 − p is ≥ 0.5), so it never divides by zero for T ≥ 0.01 in float32.
    """
    e = 1.0 / temperature
    num = p**e
    return num / (num + (1.0 - p) ** e)


def binary_dice_loss(p_fg: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 − (2·Σ p·g + eps) / (Σ p + Σ g + eps) over every element at once (the labeled sub-batch pooled), NOT
    squared (utils/losses.py#L4-L8@fee453c `Binary_dice_loss`).

    Args:
        p_fg: foreground probabilities `[n_L, X, Y, Z]`.
        target: `[n_L, X, Y, Z]` foreground mask (bool, or {0, 1}).
        eps: the reference's 1e-8.
    """
    g = target.to(p_fg.dtype)
    return 1 - (2 * torch.sum(p_fg * g) + eps) / (torch.sum(p_fg) + torch.sum(g) + eps)


def mutual_consistency(probs: Sequence[torch.Tensor], sharpened: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_i Σ_(j≠i) mean((p_i − s_j)²) over the ordered pairs of decoders, each mean over every element (samples ×
    channels × voxels); nothing is detached (train_mcnet_3d.py#L154-L158; utils/losses.py#L19-L20@fee453c).

    Args:
        probs: the decoders' softmax probabilities p_i, each `[B, C, X, Y, Z]`.
        sharpened: s(p_j), in the same order and shapes.
    """
    if len(probs) != len(sharpened) or len(probs) < 2:
        raise ValueError(f"need as many sharpened maps as probability maps (>= 2); got {len(probs)}, {len(sharpened)}")
    pairs = [torch.mean((p - s) ** 2) for i, p in enumerate(probs) for j, s in enumerate(sharpened) if i != j]
    return torch.stack(pairs).sum()


@register_method("mcnet_plus")
class MCNetPlus(Method):
    VERSION = 1
    Config = Config
    output_kind = "softmax"
    needs_unlabeled = True

    def __init__(self, cfg: Config, build_net: BuildNet, device: torch.device) -> None:
        super().__init__(cfg, build_net, device)
        self.net = build_net("mcnet3d_v2", n_classes=2, has_dropout=cfg.has_dropout).to(device)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        cfg, n_l = self.cfg, batch.n_labeled
        require_labels(batch.y)
        probs = [torch.softmax(logits.float(), dim=1) for logits in self.net(batch.x)]
        dice = [binary_dice_loss(p[:n_l, 1], batch.y == 1, cfg.dice_eps) for p in probs]
        cons = mutual_consistency(probs, [sharpen(p, cfg.temperature) for p in probs])
        weight = consistency_weight(progress.it + 1, cfg.consistency_weight, *cfg.ramp)  # iter_num + 1 first
        dice_sum = torch.stack(dice).sum()
        loss = cfg.dice_weight * dice_sum + weight * cons
        logs = {"loss/dice": dice_sum.item(), **{f"loss/dice{d}": v.item() for d, v in enumerate(dice, 1)}}
        return StepOutput(loss=loss, logs={**logs, "loss/cons": cons.item(), "w/cons": weight})

    def eval_network(self) -> nn.Module:
        """Decoder 1 (transposed-conv up-sampling) on the shared encoder; the reference tests it alone."""
        return Decoder1(self.net)
