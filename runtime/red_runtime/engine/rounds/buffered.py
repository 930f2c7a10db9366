"""Asynchronous star rounds (FedBuff): nodes train continuously and a round is one server step.

Up to `concurrency` node trainings are in flight at once. Whenever one finishes, another idle node
starts on the current global model, on the actor slot with the least work queued, so a slow node holds
up only its own actor's queue. The server steps as soon as `bufferSize` changes have arrived, each
weighed by how many steps old its starting model was. Changes come back as the actor call's value:
every one of them goes node to server, an edge every star has.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from red_runtime.engine.rounds.base import STOP_POLL_S, Deadline, RoundOutcome, Schema, require_quorum
from red_runtime.engine.stopping import RoundAbandoned
from red_runtime.learn.strategies.fedbuff import STALENESS


@dataclass
class Flight:
    index: int
    slot: int
    version: int  # the server step whose model it trains from


class BufferedSchema(Schema):
    def __init__(self, ctx):
        super().__init__(ctx)
        opts = ctx.strategy.opts
        self.concurrency = int(opts["concurrency"])
        self.buffer_size = int(opts["bufferSize"])
        self.flights: dict[Any, Flight] = {}
        self.turns: dict[int, int] = {}
        self.model_ref: tuple[int, Any] | None = None
        self.rng = np.random.default_rng([ctx.spec.task.seed, 0xBF])

    def run_round(self, round_no: int, sampled: list[int]) -> RoundOutcome:
        ctx = self.ctx
        version = round_no - 1  # server steps taken so far
        deadline = Deadline(ctx.spec.faultTolerance.roundTimeoutSeconds)
        limit = min(self.concurrency or len(sampled), len(sampled))
        updates, results, failed = [], [], set()
        self._fill(version, sampled, limit)
        while len(updates) < self.buffer_size and self.flights:
            if deadline.left() <= 0:
                break
            if ctx.stop.grace_left() <= 0:
                running = len(self.flights)
                raise RoundAbandoned(f"{running} node training(s) still running after the stop's grace period")
            ready, _ = ray.wait(list(self.flights), num_returns=1, timeout=min(deadline.left(), STOP_POLL_S))
            for ref in ready:
                flight = self.flights.pop(ref)
                try:
                    update, result = ray.get(ref)
                except (RayActorError, GetTimeoutError):
                    failed.add(flight.index)
                    continue
                update.metrics[STALENESS] = version - flight.version
                updates.append(update)
                results.append(result)
            # Whoever finished starts again at once, on the model as it is now.
            self._fill(version, [i for i in sampled if i not in failed], limit)
        require_quorum(len(updates), ctx.spec, round_no, self.buffer_size)
        ctx.params = ctx.strategy.step(ctx.params, updates)
        staleness = [u.metrics[STALENESS] for u in updates]
        # Still training from a model two or more steps old by now: these nodes lag the federation.
        lagging = {f.index for f in self.flights.values() if f.version < version}
        return RoundOutcome(
            params=ctx.params,
            results=results,
            straggling=lagging,
            failed=failed,
            extra={"staleness_mean": float(np.mean(staleness)), "staleness_max": float(max(staleness))},
        )

    def _fill(self, version: int, sampled: list[int], limit: int) -> None:
        """Start idle nodes until `limit` are in flight, each on the slot with the least queued."""
        pool = self.ctx.pool
        busy = {f.index for f in self.flights.values()}
        idle_by_slot = pool.by_slot([i for i in sampled if i not in busy])
        queued = {slot: 0 for slot in idle_by_slot}
        for f in self.flights.values():
            if f.slot in queued:
                queued[f.slot] += 1
        while len(self.flights) < limit and idle_by_slot:
            slot = min(idle_by_slot, key=lambda s: (queued[s], s))
            nodes = idle_by_slot[slot]
            index = nodes.pop(int(self.rng.integers(len(nodes))))
            if not nodes:
                del idle_by_slot[slot]
            turn = self.turns.get(index, 0)
            self.turns[index] = turn + 1
            ref = pool.actor(slot).train_async.remote(version, turn, index, [self._model(version)])
            self.flights[ref] = Flight(index=index, slot=slot, version=version)
            queued[slot] += 1

    def _model(self, version: int) -> Any:
        """The current global model in the object store, put once per server step."""
        if self.model_ref is None or self.model_ref[0] != version:
            self.model_ref = (version, ray.put(self.ctx.params))
        return self.model_ref[1]

    def resumed(self) -> None:
        self.model_ref = None

    def finished(self) -> None:
        """Trainings still in flight are of no use now: drop the queued ones (Ray lets a running actor
        call finish; it never interrupts one)."""
        for ref in self.flights:
            with contextlib.suppress(Exception):  # a call that already ended cannot be cancelled
                ray.cancel(ref)
        self.flights.clear()
