"""Strict JSON for everything Red writes: the API server refuses NaN and Infinity, and so do most readers.

A diverging run produces NaN losses and a privacy run without noise an infinite epsilon; both become
null here, so a status patch, metrics.jsonl or summary.json always parses.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every non-finite float, at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """json.dumps after mapping non-finite numbers to null; raises if any remain (numpy floats included)."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
