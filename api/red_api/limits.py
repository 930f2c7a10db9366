"""The bounds of a whole manifest: its size as JSON and its depth, each refusal naming where it is exceeded."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# A whole manifest, as JSON: far under the API server's 262,144 bytes for all of an object's annotations
# (kopf's and GitOps tools' copies of it) and its 1.5 MiB for an object.
MAX_MANIFEST_BYTES = 128 * 1024


def manifest_size(doc: Any) -> int | None:
    """The manifest's size as JSON, or None when it is not JSON at all (a non-string key, a set)."""
    try:
        return len(json.dumps(doc, separators=(",", ":"), default=str))
    except (TypeError, ValueError, RecursionError):
        return None


# No Federation field lies deeper than this (Pod affinity's terms are the deepest, at about 14 levels).
MAX_NESTING = 32


def too_deep(doc: Any) -> str | None:
    """Where a document nests beyond MAX_NESTING, named by its first four fields; None if it does not.
    Iterative, so that a value nested beyond Python's recursion limit is found, not a RecursionError."""
    stack = [(doc, (), 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_NESTING:
            return "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in path[:4]).lstrip(".")
        if isinstance(value, Mapping):
            stack.extend((v, (*path, str(k)), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, (*path, i), depth + 1) for i, v in enumerate(value))
    return None


def largest(doc: Any, path: str = "", depth: int = 0) -> tuple[str, int]:
    """The path of the largest value in a document and its size as JSON: what to name when it is too big."""
    if depth > 64 or not isinstance(doc, (Mapping, list)):
        return path, manifest_size(doc) or 0
    items = doc.items() if isinstance(doc, Mapping) else enumerate(doc)
    best = (path, 0)
    for key, value in items:
        where = f"{path}.{key}" if isinstance(doc, Mapping) and path else str(key) if not path else f"{path}[{key}]"
        found = (
            largest(value, where, depth + 1)
            if isinstance(value, (Mapping, list))
            else (where, manifest_size(value) or 0)
        )
        if found[1] > best[1]:
            best = found
    return best
