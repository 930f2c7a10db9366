"""Checkpoints: everything a driver needs to continue at the next round and end with the same model.

Two files per checkpointed round: the tensors (`round-NNNNNN-TAG.pt`, loaded with `weights_only=True`,
so a file someone else put in a shared folder can never run code) and JSON metadata beside them (whose
they are, what training they continue, the history, the tensors' sha256). Both are written to a
temporary name, fsynced and renamed, metadata last, so a crash mid-write leaves the previous checkpoints
intact; a torn tensor file fails its checksum and loading falls back to the one before. TAG is derived
from the owner, so Federations that share a folder never overwrite, load or prune each other's files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from red_api.spec import FederationSpec
from red_runtime import strict_json
from red_runtime.files import atomic_write
from red_runtime.learn.models import flattened, named

log = logging.getLogger("red.checkpoint")
FORMAT = 2


@dataclass
class Checkpoint:
    round: int
    params: np.ndarray
    strategy: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)  # NodeStatus dicts
    node_states: dict[int, dict[str, Any]] = field(default_factory=dict)  # per virtual node, if any
    federation: str = ""
    training: str = ""  # training_digest() of the spec that wrote it
    layout: tuple = ()  # models.layout of the model: saved by name where known


def training_digest(spec: FederationSpec) -> str:
    """What a checkpoint's state depends on: topology, node count and roles, strategy, data and model.

    Changes to anything else (more rounds, a target accuracy, a quorum, placement, resources, the Ray
    cluster) let a new attempt continue; a changed model or dataset starts afresh instead of loading
    weights that do not fit.
    """
    data = dataclasses.asdict(spec)
    kept = {"topology": data["topology"], "task": data["task"]}
    kept["nodes"] = {k: v for k, v in data["nodes"].items() if k != "resources"}
    kept["algorithm"] = {k: v for k, v in data["algorithm"].items() if k not in ("targetAccuracy", "minNodes")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def owner_tag(federation: str) -> str:
    return hashlib.sha256(federation.encode()).hexdigest()[:8]


def path_for(folder: Path, round_no: int, federation: str) -> Path:
    """The tensor file of one round's checkpoint; its metadata is the same name with .json (both match
    red_api.names.is_checkpoint_file)."""
    return Path(folder) / f"round-{round_no:06d}-{owner_tag(federation)}.pt"


def _encode(value: Any) -> Any:
    """numpy arrays become tensors, marked so they come back as arrays: all torch's safe loader accepts."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_encode(v) for v in value)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            return value["__ndarray__"].numpy()
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_decode(v) for v in value)
    return value


def save(folder: Path, ckpt: Checkpoint, keep: int) -> Path:
    """Write `ckpt` and prune this owner's older checkpoints to `keep`; returns the tensor file's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = path_for(folder, ckpt.round, ckpt.federation)
    buffer = io.BytesIO()
    # The global model goes by name (a state_dict's float entries), so the file reads without Red.
    model = {"model": named(ckpt.params, ckpt.layout)} if ckpt.layout else {"params": ckpt.params}
    torch.save(_encode({**model, "strategy": ckpt.strategy, "node_states": ckpt.node_states}), buffer)
    data = buffer.getvalue()
    atomic_write(tensors, data)
    meta = {
        "format": FORMAT,
        "round": ckpt.round,
        "federation": ckpt.federation,
        "training": ckpt.training,
        "history": ckpt.history,
        "nodes": ckpt.nodes,
        "tensors": tensors.name,
        "layout": [[t.name, list(t.shape), t.buffer] for t in ckpt.layout],
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    atomic_write(tensors.with_suffix(".json"), strict_json.dumps(meta).encode())
    for old in rounds_in(folder, ckpt.federation)[:-keep]:
        stale = path_for(folder, old, ckpt.federation)
        stale.with_suffix(".json").unlink(missing_ok=True)
        stale.unlink(missing_ok=True)
    return tensors


def _metadata(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def rounds_in(folder: Path, federation: str) -> list[int]:
    """Rounds checkpointed by `federation` in `folder`, oldest first, judged by their metadata."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob(f"round-*-{owner_tag(federation)}.json"):
        meta = _metadata(path)
        if meta is not None and meta.get("federation") == federation and isinstance(meta.get("round"), int):
            found.append(meta["round"])
    return sorted(found)


def latest(folder: Path, federation: str, training: str) -> Checkpoint | None:
    """The newest checkpoint of `federation`, written for the same `training` digest, that loads completely."""
    for round_no in reversed(rounds_in(folder, federation)):
        tensors = path_for(folder, round_no, federation)
        meta = _metadata(tensors.with_suffix(".json"))
        if meta is None:
            continue
        if meta["training"] != training:
            log.warning("skipping %s: written before the model, data, strategy or topology changed", tensors)
            continue
        try:
            data = tensors.read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise ValueError("its tensors do not match the checksum in its metadata (a torn write)")
            arrays = _decode(torch.load(io.BytesIO(data), weights_only=True))
        except Exception as err:  # truncated or corrupt: fall back to the one before
            log.warning("skipping unreadable checkpoint %s: %s", tensors, err)
            continue
        params = arrays["params"] if "params" in arrays else flattened(arrays["model"], [n for n, *_ in meta["layout"]])
        return Checkpoint(
            round=round_no,
            params=params,
            strategy=arrays["strategy"],
            history=meta["history"],
            nodes=meta["nodes"],
            node_states=arrays["node_states"],
            federation=federation,
            training=training,
        )
    return None
