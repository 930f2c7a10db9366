"""Schemas by topology kind."""

from red_runtime.engine.rounds.base import Context, QuorumError, RoundOutcome, Schema
from red_runtime.engine.rounds.buffered import BufferedSchema
from red_runtime.engine.rounds.decentralized import DecentralizedSchema
from red_runtime.engine.rounds.hierarchical import HierarchicalSchema
from red_runtime.engine.rounds.star import StarSchema

SCHEMAS: dict[str, type[Schema]] = {
    "star": StarSchema,
    "hierarchical": HierarchicalSchema,
    "ring": DecentralizedSchema,
    "mesh": DecentralizedSchema,
    "kregular": DecentralizedSchema,
    "custom": DecentralizedSchema,
}
DECENTRALIZED = ("ring", "mesh", "kregular", "custom")


def schema_for(kind: str, asynchronous: bool) -> type[Schema]:
    """The schema for a topology kind; asynchronous strategies (FedBuff) have their own star rounds."""
    return BufferedSchema if asynchronous else SCHEMAS[kind]


__all__ = [
    "DECENTRALIZED",
    "SCHEMAS",
    "BufferedSchema",
    "schema_for",
    "Context",
    "QuorumError",
    "RoundOutcome",
    "Schema",
]
