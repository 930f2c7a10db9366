"""When a driver checkpoints, what it gathers from the node actors, and how a new attempt resumes.

On Kubernetes checkpoints belong to the Federation's uid, so one re-created under the same name starts
afresh instead of resuming its predecessor; locally (`red run`) to its name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray

from red_api.spec import Federation
from red_runtime.engine import checkpoint
from red_runtime.engine.checkpoint import Checkpoint
from red_runtime.engine.events import NodeStatus
from red_runtime.engine.pool import NodePool

log = logging.getLogger("red.checkpoint")


class Checkpointer:
    def __init__(self, fed: Federation, folder: Path | None):
        self.fed = fed
        self.folder = folder
        self.owner = fed.uid or fed.name
        self.training = checkpoint.training_digest(fed.spec)
        self.last_round = 0
        self.layout: tuple = ()  # the model's layer map (models.layout), set once the model is built

    @property
    def enabled(self) -> bool:
        return bool(self.folder and self.fed.spec.checkpoint.every)

    def due(self, round_no: int, last: bool, stopping: bool = False) -> bool:
        """Every `checkpoint.every` rounds, and always after the last round the run will do; and whenever a
        stop was asked for (a preemption, a suspension, a Pod going), with checkpoints on or not, so that
        the next attempt resumes where this one stopped."""
        if stopping:
            return bool(self.folder)
        return self.enabled and (last or round_no % self.fed.spec.checkpoint.every == 0)

    def save(
        self,
        round_no: int,
        params: Any,
        strategy: dict,
        history: list[dict],
        nodes: list[NodeStatus],
        pool: NodePool,
        dead_slots: set[int],
    ) -> Path:
        assert self.folder is not None
        node_states: dict[int, dict] = {}
        live = [a for s, a in pool.actors.items() if s not in dead_slots]
        for states in ray.get([a.export_state.remote() for a in live]):
            node_states.update(states)
        ckpt = Checkpoint(
            round=round_no,
            params=params,
            strategy=strategy,
            history=list(history),
            nodes=[n.as_dict() for n in nodes],
            node_states=node_states,
            federation=self.owner,
            training=self.training,
            layout=self.layout,
        )
        path = checkpoint.save(self.folder, ckpt, self.fed.spec.checkpoint.keep)
        self.last_round = round_no
        return path

    def load(self) -> Checkpoint | None:
        """The newest checkpoint this Federation may continue from, or None."""
        if not self.folder:
            return None
        ckpt = checkpoint.latest(self.folder, self.owner, self.training)
        if ckpt is not None:
            self.last_round = ckpt.round
        return ckpt

    @staticmethod
    def restore_nodes(ckpt: Checkpoint, pool: NodePool) -> None:
        """Give each node actor back the state of the virtual nodes it hosts (own models, optimizer moments)."""
        by_slot: dict[int, dict] = {}
        for index, kept in ckpt.node_states.items():
            by_slot.setdefault(pool.slot_of(index), {})[index] = kept
        ray.get([pool.actor(slot).import_state.remote(states) for slot, states in by_slot.items()])
