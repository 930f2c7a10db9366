"""How many node-actor slots a Ray cluster offers, and the placement group that reserves them.

`plan_slots` is pure: it sees the cluster as a list of per-machine resources, so its errors (a
bundle no machine can hold, GPUs asked of a cluster without any) are unit-tested without Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from red_api.spec import FederationSpec

# The topology manager and aggregators mostly wait on messages: they reserve memory, not a CPU, so
# every core stays with the node actors that train.
MANAGER_BUNDLE = {"memory": 256 * 1024 * 1024}
EPS = 1e-9


@dataclass(frozen=True)
class SlotPlan:
    slots: int
    node_bundle: dict[str, float]

    @property
    def bundles(self) -> list[dict[str, float]]:
        return [dict(MANAGER_BUNDLE)] + [dict(self.node_bundle) for _ in range(self.slots)]


def slot_nodes(slot: int, count: int, slots: int) -> list[int]:
    """The virtual nodes slot `slot` hosts, of `count` in `slots` slots: node i lives in slot i mod slots."""
    return list(range(slot, count, slots))


def node_bundle(spec: FederationSpec) -> dict[str, float]:
    res = spec.nodes.resources
    bundle = {}
    if res.cpu > 0:
        bundle["CPU"] = res.cpu
    if res.gpu > 0:
        bundle["GPU"] = res.gpu
    return bundle


def _fits(machine: dict[str, float], bundle: dict[str, float]) -> int:
    return min(math.floor(machine.get(k, 0.0) / v + EPS) for k, v in bundle.items())


def plan_slots(spec: FederationSpec, machines: list[dict[str, float]]) -> SlotPlan:
    """Actor slots for `spec` on machines with the given Ray resources; ValueError if none fit."""
    return SlotPlan(slots=min(spec.nodes.count, slot_capacity(spec, machines)), node_bundle=node_bundle(spec))


def trial_plan(spec: FederationSpec, machines: list[dict[str, float]], trials: int, concurrency: int) -> SlotPlan:
    """Each sweep trial's share of the cluster: `concurrency` trials at once (0: as many as fit, at most
    `trials`), each with an equal number of slots. Tune starts a trial only when its bundles are free, so
    asking for more trials at once than there are slots queues them; it never oversubscribes."""
    capacity = slot_capacity(spec, machines)
    at_once = min(concurrency or trials, trials, capacity)
    return SlotPlan(slots=max(1, min(spec.nodes.count, capacity // at_once)), node_bundle=node_bundle(spec))


def slot_capacity(spec: FederationSpec, machines: list[dict[str, float]]) -> int:
    """How many node actors of `spec` the machines hold at once under its placement strategy."""
    bundle = node_bundle(spec)
    res = spec.nodes.resources
    if res.gpu > 0 and not any(m.get("GPU", 0) > 0 for m in machines):
        raise ValueError(f"spec.nodes.resources.gpu: {res.gpu:g}: the Ray cluster has no GPU")
    per_machine = [_fits(m, bundle) for m in machines]
    if not any(per_machine):
        largest = max(machines, key=lambda m: (m.get("GPU", 0), m.get("CPU", 0)), default={})
        have = ", ".join(f"{k} {largest.get(k, 0):g}" for k in bundle)
        raise ValueError(
            f"spec.nodes.resources: {res.cpu:g} cpu, {res.gpu:g} gpu: no Ray node can hold one node actor "
            f"(the largest has {have})"
        )
    strategy = spec.placement.strategy
    if strategy == "STRICT_PACK":
        capacity = max(per_machine)
    elif strategy == "STRICT_SPREAD":
        # One bundle per machine, and the manager's bundle takes a machine of its own.
        capacity = sum(1 for n in per_machine if n) - 1
        if capacity < 1:
            raise ValueError(
                f"spec.placement.strategy: {strategy!r}: needs at least 2 Ray nodes (one for the topology "
                f"manager, one per node actor); the cluster has {len(machines)}"
            )
    else:
        capacity = sum(per_machine)
    return capacity
