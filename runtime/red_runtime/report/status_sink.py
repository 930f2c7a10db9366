"""Reports round progress and node health into the Federation's status subresource.

Training never waits on the API server: hooks only record the latest state and wake a sender
thread, which coalesces bursts (at most one patch per `min_interval_s`), retries with capped
exponential backoff while the API server is slow or away, and always sends the newest state.
The driver owns round, rounds, progress, nodesReady, metrics, nodes, lastCheckpoint, startTime and
completionTime; it never writes the operator's fields (phase, conditions, names).

Every body is strict JSON (non-finite numbers become null), since the API server refuses NaN and a refused
body would be resent forever. Each carries the name of the driver's RayJob (driverRayJob), so that a
superseded attempt's late report neither lands on nor speaks for the current one. The node list is bounded
whatever the federation's size: counts for all nodes, entries only for those that are not Healthy.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from red_api.names import artifact_uris
from red_api.status import MAX_LISTED_NODES, clamp
from red_runtime import strict_json
from red_runtime.engine.events import HEALTHY, NODE_STATES, NodeStatus, RoundReport, RunInfo, Sink, Summary, now_iso
from red_runtime.learn import privacy
from red_runtime.report.kube import Superseded, driver_rayjob

log = logging.getLogger("red.status")
DRIVER_FIELDS = (
    "round",
    "rounds",
    "progress",
    "nodesReady",
    "nodeCounts",
    "nodeRestarts",
    "nodesUnlisted",
    "metrics",
    "privacy",
    "adversaries",
    "nodes",
    "lastCheckpoint",
    "resumedFrom",
    "artifacts",
    "startTime",
    "completionTime",
    "driverError",
    "driverStopped",
    "driverRayJob",
    "trials",
    "best",
)


def nodes_ready(nodes: list[NodeStatus]) -> str:
    return f"{sum(n.state == HEALTHY for n in nodes)}/{len(nodes)}"


def node_fields(nodes: list[NodeStatus], limit: int = MAX_LISTED_NODES) -> dict[str, Any]:
    """nodesReady (healthy/total), a count per state, and entries for the first `limit` nodes that are not
    Healthy; the run folder's nodes.json holds every node."""
    unwell = [n for n in nodes if n.state != HEALTHY]
    counts = collections.Counter(n.state for n in nodes)
    return {
        "nodesReady": nodes_ready(nodes),
        # Every state, zeros too: a JSON merge patch merges maps, so a state left out would keep its old count.
        "nodeCounts": {state: counts[state] for state in NODE_STATES},
        # Restarted nodes are Healthy again and so unlisted: the total says the federation lived through them.
        "nodeRestarts": sum(n.restarts for n in nodes),
        "nodes": [n.as_dict() for n in unwell[:limit]],
        "nodesUnlisted": max(0, len(unwell) - limit),
    }


def adversary_fields(nodes: list[NodeStatus], limit: int = MAX_LISTED_NODES) -> dict[str, Any] | None:
    """The simulated attackers (spec.nodes.adversaries): their attack, count and the first `limit` ids;
    None when the run has none."""
    attackers = [n for n in nodes if n.attack]
    if not attackers:
        return None
    return {"attack": attackers[0].attack, "count": len(attackers), "nodes": [n.id for n in attackers[:limit]]}


