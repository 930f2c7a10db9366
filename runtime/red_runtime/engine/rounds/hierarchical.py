"""Hierarchical: the server talks to `topology.groups` aggregators, each of which serves its nodes.

Aggregators are small Ray actors in the manager's bundle. Each relays the global model down to its
group and sends one combined update up (every update, for robust strategies that need them all).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from red_runtime.engine.messages import delivered
from red_runtime.engine.rounds.base import (
    Context,
    Deadline,
    RoundOutcome,
    Schema,
    collect_updates,
    gather,
    outcome_of,
    require_quorum,
    server_updates,
)
from red_runtime.engine.topology import SERVER, aggregator_id, group_of, node_id
from red_runtime.learn.strategies import Update


class GroupAggregator:
    def __init__(self, name: str, manager: Any):
        self.name = name
        self.manager = manager

    def relay_down(self, round_no: int, members: list[str]) -> int:
        inbox = ray.get(self.manager.collect.remote(round_no, [self.name]))[self.name]
        if not inbox or not members:
            return 0
        return ray.get(self.manager.post.remote(round_no, [self.name], members, inbox[-1][1]))

    def aggregate_up(self, round_no: int, pool: bool) -> int:
        """Send what the group's nodes posted up to the server: summed for linear strategies, else each one;
        their result rows ride along, so the server knows whose updates arrived."""
        inbox = ray.get(self.manager.collect.remote(round_no, [self.name]))[self.name]
        if not inbox:
            return 0
        if not pool:
            ray.get([self.manager.post.remote(round_no, [self.name], [SERVER], payload) for _, payload in inbox])
            return len(inbox)
        messages = delivered([payload[:2] for _, payload in inbox])
        if not messages:
            return 0
        updates: list[Update] = [update for update, _ in messages]
        combined = Update(np.sum([u.params for u in updates], axis=0), sum(u.weight for u in updates))
        combined.nodes = tuple(n for u in updates for n in u.nodes)
        rows = [r for _, rs in messages for r in rs]
        ray.get(self.manager.post.remote(round_no, [self.name], [SERVER], [ray.put(combined), ray.put(rows)]))
        return 1


class HierarchicalSchema(Schema):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.groups = ctx.spec.topology.groups or 1
        cls = ray.remote(GroupAggregator).options(
            num_cpus=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(ctx.pool.pg, placement_group_bundle_index=0),
        )
        self.aggregators = [cls.remote(aggregator_id(g), ctx.manager) for g in range(self.groups)]

    def run_round(self, round_no: int, sampled: list[int]) -> RoundOutcome:
        ctx = self.ctx
        deadline = Deadline(ctx.spec.faultTolerance.roundTimeoutSeconds)
        ref = ray.put(ctx.strategy.broadcast(ctx.params))
        names = [aggregator_id(g) for g in range(self.groups)]
        ray.get(ctx.manager.post.remote(round_no, [SERVER], names, [ref]))
        members: dict[int, list[str]] = {g: [] for g in range(self.groups)}
        for i in sampled:
            members[group_of(i, self.groups)].append(node_id(i))
        ray.get([a.relay_down.remote(round_no, members[g]) for g, a in enumerate(self.aggregators)])
        by_slot = ctx.pool.by_slot(sampled)
        upstream = {i: aggregator_id(group_of(i, self.groups)) for i in sampled}
        calls = {
            slot: ctx.pool.actor(slot).train.remote(
                round_no, idx, upstream, ctx.strategy.linear, ctx.strategy.proximal_mu, deadline.wall()
            )
            for slot, idx in by_slot.items()
        }
        done = gather(calls, deadline, ctx.stop)
        ray.get([a.aggregate_up.remote(round_no, ctx.strategy.linear) for a in self.aggregators])
        arrived = collect_updates(ctx, round_no, SERVER)
        require_quorum(len(arrived.indices), ctx.spec, round_no, len(sampled))
        ctx.params = ctx.strategy.step(ctx.params, server_updates(ctx, round_no, arrived.updates))
        return outcome_of(ctx, sampled, by_slot, done, arrived)
