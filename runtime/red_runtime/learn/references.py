"""Resolve a user's "package.module:name" reference to a dataset factory or a model class."""

from __future__ import annotations

import importlib
from typing import Any


def resolve(ref: str, field_path: str) -> Any:
    """Import `ref`; raise ValueError naming the manifest field when it does not resolve."""
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # an ImportError or anything the module raises on import
        raise ValueError(f"{field_path}: {ref!r}: cannot import {module_name}: {err}") from err
    try:
        return getattr(module, attr)
    except AttributeError as err:
        raise ValueError(f"{field_path}: {ref!r}: module {module_name} has no attribute {attr}") from err