class StatusSink(Sink):
    def __init__(
        self,
        patch: Callable[[dict[str, Any]], None],
        min_interval_s: float = 0.3,
        max_backoff_s: float = 5.0,
        final_flush_s: float = 60.0,
        rayjob: str | None = None,
        artifacts: str | None = None,
        checkpoints: str = "",
    ):
        self._patch = patch
        self.artifacts = artifact_uris(artifacts, checkpoints) if artifacts else None
        self.rayjob = driver_rayjob() if rayjob is None else rayjob
        self.superseded = False
        self.min_interval_s = min_interval_s
        self.max_backoff_s = max_backoff_s
        self.final_flush_s = final_flush_s
        self._state: dict[str, Any] = {}
        self._version = 0
        self._sent_version = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._closed = threading.Event()
        self.patches_sent = 0
        self._thread = threading.Thread(target=self._loop, name="red-status", daemon=True)
        self._thread.start()

    def update(self, **fields: Any) -> None:
        """Record fields as strict JSON: a value that cannot be sent raises here, in the hook, not forever
        in the sender. Reporters other than the driver's rounds (a sweep's trials) use it too."""
        fields = json.loads(strict_json.dumps(fields))
        if self.rayjob:
            fields["driverRayJob"] = self.rayjob
        with self._wake:
            self._state.update(fields)
            self._version += 1
            self._wake.notify()

    def started(self, info: RunInfo, nodes: list[NodeStatus]) -> None:
        self.update(
            round=info.resumed_from,
            rounds=info.rounds,
            progress=f"{info.resumed_from}/{info.rounds}",
            resumedFrom=info.resumed_from,
            **node_fields(nodes),
            adversaries=adversary_fields(nodes),
            startTime=now_iso(),
            completionTime=None,
            driverError=None,
            driverStopped=None,
            # The model appears at the end: until then it is null (a merge patch removes nothing else).
            **({"artifacts": {**self.artifacts, "model": None}} if self.artifacts else {}),
        )

    def round_done(self, report: RoundReport, nodes: list[NodeStatus]) -> None:
        metrics = {"loss": round(report.loss, 6), "accuracy": round(report.accuracy, 6)}
        spent = privacy.report(report.metrics)
        # A delta such as 1e-7 rounds to 0: it is stated, unrounded, in status.privacy.
        metrics.update({k: round(v, 6) for k, v in report.metrics.items() if k != "delta"})
        self.update(
            round=report.round,
            rounds=report.rounds,
            progress=f"{report.round}/{report.rounds}",
            metrics=metrics,
            **({"privacy": spent} if spent else {}),
            **node_fields(nodes),
        )

    def nodes_changed(self, nodes: list[NodeStatus]) -> None:
        self.update(**node_fields(nodes))

    def checkpointed(self, round_no: int, path: str) -> None:
        self.update(lastCheckpoint={"round": round_no, "path": path})

    def finished(self, summary: Summary, params: Any, model: Any) -> None:
        self.update(completionTime=now_iso(), **({"artifacts": self.artifacts} if self.artifacts else {}))

    def failed(self, reason: str) -> None:
        self.update(completionTime=now_iso(), driverError=clamp(reason, 1000))

    def stopped(self, reason: str) -> None:
        # Not an error: the operator says StoppedBySignal, and a later attempt resumes from the checkpoint.
        self.update(completionTime=now_iso(), driverStopped=clamp(reason, 1000))

    def close(self) -> None:
        """Send what is pending, waiting up to `final_flush_s` for the API server to come back."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._closed.set()
        self._thread.join(self.final_flush_s)

    def _loop(self) -> None:
        backoff = self.min_interval_s
        last_sent = 0.0
        while True:
            with self._wake:
                while self._sent_version == self._version and not self._closing:
                    self._wake.wait()
                if self._sent_version == self._version and self._closing:
                    return
                version, body = self._version, dict(self._state)
            pause = self.min_interval_s - (time.monotonic() - last_sent)
            if pause > 0 and not self._closing:
                time.sleep(pause)  # coalesce: later updates in this window ride in the same patch
                with self._lock:
                    version, body = self._version, dict(self._state)
            try:
                self._patch(body)
            except Superseded as err:
                # The status names another RayJob: a newer attempt's (then this driver is about to be stopped)
                # or, for a moment, the previous one's. Try again rarely; at close, give up at once.
                if not self.superseded:
                    log.warning("status reports held back: %s", err)
                self.superseded = True
                if self._closing or self._closed.wait(self.max_backoff_s):
                    return
                continue
            except Exception as err:  # the API server is slow, away or refusing: keep training, retry
                log.warning("status patch failed (retrying in %.1fs): %s", backoff, err)
                time.sleep(backoff)
                backoff = min(self.max_backoff_s, backoff * 2)
                continue
            backoff = self.min_interval_s
            self.superseded = False
            last_sent = time.monotonic()
            with self._lock:
                self._sent_version = version
                self.patches_sent += 1
