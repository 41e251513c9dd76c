"""bcp: bidirectional copy-paste of one cube between labeled and unlabeled volumes inside a Mean Teacher.

Paper: Bai, Chen, Li, Wang, Shen, "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation",
CVPR 2023 (arXiv 2305.00673).
Reference code: DeepMed-Lab-ECNU/BCP @ 7879f988872f561231f73eecd5b4e232e54fa2bd, `code/LA_BCP_train.py` (LA) with
`code/utils/BCP_utils.py` and `code/utils/losses.py` (docs/methods/bcp.md). Line numbers #L<n> are of
`LA_BCP_train.py` at that commit unless another file is named.

Implementation details:
1. Two DAG jobs: pre-training on labeled volumes only (`pretrain`, #L118-L195), then self-training (`train`,
   #L198-L348). Both: SGD lr 0.01, momentum 0.9, weight decay 1e-4 over the student (#L135, #L218); pre-training at a
   constant LR for 2000 iterations (#L36, no scheduler in `pre_train`); self-training with a fresh optimiser (#L218)
   [the loop: one optimiser per stage job].
2. Network: the UA-MT-style V-Net, batchnorm, Dropout3d(0.5) on x5 and x9 in training (`networks/net_factory.py#L8-L9`,
   `networks/VNet.py#L145-L239`) [build_net("vnet", has_dropout=True)].
3. Cube mask M (`BCP_utils.py#L18-L28`): sides int(X·r), int(Y·r), int(Z·r) with r = 2/3 (#L51: 74×74×53 at
   112×112×80); corner w, h, z drawn in that order, each uniform on {0, .., S − side − 1} (so the last slice of every
   axis is never in the cube); M = 1 outside the cube and 0 inside; one cube for the whole batch and both mixed images
   of an iteration [`cube_mask`].
4. Pre-training (#L147-L161): the labeled batch splits into halves a | b; x = a·M + b·(1 − M), y mixed the same way;
   loss = (CE mean over every voxel + Dice(no mask)) / 2 [`mix`, `bcp_dice_loss`, `pretrain_step`]. The unlabeled
   half the reference loads is thrown away (#L147): the stage reads labeled cases only.
5. Hand-off: student and teacher both start from the pre-trained network, BatchNorm buffers included (#L220-L222)
   [`take_pretrained`].
6. Self-training halves (#L237-L239): labeled a | b, unlabeled a | b, each n/2 volumes (protocol.labeled_bs and
   batch_size − labeled_bs equal and even; the reference: 4 + 4, `method_overrides.bcp.protocol`). The reference
   runs every network pass on one half (2 volumes); with halves of one volume (the harness's default 2 + 2) the two
   passes of the teacher and of the student run as one pass of both halves, so BatchNorm never normalises a single
   volume [H: `min_pass_volumes`].
7. Pseudo labels (#L240-L244, #L57-L77): the teacher, in train mode (#L225: dropout on, batch statistics), runs
   separately on unlabeled a and on unlabeled b without gradients; label = 1[softmax_1 ≥ 0.5]; then per volume the
   largest connected component, 26-connectivity (skimage `label` default), an empty map kept as it is
   [`pseudo_labels`, `largest_component`].
8. Mixing (#L248-L251): mixl = lab_a·M + unl_a·(1 − M) (GT outside, pseudo inside); mixu = unl_b·M + lab_b·(1 − M)
   (pseudo outside, GT inside); the mask is drawn after the teacher passes (#L245).
9. Loss (`BCP_utils.py#L58-L69`, #L252-L257): two student passes (mixl, then mixu); per mixed image
   ((w_out·Dice(out, t_out, M) + w_in·Dice(out, t_in, 1 − M)) + (w_out·CE_M + w_in·CE_{1−M})) / 2 with
   CE_m = Σ(CE_v·m)/(Σm + 1e−16) over the whole half-batch; GT weight 1, pseudo weight u_weight 0.5 (#L50);
   total = loss_l + loss_u [`mix_loss`].
10. Dice (`losses.py#L47-L77`): softmax, one-hot over both classes, per volume and class
    (2·Σm·p·g + 1e−5)/(Σm·(p + g) + 1e−5), loss = 1 − mean over volumes × classes [`bcp_dice_loss`].
11. EMA after every self-training step: θ′ ← 0.99·θ′ + 0.01·θ, fixed decay from the first step, parameters only
    (#L270, `BCP_utils.py#L78-L81`) [`ema_fixed`; not harness.numerics.ema's min(1 − 1/(t + 1), a) warm-up].
12. Test: the student (#L287-L288 saves it), softmax argmax (`eval_network` = student).

Known deviations (docs/methods/bcp.md): the cube corner is drawn from torch's RNG, not numpy's global RNG [H: resume is
exact only with torch's checkpointed RNG]; the corner range is computed from the actual patch instead of the hard-coded
112/112/80 (identical on LA; on Pancreas 96³ it gives the reference's 64³ cube and {0..31} corners); neither stage
selects its checkpoint on the test set (the reference keeps and hands on the best-on-test model of each stage); the
harness applies no LCC at test time (`test_LA.py` does by default); the largest component uses scipy.ndimage.label
(skimage is not a dependency; same components and numbering); halves of one volume share one network pass (item 6);
one `connectivity` for both datasets (LA's 26; the Pancreas script uses 18: a variant with `connectivity: 2`);
Pancreas uses the shared V-Net with dropout, SGD, LA's pairing of the halves, random crops of unlabeled volumes and
MC-Net's split (the reference: InstanceNorm V-Net without dropout, Adam 1e-3, epochs, centre crops, CoraNet's split).
Sanity numbers (secondary source, DualFete table, Dice, best-on-test selection): LA 88.02 (4 labels), 89.62 (8),
91.26 (16); Pancreas 73.83 (6), 82.91 (12).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from harness.method import Batch, BuildNet, Method, Progress, Stage, StepOutput, register_method
from harness.numerics.ema import freeze_teacher
from harness.numerics.losses import require_labels

#: The config keys that set each half-split batch part (named in the refusal of an odd count).
PRETRAIN_KEYS = "method_overrides.bcp.pretrain.batch_volumes"
LABELED_KEYS = "protocol.labeled_bs (method_overrides.bcp.protocol; the reference: 4)"
UNLABELED_KEYS = "protocol.batch_size - protocol.labeled_bs (method_overrides.bcp.protocol; the reference: 8 - 4)"


@dataclass(frozen=True)
class Pretrain:
    """Labeled-only copy-paste pre-training (`method_overrides.bcp.pretrain.*`)."""

    iterations: int = 2000
    """Optimiser steps [C: LA_BCP_train.py#L36@7879f98 `--pre_max_iteration 2000`]."""
    batch_volumes: int = 4
    """Labeled volumes per batch, split into two halves that are mixed (even) [C: #L39 `--labeled_bs 4`, #L147]."""
    lr: float = 0.01
    """SGD learning rate, constant [C: #L41, #L135]."""
    weight_decay: float = 1e-4
    """SGD weight decay [C: #L135]."""
    momentum: float = 0.9
    """SGD momentum [C: #L135]."""


@dataclass(frozen=True)
class Config:
    """BCP hyperparameters; defaults are the LA reference script's values."""

    has_dropout: bool = True
    """Dropout3d(0.5) on x5 and x9 in student and teacher during training [C: networks/net_factory.py#L8-L9]."""
    mask_ratio: float = 0.6666666666666666
    """Cube side / patch side r (= 2/3), side int(S·r) per axis [C: LA_BCP_train.py#L51, BCP_utils.py#L22]."""
    u_weight: float = 0.5
    """Weight of the pseudo-labelled region in both mixed losses [C: #L50 `--u_weight`, BCP_utils.py#L58-L63]."""
    l_weight: float = 1.0
    """Weight of the ground-truth region in both mixed losses [C: BCP_utils.py#L58 default]."""
    ema_decay: float = 0.99
    """Fixed EMA decay, no warm-up [C: #L270 `update_ema_variables(model, ema_model, 0.99)`]."""
    pseudo_threshold: float = 0.5
    """Pseudo label = 1[softmax foreground ≥ threshold] [C: #L57-L60 `get_cut_mask(thres=0.5)`]."""
    lcc: bool = True
    """Keep only the largest connected component of each pseudo label [C: #L62, #L243-L244 `nms=1`]."""
    connectivity: int = 3
    """Neighbourhood of the component labelling: 1 = 6-, 2 = 18-, 3 = 26-connected [C: #L70 skimage default (LA);
    Pancreas: 2, train_pancreas.py#L35]."""
    min_pass_volumes: int = 2
    """Teacher and student passes hold at least this many volumes: when a half holds fewer, its two passes run as one
    pass of both halves [H: the reference's passes hold 2 volumes, the halves of its 4 + 4 batch (#L241-L242,
    #L252-L253), so BatchNorm never sees a single volume; 1 keeps two passes at any batch]."""
    pretrain: Pretrain = field(default_factory=Pretrain)

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1); got {self.mask_ratio}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1]; got {self.ema_decay}")
        if not 0.0 < self.pseudo_threshold < 1.0:
            raise ValueError(f"pseudo_threshold must be in (0, 1); got {self.pseudo_threshold}")
        if self.connectivity not in (1, 2, 3):
            raise ValueError(f"connectivity must be 1, 2 or 3; got {self.connectivity}")
        if self.u_weight < 0 or self.l_weight < 0:
            raise ValueError(f"u_weight and l_weight must be >= 0; got {self.u_weight}, {self.l_weight}")
        if self.min_pass_volumes < 1:
            raise ValueError(f"min_pass_volumes must be >= 1; got {self.min_pass_volumes}")
        if self.pretrain.batch_volumes % 2:
            raise ValueError(
                f"method_overrides.bcp.pretrain.batch_volumes must be even (two halves are mixed); "
                f"got {self.pretrain.batch_volumes}"
            )


