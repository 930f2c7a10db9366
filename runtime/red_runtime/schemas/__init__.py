"""Schemas by topology kind."""

from red_runtime.schemas.base import Context, QuorumError, RoundOutcome, Schema
from red_runtime.schemas.decentralized import DecentralizedSchema
from red_runtime.schemas.hierarchical import HierarchicalSchema
from red_runtime.schemas.star import StarSchema

SCHEMAS: dict[str, type[Schema]] = {
    "star": StarSchema,
    "hierarchical": HierarchicalSchema,
    "ring": DecentralizedSchema,
    "mesh": DecentralizedSchema,
    "kregular": DecentralizedSchema,
    "custom": DecentralizedSchema,
}
DECENTRALIZED = ("ring", "mesh", "kregular", "custom")

__all__ = ["DECENTRALIZED", "SCHEMAS", "Context", "QuorumError", "RoundOutcome", "Schema"]
