"""What a federation holds on Ray while it runs: one placement group, the topology manager, the node pool.

A context manager, so that the placement group is removed and every actor killed on any way out:
the last round, an error, a stop request or a second Ctrl-C.
"""

from __future__ import annotations

import os
from typing import Any

import networkx as nx
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from red_api.spec import FederationSpec
from red_runtime.engine.placement import SlotPlan
from red_runtime.engine.pool import NodePool
from red_runtime.engine.topology import TopologyManager, manager_name

PLACEMENT_TIMEOUT_S = float(os.environ.get("RED_PLACEMENT_TIMEOUT_S", "120"))


class FederationCompute:
    """`reserved`: a placement group someone else made and removes (a sweep trial's, from Ray Tune), with
    the plan's bundles; the federation places into it and leaves it in place."""

    def __init__(self, spec: FederationSpec, name: str, plan: SlotPlan, graph: nx.Graph, reserved: Any = None):
        self.spec = spec
        self.name = name
        self.plan = plan
        self.graph = graph
        self.reserved = reserved
        self.pg: Any = None
        self.manager: Any = None
        self.pool: NodePool | None = None

    def __enter__(self) -> FederationCompute:
        try:
            self._place()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _place(self) -> None:
        plan = self.plan
        self.pg = self.reserved or placement_group(
            plan.bundles, strategy=self.spec.placement.strategy, name=f"red-{self.name}"
        )
        ready, _ = ray.wait([self.pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            raise RuntimeError(
                f"placement group of {len(plan.bundles)} bundles ({plan.node_bundle} per node actor, strategy "
                f"{self.spec.placement.strategy}) was not placed within {PLACEMENT_TIMEOUT_S:.0f}s"
            )
        self.manager = (
            ray.remote(TopologyManager)
            .options(
                name=manager_name(self.name),
                num_cpus=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=0),
            )
            .remote([tuple(e) for e in self.graph.edges], list(self.graph.nodes), self.spec.topology.kind)
        )
        self.pool = NodePool(self.spec, plan, self.pg, self.name)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
        if self.manager is not None:
            ray.kill(self.manager, no_restart=True)
            self.manager = None
        if self.pg is not None and self.reserved is None:
            remove_placement_group(self.pg)
        self.pg = None
