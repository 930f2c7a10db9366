"""The schema interface: who trains, who aggregates and who sends to whom in one round."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from red_api.spec import FederationSpec
from red_runtime.engine.messages import delivered
from red_runtime.engine.pool import NodePool
from red_runtime.engine.stopping import RoundAbandoned, StopRequest
from red_runtime.learn.privacy import noise_generator, noisy_mean
from red_runtime.learn.strategies import Strategy, Update


class QuorumError(RuntimeError):
    """Fewer updates arrived than `algorithm.minNodes` requires."""


@dataclass
class Context:
    spec: FederationSpec
    pool: NodePool
    manager: Any
    graph: nx.Graph
    strategy: Strategy
    params: np.ndarray  # the current global (or average) model
    sizes: dict[str, int]  # training samples per node id
    stop: StopRequest = field(default_factory=StopRequest)


@dataclass
class RoundOutcome:
    params: np.ndarray  # the model this round is judged by: the new global, or the nodes' average
    results: list[dict[str, Any]]  # one per node that reported
    straggling: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Gathered:
    results: dict[int, Any]  # slot -> value returned
    straggling: set[int]  # slots that missed the deadline
    failed: set[int]  # slots whose actor died


class Deadline:
    """One round's deadline, shared by all its phases; node actors get it as wall-clock time."""

    def __init__(self, seconds: float):
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        return self.ends - time.monotonic()

    def wall(self) -> float:
        return time.time() + self.left()


# How often a wait looks at the stop request: a signal's handler only records it.
STOP_POLL_S = 0.25


def gather(calls: dict[int, Any], deadline: Deadline, stop: StopRequest) -> Gathered:
    """Wait for one call per slot until the round deadline; sort them into done, late and dead.

    A stop request shortens the wait to its grace period; a round still running then is abandoned.
    """
    pending = {ref: slot for slot, ref in calls.items()}
    results: dict[int, Any] = {}
    failed: set[int] = set()
    while pending:
        remaining = deadline.left()
        if remaining <= 0:
            break
        if stop.grace_left() <= 0:
            raise RoundAbandoned(f"{len(pending)} node actor call(s) still running after the stop's grace period")
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=min(remaining, STOP_POLL_S))
        for ref in ready:
            slot = pending.pop(ref)
            try:
                results[slot] = ray.get(ref)
            except (RayActorError, GetTimeoutError):
                failed.add(slot)
    return Gathered(results=results, straggling=set(pending.values()), failed=failed)


@dataclass
class Arrived:
    """What reached a receiver by the deadline: the updates, and a result row per node inside them."""

    updates: list[Update]
    results: list[dict[str, Any]]

    @property
    def indices(self) -> set[int]:
        return {r["index"] for r in self.results}


def collect_updates(ctx: Context, round_no: int, receiver: str) -> Arrived:
    """The receiver's inbox; each message carries [update, results of the nodes in it]."""
    inbox = ray.get(ctx.manager.collect.remote(round_no, [receiver]))[receiver]
    messages = delivered([payload[:2] for _, payload in inbox])
    return Arrived(updates=[update for update, _ in messages], results=[r for _, rows in messages for r in rows])


def outcome_of(ctx: Context, sampled: list[int], by_slot: dict[int, list[int]], done: Gathered, arrived: Arrived):
    """Nodes whose update arrived are done, whatever their actor's call did; the rest straggled or died."""
    got = arrived.indices
    failed = {i for s in done.failed for i in by_slot.get(s, [])} - got
    return RoundOutcome(
        params=ctx.params,
        results=arrived.results,
        straggling=set(sampled) - got - failed,
        failed=failed,
    )


def require_quorum(arrived: int, spec: FederationSpec, round_no: int, expected: int) -> None:
    needed = spec.algorithm.minNodes
    if arrived < needed:
        raise QuorumError(
            f"round {round_no}: {arrived} of {expected} node updates arrived, below the quorum "
            f"spec.algorithm.minNodes={needed}"
        )


def server_updates(ctx: Context, round_no: int, updates: list[Any]) -> list[Any]:
    """What the strategy sees: the updates as sent, or under differential privacy one noised mean over
    the expected count of nodes (`fraction * nodes.count`), with noise from OS entropy."""
    algorithm = ctx.spec.algorithm
    if algorithm.privacy is None or not updates:
        return updates
    expected = algorithm.fraction * ctx.spec.nodes.count
    return [noisy_mean(updates, ctx.params, algorithm.privacy, expected, noise_generator())]


class Schema(ABC):
    """One topology's round. Subclasses say how a model flows; the driver does everything else."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    @abstractmethod
    def run_round(self, round_no: int, sampled: list[int]) -> RoundOutcome:
        """Run one round over the `sampled` node indices and return what happened."""

    def resumed(self) -> None:  # noqa: B027 (an optional hook)
        """Optional hook: a checkpoint restored the global model; refresh anything derived from it."""

    def finished(self) -> None:  # noqa: B027 (an optional hook)
        """Optional hook: the last round is done; schemas with work still in flight drop it."""

    def graph_changed(self) -> None:  # noqa: B027 (an optional hook)
        """Optional hook: failed nodes left the graph; schemas that cache neighbours refresh here."""

    def nodes_of(self, slots: set[int], by_slot: dict[int, list[int]]) -> set[int]:
        return {i for s in slots for i in by_slot.get(s, [])}
