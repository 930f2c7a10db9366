"""Compressed updates: what top-k and quantisation keep, what they cost on the wire, and error feedback."""

import numpy as np
import pytest

from red_api.spec import Compression, SpecError, parse_spec
from red_runtime.learn.compression import dense_bytes, quantize, topk, with_error_feedback

pytestmark = pytest.mark.unit


def test_topk_keeps_the_largest_entries_and_costs_a_bitmap_or_indices():
    change = np.array([0.1, -5.0, 0.2, 3.0, -0.3, 0.0, 0.05, 1.0, 0.0, 0.0])
    out, nbytes = topk(change, 0.2)
    np.testing.assert_array_equal(out, [0, -5.0, 0, 3.0, 0, 0, 0, 0, 0, 0])
    assert nbytes == 2 * 4 + min(2, 2 * 2)  # two float32 values, and a 10-bit bitmap beats two 16-bit indices
    big = np.random.default_rng(0).standard_normal(100_000)
    _, nbytes = topk(big, 0.1)
    assert nbytes == 10_000 * 4 + 100_000 // 8  # over 65,536 entries: a bitmap of 12,500 bytes
    assert nbytes / dense_bytes(big.size) < 0.15


def test_quantize_stays_within_half_a_step_and_sends_a_byte_an_entry_at_8_bits():
    change = np.random.default_rng(1).uniform(-2, 6, 1000)
    out, nbytes = quantize(change, 8)
    assert np.abs(out - change).max() <= 8 / 255 / 2 + 1e-12
    assert nbytes == 1000 + 8
    flat, nbytes = quantize(np.full(5, 0.5), 4)
    np.testing.assert_array_equal(flat, np.full(5, 0.5))


def test_error_feedback_sends_what_was_left_out_in_a_later_round():
    spec = Compression(kind="topk", ratio=0.5)
    start = np.zeros(2, np.float32)
    model, residual, _ = with_error_feedback(spec, start, np.array([1.0, 0.4], np.float32), None)
    np.testing.assert_allclose(model, [1.0, 0.0])
    np.testing.assert_allclose(residual, [0.0, 0.4])
    # The next round's change is small, but the 0.4 left out before now wins the one slot.
    model, residual, _ = with_error_feedback(spec, start, np.array([0.1, 0.1], np.float32), residual)
    np.testing.assert_allclose(model, [0.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(residual, [0.1, 0.0], atol=1e-7)


@pytest.mark.parametrize(
    ("compression", "extra", "problem"),
    [
        ({"kind": "zip"}, {}, "spec.communication.compression.kind: 'zip'"),
        ({"kind": "topk", "ratio": 0}, {}, "spec.communication.compression.ratio: 0: must be greater than 0"),
        ({"kind": "topk", "ratio": 1.5}, {}, "spec.communication.compression.ratio: 1.5: must be at most 1"),
        ({"kind": "topk", "bits": 8}, {}, "spec.communication.compression.bits: 8: belongs to kind quantize"),
        ({"kind": "quantize", "bits": 0}, {}, "spec.communication.compression.bits: 0: must be at least 1"),
        ({"kind": "quantize", "bits": 4.5}, {}, "spec.communication.compression.bits: 4.5: must be an integer"),
        (
            {"kind": "topk"},
            {"topology": {"kind": "ring"}},
            "spec.communication.compression.kind: 'topk': applies to updates sent to a server",
        ),
        (
            {"kind": "quantize"},
            {"algorithm": {"privacy": {"noiseMultiplier": 1.0}}},
            "spec.communication.compression.kind: 'quantize': cannot be combined with algorithm.privacy",
        ),
    ],
)
def test_bad_compression_is_refused_naming_the_field(compression, extra, problem):
    with pytest.raises(SpecError) as err:
        parse_spec({"communication": {"compression": compression}, **extra})
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems
