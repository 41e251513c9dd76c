"""dtc: dual-task consistency between a segmentation head and a signed-distance-map head of one V-Net.

Paper: Luo, Chen, Song, Wang, "Semi-supervised Medical Image Segmentation through Dual-task Consistency",
AAAI 2021 (arXiv 2009.04448).
Reference code: HiLab-git/DTC @ 2525b9ccba84d7872fe22328b8b3298e7eafdc12, `code/train_la_dtc.py`
(docs/methods/dtc.md; the dual-head V-Net and the SDM: docs/methods/README.md §1.2, §1.3).

Implementation details (permalinks: github.com/HiLab-git/DTC/blob/2525b9c/code/<file>#L<n>):
1. One network, no teacher: the dual-head VNet built with n_classes = 1 (num_classes − 1), batchnorm,
   has_dropout=True; forward gives (tanh SDM, segmentation logit) [train_la_dtc.py#L111-L121;
   networks/vnet_sdf.py#L181-L183, #L235-L238] (harness.nets "vnet_sdf").
2. Ground-truth SDM of each labeled patch: negdis/max − posdis/max, negative inside, inner boundary 0, empty patch
   zeros (`compute_sdf`, utils/util.py#L123-L150; called at train_la_dtc.py#L176-L179). Computed in the
   data-loader workers from the augmented label patch (`label_transforms`, harness.numerics.sdf.signed_distance_map).
3. L_sdf = MSE(tanh head on L, SDM) (#L180); L_dice = Dice_fg(σ(o_L), y_L), squared denominators (#L183-L184,
   utils/losses.py `dice_loss`) [harness.numerics.losses.dice_fg].
4. BCE is computed by the reference but not added to the loss (#L181-L182, #L188): `use_bce: false`.
5. L_sup = L_dice + 0.3·L_sdf (`--beta 0.3`, #L50, #L188).
6. Dual-task consistency on all 4 samples: mean of (σ(−1500·s) − σ(o))², no stop-gradient on either side
   (#L185-L187) [harness.numerics.losses.dual_task_consistency].
7. Weight λ(t) = 1.0·r(⌊t/150⌋, 40) with the 0-based step t (`--consistency 1.0`, #L60-L63, #L92-L94, #L189); the
   `--consistency_weight 0.1` argument (#L47) is unused by the reference.
8. Test: σ(o) > 0.5 after window averaging (`output_kind = "sigmoid"`; `eval_network` returns the segmentation
   head of the network).

Known deviations: the reference `test_LA.py` keeps the largest connected component by default (`--nms 1`); the harness
evaluates without post-processing (protocol §4.4). The SDM is computed in float32 in the loader workers (identical to
the float64 reference to 1e-6). `use_bce: true` adds the BCE term to L_sup [H].
Sanity numbers (`harness/report/published.csv`, LA): DTC Dice 89.42 (16 labels), 87.51 (8 labels, README).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.method import Batch, BuildNet, Method, Progress, StepOutput, register_method
from harness.nets.heads import SegmentationHead
from harness.numerics.losses import dice_fg, dual_task_consistency, require_labels
from harness.numerics.ramps import consistency_weight
from harness.numerics.sdf import signed_distance_map


@dataclass(frozen=True)
class Config:
    """DTC hyperparameters; defaults are the reference script's values."""

    beta_sdf: float = 0.3
    """Weight of the SDM regression in L_sup [C: train_la_dtc.py#L50@2525b9c `--beta 0.3`, used at #L188]."""
    k_transform: float = 1500.0
    """Steepness k of the SDM-to-mask transform σ(−k·s) [C: same file #L185]."""
    consistency_weight: float = 1.0
    """Full-strength dual-task consistency weight [C: same file #L60 `--consistency 1.0`, #L94]."""
    ramp: tuple[int, float] = (150, 40.0)
    """(iterations per ramp epoch, ramp length in epochs): λ = w·r(t // 150, 40) [C: same file #L189, #L62]."""
    use_bce: bool = False
    """Add BCE(o_L, y_L) to L_sup; the reference computes it but does not add it [C: same file #L181, #L188]."""
    has_dropout: bool = True
    """Dropout3d(0.5) on the bottleneck and before the heads during training [C: same file #L114]."""

    def __post_init__(self) -> None:
        if self.ramp[0] < 1 or self.ramp[1] < 0:
            raise ValueError(f"ramp must be (iterations per epoch >= 1, length >= 0); got {self.ramp}")


@register_method("dtc")
class DTC(Method):
    VERSION = 1
    Config = Config
    output_kind = "sigmoid"
    needs_unlabeled = True

    def __init__(self, cfg: Config, build_net: BuildNet, device: torch.device) -> None:
        super().__init__(cfg, build_net, device)
        self.net = build_net("vnet_sdf", n_classes=1, has_dropout=cfg.has_dropout).to(device)

    def label_transforms(self) -> dict:
        """The SDM of each labeled patch, computed in the loader workers; arrives as batch.extras["sdf"]."""
        return {"sdf": signed_distance_map}

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        cfg, n_l = self.cfg, batch.n_labeled
        if "sdf" not in batch.extras:
            raise KeyError("dtc needs batch.extras['sdf'] [n_labeled, X, Y, Z] (from label_transforms in the loader)")
        require_labels(batch.y)
        sdm, logits = self.net(batch.x)
        l_sdf = F.mse_loss(sdm[:n_l, 0], batch.extras["sdf"])
        l_dice = dice_fg(torch.sigmoid(logits[:n_l, 0]), batch.y)
        sup = l_dice + cfg.beta_sdf * l_sdf
        logs = {"loss/dice": l_dice.item(), "loss/sdf": l_sdf.item()}
        if cfg.use_bce:
            l_bce = F.binary_cross_entropy_with_logits(logits[:n_l, 0], batch.y.float())
            sup = sup + l_bce
            logs["loss/bce"] = l_bce.item()
        cons = dual_task_consistency(sdm, logits, cfg.k_transform)
        weight = consistency_weight(progress.it, cfg.consistency_weight, *cfg.ramp)
        loss = sup + weight * cons
        return StepOutput(loss=loss, logs={"loss/sup": sup.item(), **logs, "loss/cons": cons.item(), "w/cons": weight})

    def eval_network(self) -> nn.Module:
        """The segmentation head of the (student) network; the SDM head is not used at test time."""
        return SegmentationHead(self.net)
