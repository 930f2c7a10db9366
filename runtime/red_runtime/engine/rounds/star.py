"""Star: the server sends the global model to the sampled nodes and aggregates what they return."""

from __future__ import annotations

import ray

from red_runtime.engine.rounds.base import (
    Deadline,
    RoundOutcome,
    Schema,
    collect_updates,
    gather,
    outcome_of,
    require_quorum,
    server_updates,
)
from red_runtime.engine.topology import SERVER, node_id


class StarSchema(Schema):
    def run_round(self, round_no: int, sampled: list[int]) -> RoundOutcome:
        ctx = self.ctx
        deadline = Deadline(ctx.spec.faultTolerance.roundTimeoutSeconds)
        ref = ray.put(ctx.strategy.broadcast(ctx.params))  # one copy in the object store, read by every node
        ray.get(ctx.manager.post.remote(round_no, [SERVER], [node_id(i) for i in sampled], [ref]))
        by_slot = ctx.pool.by_slot(sampled)
        upstream = {i: SERVER for i in sampled}
        calls = {
            slot: ctx.pool.actor(slot).train.remote(
                round_no, idx, upstream, ctx.strategy.linear, ctx.strategy.proximal_mu, deadline.wall()
            )
            for slot, idx in by_slot.items()
        }
        done = gather(calls, deadline, ctx.stop)
        arrived = collect_updates(ctx, round_no, SERVER)
        require_quorum(len(arrived.indices), ctx.spec, round_no, len(sampled))
        ctx.params = ctx.strategy.step(ctx.params, server_updates(ctx, round_no, arrived.updates))
        return outcome_of(ctx, sampled, by_slot, done, arrived)
