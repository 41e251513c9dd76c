"""Ramp-up schedules of the consistency weights, in iterations (`docs/protocol.md` §3.4).

Conventions: `docs/methods/README.md` §0; the UA-MT threshold: `docs/methods/ua_mt.md`.

Every function takes the 0-based optimiser step `it` of the loop (`Progress.it`, before the reference's
`iter_num = iter_num + 1`), so the first step uses it = 0, as UA-MT and DTC do.
"""

from __future__ import annotations

import math

#: Iterations per ramp "epoch": the reference passes iter_num // 150 to the ramp [C: yulequan/UA-MT
#: code/train_LA_meanteacher_certainty_unlabel.py#L171@88ed29a].
RAMP_EPOCH = 150
#: Ramp length in those epochs (`--consistency_rampup 40`, same file #L39).
RAMP_LENGTH = 40.0


def sigmoid_rampup(current: float, length: float) -> float:
    """r(s, L) = exp(−5·(1 − clip(s, 0, L)/L)²), and 1.0 when L == 0 (Laine & Aila, arXiv 1610.02242).

    Source: yulequan/UA-MT code/utils/ramps.py `sigmoid_rampup` @ 88ed29a.

    Args:
        current: position s on the ramp (any unit; the same as `length`).
        length: ramp length L ≥ 0; the ramp reaches 1 at s = L.

    Returns:
        A float in [exp(−5), 1] (≈ 0.0067 at s ≤ 0), or 1.0 when L == 0.
    """
    if length < 0:
        raise ValueError(f"length must be >= 0; got {length}")
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(float(current), 0.0), float(length)) / float(length)
    return math.exp(-5.0 * phase * phase)


def consistency_weight(it: int, weight: float, epoch: int = RAMP_EPOCH, length: float = RAMP_LENGTH) -> float:
    """λ(t) = weight·r(⌊t / epoch⌋, length): piecewise constant over blocks of `epoch` iterations (protocol §3.4).

    Args:
        it: 0-based optimiser step t.
        weight: the full-strength weight w (0.1 for MT/UA-MT, 1.0 for DTC).
        epoch: iterations per ramp epoch (150 in the reference).
        length: ramp length in epochs (40 in the reference: full strength at t = 6000).

    Returns:
        The weight; w·exp(−5) ≈ 0.0067·w for t < 150.
    """
    if it < 0 or epoch < 1:
        raise ValueError(f"need it >= 0 and epoch >= 1; got it={it}, epoch={epoch}")
    return weight * sigmoid_rampup(it // epoch, length)


def uncertainty_threshold(it: int, max_it: int, start: float = 0.75, end: float = 1.0) -> float:
    """UA-MT's entropy threshold τ(t) = (start + (end − start)·r(t, max_it))·ln 2, on the raw step.

    See docs/methods/ua_mt.md. With the defaults this is (0.75 + 0.25·r(t, max_it))·ln 2 [C: yulequan/UA-MT
    code/train_LA_meanteacher_certainty_unlabel.py#L173@88ed29a]; note the raw t (not t // 150) and L = max_it.

    Args:
        it: 0-based optimiser step t.
        max_it: the run's iterations (the ramp length).
        start: fraction of ln 2 at t = 0 (times exp(−5) of the ramp part: τ(0) ≈ (0.75 + 0.25·0.0067)·ln 2).
        end: fraction of ln 2 at t ≥ max_it.

    Returns:
        τ(t) in nats.
    """
    if it < 0 or max_it < 0:
        raise ValueError(f"need it >= 0 and max_it >= 0; got it={it}, max_it={max_it}")
    return (start + (end - start) * sigmoid_rampup(it, max_it)) * math.log(2.0)
