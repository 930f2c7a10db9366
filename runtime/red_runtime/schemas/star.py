"""Star: the server sends the global model to the sampled nodes and aggregates what they return."""

from __future__ import annotations

import ray

from red_runtime.schemas.base import RoundOutcome, Schema, gather, require_quorum, server_updates
from red_runtime.topology import SERVER, node_id


class StarSchema(Schema):
    def run_round(self, round_no: int, sampled: list[int]) -> RoundOutcome:
        ctx = self.ctx
        ref = ray.put(ctx.params)  # one copy in the object store, read by every node
        ray.get(ctx.manager.post.remote(round_no, [SERVER], [node_id(i) for i in sampled], [ref]))
        by_slot = ctx.pool.by_slot(sampled)
        upstream = {i: SERVER for i in sampled}
        calls = {
            slot: ctx.pool.actor(slot).train.remote(
                round_no, idx, upstream, ctx.strategy.linear, ctx.strategy.proximal_mu
            )
            for slot, idx in by_slot.items()
        }
        done = gather(calls, ctx.spec.faultTolerance.roundTimeoutSeconds)
        inbox = ray.get(ctx.manager.collect.remote(round_no, [SERVER]))[SERVER]
        updates = ray.get([payload[0] for _, payload in inbox])
        arrived = sum(len(u.nodes) for u in updates)
        require_quorum(arrived, ctx.spec, round_no, len(sampled))
        ctx.params = ctx.strategy.step(ctx.params, server_updates(ctx, round_no, updates))
        return RoundOutcome(
            params=ctx.params,
            results=[r for rs in done.results.values() for r in rs],
            straggling=self.nodes_of(done.straggling, by_slot),
            failed=self.nodes_of(done.failed, by_slot),
        )
