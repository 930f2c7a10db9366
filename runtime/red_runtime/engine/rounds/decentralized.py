"""Ring, mesh, k-regular and custom graphs: every node trains, swaps models with its neighbours and mixes.

All nodes move in parallel (two barriers a round, not a token passed around). The federation is
judged by the average of the nodes' models; the consensus distance says how far they are from it.
"""

from __future__ import annotations

import math

import numpy as np
import ray

from red_runtime.engine.rounds.base import Context, Deadline, RoundOutcome, Schema, gather, require_quorum
from red_runtime.engine.topology import datasize_weights, metropolis_weights, node_id


class DecentralizedSchema(Schema):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.graph_changed()

    def resumed(self) -> None:
        self.start_ref = [ray.put(self.ctx.params)]

    def graph_changed(self) -> None:
        """Neighbours and mixing weights from the current graph (it shrinks when nodes fail)."""
        ctx = self.ctx
        g = ctx.graph
        self.neighbours = {i: sorted(g.neighbors(node_id(i))) for i in range(ctx.spec.nodes.count) if node_id(i) in g}
        if ctx.spec.topology.mixing == "datasize":
            self.weights = {i: datasize_weights(g, node_id(i), ctx.sizes) for i in self.neighbours}
        else:
            self.weights = {i: metropolis_weights(g, node_id(i)) for i in self.neighbours}
        self.start_ref = [ray.put(ctx.params)]

    def run_round(self, round_no: int, sampled: list[int]) -> RoundOutcome:
        """Train and send, then mix, within one deadline for the whole round; quorum after each phase."""
        ctx = self.ctx
        by_slot = ctx.pool.by_slot(sampled)
        deadline = Deadline(ctx.spec.faultTolerance.roundTimeoutSeconds)
        trained = gather(
            {
                slot: ctx.pool.actor(slot).gossip_train.remote(
                    round_no, idx, self.start_ref, {i: self.neighbours[i] for i in idx}, deadline.wall()
                )
                for slot, idx in by_slot.items()
            },
            deadline,
            ctx.stop,
        )
        results = [r for rs in trained.results.values() for r in rs]
        require_quorum(len(results), ctx.spec, round_no, len(sampled))
        live: dict[int, list[int]] = {}
        for r in results:
            live.setdefault(ctx.pool.slot_of(r["index"]), []).append(r["index"])
        mixed = gather(
            {
                slot: ctx.pool.actor(slot).gossip_mix.remote(round_no, idx, {i: self.weights[i] for i in idx})
                for slot, idx in live.items()
            },
            deadline,
            ctx.stop,
        )
        count = sum(m["count"] for m in mixed.results.values())
        require_quorum(count, ctx.spec, round_no, len(sampled))
        total = sum(m["sum"] for m in mixed.results.values())
        square_norms = sum(m["square_norms"] for m in mixed.results.values())
        mean = np.asarray(total, dtype=np.float64) / count
        # mean_i ||x_i - mean||^2 = mean_i ||x_i||^2 - ||mean||^2
        consensus = math.sqrt(max(0.0, square_norms / count - float(mean @ mean)))
        ctx.params = mean.astype(np.float32)
        # A node that joins late or comes back from a crash starts from where the federation is now.
        self.start_ref = [ray.put(ctx.params)]
        mixed_nodes = {i for s in mixed.results for i in live[s]}
        failed = self.nodes_of(trained.failed | mixed.failed, by_slot) - mixed_nodes
        return RoundOutcome(
            params=ctx.params,
            results=[r for r in results if r["index"] in mixed_nodes],
            straggling=set(sampled) - mixed_nodes - failed,
            failed=failed,
            extra={"consensus_distance": consensus},
        )
