"""Loss terms shared by several methods; each docstring gives the formula and its source."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_fg(p_fg: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Foreground Dice loss with squared denominators over the whole mini-batch (protocol §3.6).

    Dice_fg = 1 − (2·Σ p·g + smooth) / (Σ p² + Σ g² + smooth)   [C: yulequan/UA-MT code/utils/losses.py dice_loss]

    Args:
        p_fg: foreground probabilities, any shape (e.g. [B, X, Y, Z]).
        target: labels {0, 1} of the same shape (any dtype).
        smooth: the reference's 1e-5.
    """
    g = target.float()
    intersect = (p_fg * g).sum()
    return 1 - (2 * intersect + smooth) / ((p_fg * p_fg).sum() + (g * g).sum() + smooth)


def supervised_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """L_sup = 0.5·(CE + Dice_fg) for a 2-class head [C: yulequan/UA-MT train_LA.py].

    Args:
        logits: `[B, 2, X, Y, Z]` raw scores of the labeled samples.
        target: `[B, X, Y, Z]` int64 labels in {0, 1}.

    Returns:
        The loss and float logs of its two terms.
    """
    if target.min() < 0:
        raise ValueError("supervised_loss received a sentinel (-1) label: an unlabeled sample leaked into the loss")
    logits = logits.float()  # losses in fp32 also under bf16/fp16 autocast (sums over ~1e6 voxels)
    ce = F.cross_entropy(logits, target)
    dice = dice_fg(torch.softmax(logits, dim=1)[:, 1], target)
    return 0.5 * (ce + dice), {"loss/ce": ce.item(), "loss/dice": dice.item()}


def require_labels(target: torch.Tensor) -> None:
    """Refuse the sentinel label (−1) of unlabeled samples (protocol §3.1 leakage guard).

    Raises:
        ValueError: `target` holds a negative value.
    """
    if target.numel() and target.min() < 0:
        raise ValueError("a loss received a sentinel (-1) label: an unlabeled sample leaked into the loss")


def add_input_noise(x: torch.Tensor, std: float = 0.1, clip: float = 0.2) -> torch.Tensor:
    """ξ(x) = x + clip(std·ε, −clip, clip), ε ~ N(0, I) per voxel, drawn from torch's RNG.

    Conventions: docs/methods/README.md §0. Source: yulequan/UA-MT
    code/train_LA_meanteacher_certainty_unlabel.py#L146@88ed29a (std 0.1, clip 0.2). Only
    torch's RNG is used, because it is the RNG the loop checkpoints (exact resume).

    Args:
        x: input batch `[B, 1, X, Y, Z]` (any shape).
        std: standard deviation of the Gaussian before clipping.
        clip: symmetric clipping bound (≥ 0).

    Returns:
        A new tensor of x's shape.
    """
    if std < 0 or clip < 0:
        raise ValueError(f"need std >= 0 and clip >= 0; got std={std}, clip={clip}")
    return x + torch.clamp(torch.randn_like(x) * std, -clip, clip)


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-voxel, per-channel (softmax(s) − softmax(t))², not reduced; no gradient reaches the teacher side.

    Source: yulequan/UA-MT code/utils/losses.py `softmax_mse_loss` (#L56-L69@88ed29a).

    Args:
        student_logits: `[B, C, X, Y, Z]`.
        teacher_logits: the same shape (detached here).

    Returns:
        `[B, C, X, Y, Z]` squared differences of the class probabilities.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits {tuple(teacher_logits.shape)} differ"
        )
    return (torch.softmax(student_logits, dim=1) - torch.softmax(teacher_logits.detach(), dim=1)) ** 2


def masked_mse(dist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """UA-MT's masked consistency Σ(mask·d) / (C·Σ mask + 1e−16): the mean of d over the kept voxels and C channels.

    Source: yulequan/UA-MT code/train_LA_meanteacher_certainty_unlabel.py#L175@88ed29a, where C = 2 is written out.
    An all-zero mask gives 0.

    Args:
        dist: per-voxel distances `[B, C, X, Y, Z]` (e.g. `softmax_mse`).
        mask: `[B, 1, X, Y, Z]` in {0, 1} (float), the same for every channel.
    """
    if mask.dim() != dist.dim() or mask.shape[1] != 1 or mask.shape[2:] != dist.shape[2:]:
        raise ValueError(f"mask must have shape [B, 1, ...] matching dist {tuple(dist.shape)}; got {tuple(mask.shape)}")
    return torch.sum(mask * dist) / (dist.shape[1] * torch.sum(mask) + 1e-16)


def predictive_entropy(p_mean: torch.Tensor) -> torch.Tensor:
    """u = −Σ_c p̄_c·log(p̄_c + 1e−6) in nats, over the class dimension, kept (docs/methods/ua_mt.md).

    Source: yulequan/UA-MT code/train_LA_meanteacher_certainty_unlabel.py#L162@88ed29a.

    Args:
        p_mean: mean class probabilities `[B, C, X, Y, Z]`.

    Returns:
        `[B, 1, X, Y, Z]`; at most ln 2 ≈ 0.693 for C = 2 (slightly less because of the 1e−6).
    """
    return -torch.sum(p_mean * torch.log(p_mean + 1e-6), dim=1, keepdim=True)


def dual_task_consistency(sdm: torch.Tensor, seg_logits: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """DTC's L_cons = mean over every sample and voxel of (σ(−k·s) − σ(o))² (docs/methods/dtc.md).

    σ(−k·s) turns the tanh signed distance map (negative inside) into a soft mask. Gradients flow into both sides
    (the reference does not detach either) [C: HiLab-git/DTC code/train_la_dtc.py#L185-L187@2525b9c].

    Args:
        sdm: tanh SDM head output `[B, 1, X, Y, Z]` in [−1, 1].
        seg_logits: segmentation logits `[B, 1, X, Y, Z]`.
        k: the transform's steepness (1500 in the reference).
    """
    if sdm.shape != seg_logits.shape:
        raise ValueError(f"sdm {tuple(sdm.shape)} and seg_logits {tuple(seg_logits.shape)} must have the same shape")
    return torch.mean((torch.sigmoid(-k * sdm) - torch.sigmoid(seg_logits)) ** 2)
