"""Checkpoints: everything a driver needs to continue at the next round and end with the same model.

One file per checkpointed round, written to a temporary name, fsynced and renamed, so a crash
mid-write leaves the previous checkpoints intact. Loading walks from the newest file back and skips
any that do not read completely (a truncated file from a crash on a non-atomic volume).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from red_runtime.spec import FederationSpec

log = logging.getLogger("red.checkpoint")
PATTERN = re.compile(r"^round-(\d{6})\.pt$")


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


def path_for(folder: Path, round_no: int) -> Path:
    return Path(folder) / f"round-{round_no:06d}.pt"


def save(folder: Path, ckpt: Checkpoint, keep: int) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = path_for(folder, ckpt.round)
    tmp = folder / f".{final.name}.tmp"
    with open(tmp, "wb") as fh:
        torch.save(ckpt.__dict__, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    for old in rounds_in(folder)[:-keep]:
        path_for(folder, old).unlink(missing_ok=True)
    return final


def rounds_in(folder: Path) -> list[int]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := PATTERN.match(p.name)))


def latest(folder: Path, federation: str, training: str) -> Checkpoint | None:
    """The newest checkpoint of `federation`, written for the same `training` digest, that loads completely."""
    for round_no in reversed(rounds_in(folder)):
        path = path_for(folder, round_no)
        try:
            data = torch.load(path, weights_only=False)
            ckpt = Checkpoint(**data)
        except Exception as err:  # truncated or corrupt: fall back to the one before
            log.warning("skipping unreadable checkpoint %s: %s", path, err)
            continue
        if ckpt.federation != federation:
            log.warning("skipping %s: it belongs to federation %r", path, ckpt.federation)
            continue
        if ckpt.training != training:
            log.warning("skipping %s: written before the model, data, strategy or topology changed", path)
            continue
        return ckpt
    return None
