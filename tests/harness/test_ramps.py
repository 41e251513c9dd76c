"""Ramp functions against hand-computed values.

Sources: docs/protocol.md §3.4, docs/methods/README.md §0, docs/methods/ua_mt.md.
"""

from __future__ import annotations

import math

import pytest

from harness.numerics.ramps import consistency_weight, sigmoid_rampup, uncertainty_threshold

LN2 = 0.6931471805599453


def test_sigmoid_rampup_by_hand():
    assert sigmoid_rampup(0, 40) == pytest.approx(0.006737946999085467, rel=1e-12)  # exp(-5·1²)
    assert sigmoid_rampup(20, 40) == pytest.approx(0.2865047968601901, rel=1e-12)  # exp(-5·0.5²) = exp(-1.25)
    assert sigmoid_rampup(40, 40) == 1.0  # exp(-5·0²)
    assert sigmoid_rampup(55, 40) == 1.0  # clipped to L
    assert sigmoid_rampup(-3, 40) == pytest.approx(0.006737946999085467, rel=1e-12)  # clipped to 0
    assert sigmoid_rampup(7, 0) == 1.0  # L == 0: no ramp
    with pytest.raises(ValueError, match="length"):
        sigmoid_rampup(1, -1)


def test_consistency_weight_uses_blocks_of_150_iterations():
    # t < 150: ⌊t/150⌋ = 0 → w·exp(-5); the weight starts near 0.0067·w, not 0
    assert consistency_weight(0, 0.1) == pytest.approx(0.1 * 0.006737946999085467, rel=1e-12)
    assert consistency_weight(149, 0.1) == consistency_weight(0, 0.1)
    # t = 150: ⌊t/150⌋ = 1 → phase 1 − 1/40 = 0.975, exp(-5·0.950625) = exp(-4.753125) = 0.0086247008…
    assert consistency_weight(150, 0.1) == pytest.approx(0.1 * 0.008624700856245927, rel=1e-12)
    # t = 3000: epoch 20 of 40 → exp(-1.25); t = 6000: epoch 40 → 1
    assert consistency_weight(3000, 1.0) == pytest.approx(0.2865047968601901, rel=1e-12)
    assert consistency_weight(6000, 1.0) == 1.0 and consistency_weight(9999, 0.1) == pytest.approx(0.1)
    assert consistency_weight(300, 1.0, epoch=100, length=3) == 1.0  # ⌊300/100⌋ = 3 = L
    with pytest.raises(ValueError, match="it"):
        consistency_weight(-1, 0.1)


def test_uncertainty_threshold_on_the_raw_iteration():
    # τ(0) = (0.75 + 0.25·exp(-5))·ln 2 = (0.75 + 0.00168449)·0.693147 = 0.52102798…
    assert uncertainty_threshold(0, 6000) == pytest.approx(0.5210279826612536, rel=1e-12)
    # τ(3000) = (0.75 + 0.25·exp(-1.25))·ln 2 = (0.75 + 0.07162620)·0.693147 = 0.56950788…
    assert uncertainty_threshold(3000, 6000) == pytest.approx(0.5695078834600942, rel=1e-12)
    assert uncertainty_threshold(6000, 6000) == pytest.approx(LN2, rel=1e-15)
    # raw t, not t // 150: within the first 150 steps the threshold already moves
    assert uncertainty_threshold(149, 6000) > uncertainty_threshold(0, 6000)
    # start/end are fractions of ln 2: (0.5 + 0.5·1)·ln 2 at the end
    assert uncertainty_threshold(10, 10, start=0.5, end=1.0) == pytest.approx(LN2)
    assert uncertainty_threshold(0, 10, start=0.5, end=0.5) == pytest.approx(0.5 * math.log(2))
