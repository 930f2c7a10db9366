"""Differential privacy's arithmetic: clipping bounds each node's change; noise has the asked scale."""

import numpy as np
import pytest

from red_runtime.privacy import clip_update, epsilon, noisy_sum
from red_runtime.spec import Privacy, SpecError, parse_spec
from red_runtime.strategies import Update

pytestmark = pytest.mark.unit


def test_clipping_bounds_the_change_and_keeps_small_ones():
    start = np.ones(4, np.float32)
    big = clip_update(start + np.array([3, 4, 0, 0], np.float32), start, clip=1.0)
    np.testing.assert_allclose(big - start, [0.6, 0.8, 0, 0], rtol=1e-6)
    small = clip_update(start + 0.1, start, clip=1.0)
    np.testing.assert_allclose(small, start + 0.1, rtol=1e-6)


def test_noise_scale_is_multiplier_times_clip():
    ups = [Update(np.zeros(200_000), 1.0, ("a",)), Update(np.zeros(200_000), 1.0, ("b",))]
    out = noisy_sum(ups, Privacy(clip=2.0, noiseMultiplier=0.5), np.random.default_rng(0))
    assert out.weight == 2.0 and out.nodes == ("a", "b")
    assert out.params.std() == pytest.approx(1.0, rel=0.01)


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    p = Privacy(noiseMultiplier=1.0)
    assert epsilon(1, 0.1, p) < epsilon(10, 0.1, p)
    assert epsilon(10, 0.1, Privacy(noiseMultiplier=2.0)) < epsilon(10, 0.1, p)
    assert epsilon(10, 0.1, Privacy(noiseMultiplier=0.0)) == float("inf")


def test_privacy_needs_a_linear_strategy_and_a_server():
    with pytest.raises(SpecError, match=r"spec.algorithm.privacy: 'set': needs a linear strategy"):
        parse_spec({"algorithm": {"name": "krum", "privacy": {"noiseMultiplier": 1.0}}})
    with pytest.raises(SpecError, match=r"spec.algorithm.privacy: 'set': applies to server-side rounds"):
        parse_spec({"topology": {"kind": "ring"}, "algorithm": {"privacy": {"noiseMultiplier": 1.0}}})
    with pytest.raises(SpecError, match=r"spec.algorithm.privacy.clip: 0"):
        parse_spec({"algorithm": {"privacy": {"clip": 0}}})
