"""Reading what the topology manager delivered.

A message's objects are owned by the actor that `ray.put` them. When that actor's process (or its whole
Pod) dies, Ray drops what it owned, and a `ray.get` of a message it posted raises OwnerDiedError even
though the manager still holds the reference. Such a message is a lost update, like a node that missed
the deadline, not a reason to fail the federation.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.exceptions import ObjectLostError

log = logging.getLogger(__name__)


def readable(payloads: list[list[Any]]) -> list[list[Any] | None]:
    """Each message's values, in order, or None for a message whose objects were lost."""
    try:  # the usual case: one batched fetch
        flat = ray.get([ref for payload in payloads for ref in payload])
    except ObjectLostError:
        return [_read_one(payload) for payload in payloads]
    out, at = [], 0
    for payload in payloads:
        out.append(flat[at : at + len(payload)])
        at += len(payload)
    return out


def _read_one(payload: list[Any]) -> list[Any] | None:
    try:
        return ray.get(payload)
    except ObjectLostError as err:
        log.warning("a message was lost with the actor that sent it: %s", type(err).__name__)
        return None


def delivered(payloads: list[list[Any]]) -> list[list[Any]]:
    """The values of the messages that can still be read; lost ones are left out."""
    return [values for values in readable(payloads) if values is not None]
