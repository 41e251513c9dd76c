"""The EMA ("mean") teacher, written once for every method that has one (`docs/methods/README.md` §0).

Source: yulequan/UA-MT code/train_LA_meanteacher_certainty_unlabel.py `update_ema_variables` (#L68-L72) and
`create_model(ema=True)` (#L87-L94) @ 88ed29ad794f877122e542a7fa9505a76fa83515.
"""

from __future__ import annotations

import torch
from torch import nn


def ema_alpha(step: int, a_max: float) -> float:
    """a_t = min(1 − 1/(t + 1), a_max): the true running mean first, then the exponential average.

    Args:
        step: 0-based optimiser step t of the update (a_0 = 0: the teacher becomes a copy of the student).
        a_max: the decay ceiling (0.99 for MT/UA-MT, 0.999 for SimCVD).
    """
    if step < 0 or not 0.0 <= a_max <= 1.0:
        raise ValueError(f"need step >= 0 and 0 <= a_max <= 1; got step={step}, a_max={a_max}")
    return min(1.0 - 1.0 / (step + 1), a_max)


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Mark every parameter of `teacher` as not requiring gradients (the reference `param.detach_()`); returns it.

    The teacher stays a separately initialised network of the student's architecture and is put in train mode by
    the loop like every module of a method (dropout active, BatchNorm batch statistics), as in the reference.
    """
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def update_ema(teacher: nn.Module, student: nn.Module, step: int, a_max: float) -> float:
    """θ′ ← a_t·θ′ + (1 − a_t)·θ on parameters only; BatchNorm running buffers are not averaged.

    Call it after the optimiser step of iteration `step` (`Method.after_optimizer_step(progress)` with
    progress.it), as the reference does before incrementing its counter.

    Args:
        teacher: the EMA network θ′, updated in place.
        student: the trained network θ, with parameters in the same order and shapes.
        step: 0-based optimiser step t.
        a_max: the decay ceiling.

    Returns:
        The a_t used.
    """
    alpha = ema_alpha(step, a_max)
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameter tensors, student {len(s_params)}")
    for t, s in zip(t_params, s_params, strict=True):
        if t.shape != s.shape:
            raise ValueError(f"teacher parameter shape {tuple(t.shape)} differs from student {tuple(s.shape)}")
        t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
    return alpha
