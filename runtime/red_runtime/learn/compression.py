"""Compressed updates (`spec.communication.compression`): what a node's change becomes on the wire.

A node compresses its change (trained - received) plus the error it left out before (error feedback,
kept in node state), so nothing is lost for good, only delayed. The functions return the decoded change
the server will see and the bytes its encoding takes. Red's virtual nodes share an actor, which pools the
decoded changes; the bytes are what each node's update would take on a network.
"""

from __future__ import annotations

import math

import numpy as np

from red_api.spec import Compression

VALUE_BYTES = 4  # float32


def dense_bytes(size: int) -> int:
    return VALUE_BYTES * size


def topk(change: np.ndarray, ratio: float) -> tuple[np.ndarray, int]:
    """The `ratio` share of largest-magnitude entries; sent as their float32 values and where they are,
    whichever is smaller: a bitmap of n bits or the indices (16-bit up to 65,536 entries, else 32-bit)."""
    n = change.size
    k = max(1, math.ceil(ratio * n))
    keep = np.argpartition(np.abs(change), n - k)[n - k :]
    out = np.zeros_like(change)
    out[keep] = change[keep]
    index_bytes = 2 if n <= 65536 else 4
    return out, VALUE_BYTES * k + min(math.ceil(n / 8), index_bytes * k)


def quantize(change: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """Uniform quantisation to 2^bits levels between the change's minimum and maximum (sent with them)."""
    lo, hi = float(change.min()), float(change.max())
    if hi == lo:
        return np.full_like(change, lo), 2 * VALUE_BYTES
    levels = 2**bits - 1
    step = (hi - lo) / levels
    out = lo + np.round((change - lo) / step) * step
    return out.astype(change.dtype), math.ceil(change.size * bits / 8) + 2 * VALUE_BYTES


def compress(spec: Compression, change: np.ndarray) -> tuple[np.ndarray, int]:
    if spec.kind == "topk":
        return topk(change, spec.ratio)
    if spec.kind == "quantize":
        return quantize(change, spec.bits)
    return change, dense_bytes(change.size)


def with_error_feedback(
    spec: Compression, start: np.ndarray, trained: np.ndarray, residual: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """The model the server will see, the error left for next round, and the bytes sent."""
    change = trained.astype(np.float64) - start.astype(np.float64)
    if residual is not None:
        change += residual
    sent, nbytes = compress(spec, change)
    return (start + sent).astype(np.float32), (change - sent).astype(np.float32), nbytes
