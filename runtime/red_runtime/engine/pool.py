"""The node actors of one federation: created lazily inside their placement-group bundles."""

from __future__ import annotations

from typing import Any

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from red_api.spec import FederationSpec
from red_runtime.engine.node import NodeHost
from red_runtime.engine.placement import SlotPlan, slot_nodes


class NodePool:
    """Maps virtual nodes to actor slots (node i lives in slot i mod slots) and owns the actors."""

    def __init__(self, spec: FederationSpec, plan: SlotPlan, pg: Any, name: str):
        self.spec = spec
        self.name = name
        self.plan = plan
        self.pg = pg
        self.actors: dict[int, Any] = {}
        res = spec.nodes.resources
        self._actor_cls = ray.remote(NodeHost)
        self._options = {
            "num_cpus": res.cpu,
            "num_gpus": res.gpu,
            "max_restarts": spec.faultTolerance.maxNodeRestarts,
            "max_task_retries": 0,
        }
        self.threads = max(1, int(res.cpu))

    def slot_of(self, index: int) -> int:
        return index % self.plan.slots

    def actor(self, slot: int) -> Any:
        if slot not in self.actors:
            self.actors[slot] = self._actor_cls.options(
                **self._options,
                name=self.actor_name(slot),
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=slot + 1),
            ).remote(self.spec, slot, self.name, self.threads, self.plan.slots)
        return self.actors[slot]

    def actor_name(self, slot: int) -> str:
        """Named, so an operator (or a fault-injection test) can find the process behind a node."""
        return f"red-{self.name}-slot-{slot}"

    def nodes_in(self, slot: int) -> list[int]:
        return slot_nodes(slot, self.spec.nodes.count, self.plan.slots)

    def by_slot(self, indices: list[int]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for index in indices:
            groups.setdefault(self.slot_of(index), []).append(index)
        return groups

    def shutdown(self) -> None:
        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)
        self.actors.clear()