# -- the method's own numerics -----------------------------------------------------------------------------------------
def cube_side(size: int, ratio: float) -> int:
    """int(size·ratio), the reference's cube side on one axis (112 → 74, 80 → 53, 96 → 64 at r = 2/3)."""
    return int(size * ratio)


def cube_mask(shape: tuple[int, int, int], ratio: float, device: torch.device | None = None) -> torch.Tensor:
    """One copy-paste mask M `[X, Y, Z]` (float): 0 inside a cube of sides int(S·ratio), 1 elsewhere.

    Source: `BCP_utils.py#L18-L28@7879f98` `context_mask`. The corner (w, h, z) is drawn in that order, each uniform
    on {0, .., S − side − 1} (the reference's exclusive `np.random.randint(0, S − side)`), from torch's global CPU RNG
    [H: the reference uses numpy's global RNG and hard-codes S = 112, 112, 80].

    Args:
        shape: the patch (X, Y, Z).
        ratio: cube side / patch side, in (0, 1).
        device: where the mask lives.
    """
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive sizes (X, Y, Z); got {shape}")
    sides = [cube_side(s, ratio) for s in shape]
    corner = [int(torch.randint(0, s - side, (1,)).item()) for s, side in zip(shape, sides, strict=True)]
    mask = torch.ones(shape, device=device)
    mask[tuple(slice(c, c + side) for c, side in zip(corner, sides, strict=True))] = 0
    return mask


