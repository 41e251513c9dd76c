"""supervised: V-Net trained on the labeled cases only (lower bound) or on all training cases (upper bound).

Paper: V-Net (Milletari et al., 3DV 2016, arXiv 1606.04797) as the labeled-only baseline of UA-MT (Yu et al.,
MICCAI 2019, arXiv 1907.07034) and SimCVD Tables I/II.
Reference code: yulequan/UA-MT @ 88ed29ad794f877122e542a7fa9505a76fa83515, `code/train_LA.py`.

Implementation details (docs/methods/supervised.md):
1. Network: VNet(n_channels=1, n_classes=2, n_filters=16, batchnorm, has_dropout=True) [C: train_LA.py net = VNet(...)].
2. Batch: 4 labeled samples; the harness draws them from a chain of permutations so every batch is full [C batch 4;
   H sampler, protocol §3.1].
3. Loss: 0.5·(CE + Dice_fg), Dice_fg on the softmax foreground channel with squared denominators, smooth 1e-5
   [C: train_LA.py `loss = 0.5*(loss_seg+loss_seg_dice)`].
4. Optimisation: SGD lr 0.01, momentum 0.9, wd 1e-4, ×0.1 every 2500 iterations, 6000 iterations [C] (the loop).
5. Test: softmax, argmax over the two classes, sliding window 18/4 (protocol §4.2).
6. Upper bound: the same with n_labeled = all 80 (LA) / 62 (Pancreas) training cases.

Known deviations: none in the arithmetic; the sampler always gives full batches (the reference's last batch of an
epoch has 2 samples when N = 6 or 62).
Sanity numbers (SimCVD Table I, LA): lower bound 16 labels Dice 86.03, upper bound 91.14.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.method import Batch, BuildNet, Method, Progress, StepOutput, register_method
from harness.numerics.losses import supervised_loss


@dataclass(frozen=True)
class Config:
    """`supervised` has no hyperparameters beyond the shared protocol."""

    has_dropout: bool = True
    """Dropout3d(0.5) on the bottleneck and last stage during training [C: train_LA.py has_dropout=True]."""


@register_method("supervised")
class Supervised(Method):
    VERSION = 1
    Config = Config
    output_kind = "softmax"
    needs_unlabeled = False

    def __init__(self, cfg: Config, build_net: BuildNet, device: torch.device) -> None:
        super().__init__(cfg, build_net, device)
        self.net = build_net("vnet", n_classes=2, has_dropout=cfg.has_dropout).to(device)

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        logits = self.net(batch.x_l)
        loss, logs = supervised_loss(logits, batch.y)
        return StepOutput(loss=loss, logs={"loss/sup": loss.item(), **logs})
