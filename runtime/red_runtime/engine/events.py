"""What a run tells the world: round reports and node states, fanned out to sinks.

The driver calls one `Reporter`; sinks decide where it goes (the console, files, and in a cluster
the Federation's status). A sink that fails is logged and skipped: reporting never stops training.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

HEALTHY, PENDING, STRAGGLING, RESTARTING, FAILED = "Healthy", "Pending", "Straggling", "Restarting", "Failed"
NODE_STATES = (HEALTHY, PENDING, STRAGGLING, RESTARTING, FAILED)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class NodeStatus:
    id: str
    state: str = PENDING
    restarts: int = 0
    lastRound: int = 0
    bundle: int = 0
    gpu: float = 0.0
    lastSeen: str | None = None
    attack: str | None = None  # a simulated attacker's attack (spec.nodes.adversaries); None for honest nodes

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> NodeStatus:
        return NodeStatus(**data)


@dataclass
class RoundReport:
    round: int
    rounds: int
    loss: float
    accuracy: float
    nodes_healthy: int
    nodes_total: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    # Each node's train loss this round, by node id, for TensorBoard's histogram; empty under differential
    # privacy, where a node's own loss is raw, unnoised information about its data. Not in as_dict: that row
    # goes to metrics.jsonl, the checkpoint's history and the summary, which must not grow with nodes.count.
    node_losses: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("metrics", "node_losses")}
        out.update(self.metrics)
        return out


@dataclass
class RunInfo:
    name: str
    namespace: str
    rounds: int
    nodes: int
    slots: int
    topology: str
    algorithm: str
    startup_seconds: float = 0.0
    resumed_from: int = 0


@dataclass
class Summary:
    name: str
    rounds_run: int
    final_accuracy: float
    final_loss: float
    seconds_per_round: float
    nodes: int
    slots: int
    startup_seconds: float
    stopped_early: bool = False
    actors_started: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    # Wall-clock seconds by phase (phases.NAMES) and `total`, the process's age when the summary was written.
    phases: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "history"}


class Sink:
    """Override what you need; each hook receives the run's latest state."""

    def started(self, info: RunInfo, nodes: list[NodeStatus]) -> None: ...

    def round_done(self, report: RoundReport, nodes: list[NodeStatus]) -> None: ...

    def nodes_changed(self, nodes: list[NodeStatus]) -> None: ...

    def checkpointed(self, round_no: int, path: str) -> None: ...

    def finished(self, summary: Summary, params: Any, model: Any) -> None: ...

    def failed(self, reason: str) -> None: ...

    def stopped(self, reason: str) -> None:
        """A signal stopped the run in order (a checkpoint may let a later attempt continue)."""

    def close(self) -> None: ...


class Reporter:
    """Calls every sink, isolating their failures from the run."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks

    def _each(self, hook: str, *args: Any) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, hook)(*args)
            except Exception:  # a broken sink must not stop a federation
                log.exception("reporting sink %s failed in %s", type(sink).__name__, hook)

    def started(self, info: RunInfo, nodes: list[NodeStatus]) -> None:
        self._each("started", info, nodes)

    def round_done(self, report: RoundReport, nodes: list[NodeStatus]) -> None:
        self._each("round_done", report, nodes)

    def nodes_changed(self, nodes: list[NodeStatus]) -> None:
        self._each("nodes_changed", nodes)

    def checkpointed(self, round_no: int, path: str) -> None:
        self._each("checkpointed", round_no, path)

    def finished(self, summary: Summary, params: Any, model: Any) -> None:
        self._each("finished", summary, params, model)

    def failed(self, reason: str) -> None:
        self._each("failed", reason)

    def stopped(self, reason: str) -> None:
        self._each("stopped", reason)

    def close(self) -> None:
        self._each("close")