def mix(outside: torch.Tensor, inside: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """outside·M + inside·(1 − M): `outside` where M = 1, `inside` in the cube (images `[B, 1, X, Y, Z]` or labels
    `[B, X, Y, Z]`; M `[X, Y, Z]` broadcast over the batch; integer labels stay integer).

    Source: `LA_BCP_train.py#L155-L156`, `#L248-L251@7879f98`.
    """
    if outside.shape != inside.shape or outside.shape[-3:] != mask.shape:
        raise ValueError(
            f"outside {tuple(outside.shape)}, inside {tuple(inside.shape)} and mask {tuple(mask.shape)} must agree"
        )
    m = mask.to(outside.dtype)
    return outside * m + inside * (1 - m)


def bcp_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, smooth: float = 1e-5
) -> torch.Tensor:
    """BCP's `mask_DiceLoss`: softmax, one-hot over every class (background included), non-squared union.

    dice[n, c] = (2·Σ_v m·p·g + smooth) / (Σ_v m·(p + g) + smooth); loss = 1 − mean over the N×C entries
    [C: `utils/losses.py#L47-L77@7879f98`].

    Args:
        logits: `[N, C, X, Y, Z]`.
        target: `[N, X, Y, Z]` integer labels in {0, .., C − 1}.
        mask: `[N, X, Y, Z]` weights (None: every voxel).
        smooth: the reference's 1e-5.
    """
    n, c = logits.shape[:2]
    p = torch.softmax(logits.float(), dim=1).reshape(n, c, -1)
    g = F.one_hot(target.reshape(n, -1).long(), c).transpose(1, 2).float()
    inter, union = p * g, p + g
    if mask is not None:
        m = mask.reshape(n, 1, -1).float()
        inter, union = inter * m, union * m
    dice = (2 * inter.sum(2) + smooth) / (union.sum(2) + smooth)
    return 1 - dice.mean()


