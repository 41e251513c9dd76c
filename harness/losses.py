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
    ce = F.cross_entropy(logits, target)
    dice = dice_fg(torch.softmax(logits, dim=1)[:, 1], target)
    return 0.5 * (ce + dice), {"loss/ce": ce.item(), "loss/dice": dice.item()}