def mix_loss(
    logits: torch.Tensor,
    target_outside: torch.Tensor,
    target_inside: torch.Tensor,
    mask: torch.Tensor,
    w_outside: float,
    w_inside: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one mixed image: ((w_o·Dice_M + w_i·Dice_{1−M}) + (w_o·CE_M + w_i·CE_{1−M})) / 2.

    CE_m = Σ(CE_v·m) / (Σm + 1e−16) over every volume and voxel, CE_v the per-voxel cross-entropy (natural log);
    Dice as `bcp_dice_loss` with the mask [C: `BCP_utils.py#L58-L69@7879f98` `mix_loss`; `unlab=True` swaps the
    weights: here the caller passes them].

    Args:
        logits: `[N, 2, X, Y, Z]` of the mixed image.
        target_outside: `[N, X, Y, Z]` labels read where M = 1.
        target_inside: `[N, X, Y, Z]` labels read in the cube (M = 0).
        mask: M `[X, Y, Z]` or `[N, X, Y, Z]`, 1 outside the cube.
        w_outside, w_inside: the regions' weights (GT 1, pseudo labels `u_weight`).

    Returns:
        The loss and float logs of its Dice and CE parts.
    """
    logits = logits.float()
    t_out, t_in = target_outside.long(), target_inside.long()
    m_out = mask.float().expand_as(t_out)
    m_in = 1 - m_out
    dice = w_outside * bcp_dice_loss(logits, t_out, m_out) + w_inside * bcp_dice_loss(logits, t_in, m_in)
    ce_out = (F.cross_entropy(logits, t_out, reduction="none") * m_out).sum() / (m_out.sum() + 1e-16)
    ce_in = (F.cross_entropy(logits, t_in, reduction="none") * m_in).sum() / (m_in.sum() + 1e-16)
    ce = w_outside * ce_out + w_inside * ce_in
    return (dice + ce) / 2, {"dice": dice.item(), "ce": ce.item()}


def largest_component(binary: np.ndarray, connectivity: int) -> np.ndarray:
    """The largest connected component of a binary map (same dtype); an all-zero map is returned as it is.

    Components: `scipy.ndimage.label` with `generate_binary_structure(ndim, connectivity)` (connectivity = ndim: the
    full neighbourhood, skimage `label`'s default); the kept label is argmax(bincount[1:]) + 1, so a tie keeps the
    component met first in C order [C: `LA_BCP_train.py#L65-L77@7879f98` `LargestCC_pancreas`].
    """
    labels, n = ndimage.label(binary, structure=ndimage.generate_binary_structure(binary.ndim, connectivity))
    if n == 0:
        return binary
    keep = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    return (labels == keep).astype(binary.dtype)


def pseudo_labels(logits: torch.Tensor, threshold: float, lcc: bool, connectivity: int) -> torch.Tensor:
    """Hard pseudo labels `[N, X, Y, Z]` (int64) from teacher logits `[N, 2, X, Y, Z]`: 1[softmax_1 ≥ threshold], then
    (lcc) the largest connected component of each volume, on the CPU [C: `LA_BCP_train.py#L57-L77@7879f98`]."""
    labels = (torch.softmax(logits.float(), dim=1)[:, 1] >= threshold).long()
    if not lcc:
        return labels
    kept = np.stack([largest_component(v, connectivity) for v in labels.cpu().numpy()])
    return torch.from_numpy(kept).to(logits.device)


@torch.no_grad()
def ema_fixed(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """θ′ ← decay·θ′ + (1 − decay)·θ on parameters only (BatchNorm buffers are not averaged), with a fixed decay
    from the first step [C: `BCP_utils.py#L78-L81@7879f98` `update_ema_variables`]."""
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameter tensors, student {len(s_params)}")
    for t, s in zip(t_params, s_params, strict=True):
        t.mul_(decay).add_((1 - decay) * s.detach())


def halves(x: torch.Tensor, what: str, keys: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a batch part into its first and second half [C: #L149-L150, #L237-L239]; an odd count is refused,
    naming the config `keys` that set it."""
    n = x.shape[0]
    if n < 2 or n % 2:
        raise ValueError(
            f"bcp mixes two halves of the {what} samples, so their number must be even and >= 2; got {n} "
            f"(set by {keys})"
        )
    return x[: n // 2], x[n // 2 :]


def reference_to_vnet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A reference BCP LA state_dict (`encoder.*`, `decoder.*` plus six unused heads, 259 entries) as the harness
    V-Net's keys: the `encoder.`/`decoder.` prefixes dropped, the projection/prediction/contrastive heads left out
    (`networks/VNet.py#L241-L290@7879f98`). Load the result with `harness.nets.load_reference_state_dict`."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        part, _, rest = key.partition(".")
        if part in ("encoder", "decoder"):
            out[rest] = value
    return out


@register_method("bcp")
class BCP(Method):
    VERSION = 1
    Config = Config
    output_kind = "softmax"
    needs_unlabeled = True
    STAGES = (
        Stage(
            name="pretrain",
            data="labeled",
            settings="pretrain",
            step="pretrain_step",
            modules=("net",),
            optimizer="sgd",
            schedule="constant",
        ),
    )
    TRAIN_STARTS_FROM = "take_pretrained"

    def __init__(self, cfg: Config, build_net: BuildNet, device: torch.device) -> None:
        super().__init__(cfg, build_net, device)
        self.net = build_net("vnet", n_classes=2, has_dropout=cfg.has_dropout).to(device)
        self.teacher = freeze_teacher(build_net("vnet", n_classes=2, has_dropout=cfg.has_dropout).to(device))

    # -- hand-off ----------------------------------------------------------------------------------------------------
    def take_pretrained(self, state: dict[str, Any]) -> None:
        """Student and teacher both start from the pre-trained network, BatchNorm buffers included [C: #L220-L222]."""
        self.net.load_state_dict(state["net"])
        self.teacher.load_state_dict(state["net"])

    # -- losses --------------------------------------------------------------------------------------------------------
    def pretrain_step(self, batch: Batch, progress: Progress) -> StepOutput:
        """Copy-paste between the two halves of a labeled batch; (CE + Dice) / 2 on the mixed labels [C: #L147-L161]."""
        require_labels(batch.y)
        img_a, img_b = halves(batch.x_l, "pre-training", PRETRAIN_KEYS)
        lab_a, lab_b = halves(batch.y, "pre-training", PRETRAIN_KEYS)
        mask = cube_mask(tuple(batch.x.shape[2:]), self.cfg.mask_ratio, batch.x.device)
        logits = self.net(mix(img_a, img_b, mask)).float()
        target = mix(lab_a, lab_b, mask)
        ce = F.cross_entropy(logits, target)
        dice = bcp_dice_loss(logits, target)
        loss = (ce + dice) / 2
        return StepOutput(loss=loss, logs={"loss/ce": ce.item(), "loss/dice": dice.item()})

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        cfg = self.cfg
        require_labels(batch.y)
        if batch.x_l.shape[0] != batch.x_u.shape[0]:
            raise ValueError(
                f"bcp pairs every labeled half with an unlabeled half: protocol.labeled_bs ({batch.x_l.shape[0]}) must "
                f"equal protocol.batch_size - protocol.labeled_bs ({batch.x_u.shape[0]}); the reference: batch_size 8, "
                "labeled_bs 4 (method_overrides.bcp.protocol)"
            )
        img_a, img_b = halves(batch.x_l, "labeled", LABELED_KEYS)
        lab_a, lab_b = halves(batch.y, "labeled", LABELED_KEYS)
        unimg_a, unimg_b = halves(batch.x_u, "unlabeled", UNLABELED_KEYS)
        separate = img_a.shape[0] >= cfg.min_pass_volumes
        with torch.no_grad():
            t_a, t_b = (self.teacher(unimg_a), self.teacher(unimg_b)) if separate else self.teacher(batch.x_u).chunk(2)
            plab_a = pseudo_labels(t_a, cfg.pseudo_threshold, cfg.lcc, cfg.connectivity)
            plab_b = pseudo_labels(t_b, cfg.pseudo_threshold, cfg.lcc, cfg.connectivity)
            mask = cube_mask(tuple(batch.x.shape[2:]), cfg.mask_ratio, batch.x.device)
        mixl, mixu = mix(img_a, unimg_a, mask), mix(unimg_b, img_b, mask)
        out_l, out_u = (self.net(mixl), self.net(mixu)) if separate else self.net(torch.cat([mixl, mixu])).chunk(2)
        loss_l, logs_l = mix_loss(out_l, lab_a, plab_a, mask, cfg.l_weight, cfg.u_weight)
        loss_u, logs_u = mix_loss(out_u, plab_b, lab_b, mask, cfg.u_weight, cfg.l_weight)
        logs = {
            "loss/l": loss_l.item(),
            "loss/u": loss_u.item(),
            "loss/l_dice": logs_l["dice"],
            "loss/l_ce": logs_l["ce"],
            "loss/u_dice": logs_u["dice"],
            "loss/u_ce": logs_u["ce"],
            "pl/fg": float(torch.cat([plab_a, plab_b]).float().mean()),
        }
        return StepOutput(loss=loss_l + loss_u, logs=logs)

    def after_optimizer_step(self, progress: Progress) -> None:
        if self.stage is None:  # the pre-training stage has no teacher
            ema_fixed(self.teacher, self.net, self.cfg.ema_decay)
