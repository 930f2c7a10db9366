"""The Federation's status, declared: what the operator and the driver may write, every field bounded.

The API server refuses a status patch beyond these bounds, so a driver (whose token may patch its own
Federation's status) cannot grow the object that the operator keeps in memory and kopf copies on every event.
The operator also cuts what it repeats of the driver's words (`clamp`) to MAX_MESSAGE.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from red_api.kinds import ABSENT, Declared, Int, ListOf, MapOf, Num, Obj, Str, Word, api

PHASES = ("Pending", "Queued", "Provisioning", "Running", "Succeeded", "Failed", "Suspended")
# metav1.Condition's bound on a message; the driver's error and stop notes are cut to the same.
MAX_MESSAGE = 32_768
# At about 110 bytes an entry, the status stays far below etcd's 1.5 MiB object limit with this many listed.
MAX_LISTED_NODES = 100
MAX_METRICS = 64


def clamp(text: Any, limit: int = MAX_MESSAGE) -> str:
    """Text to repeat in status, cut to `limit` characters with a note of what was cut."""
    text = str(text)
    if len(text) <= limit:
        return text
    keep = limit - 40  # room for the note
    return f"{text[:keep]}... ({len(text) - keep} more characters)"


def _text(doc: str = "", max_length: int = 1024, **kw: Any) -> Any:
    return api(Str(ABSENT, max_length=max_length, doc=doc, **kw))


def _count(doc: str = "") -> Any:
    return api(Int(ABSENT, minimum=0, maximum=2**31 - 1, doc=doc))


def _time(doc: str = "") -> Any:
    return api(Str(ABSENT, max_length=64, format="date-time", doc=doc))


@dataclass(frozen=True)
class Condition(Declared):
    type: str = _text(max_length=64)
    status: str = api(Word(ABSENT, choices=("True", "False", "Unknown")))
    reason: str = _text(max_length=1024)
    message: str = _text(max_length=MAX_MESSAGE)
    lastTransitionTime: str = _time()
    observedGeneration: int = api(Int(ABSENT, minimum=0))


@dataclass(frozen=True)
class NodeEntry(Declared):
    id: str = _text(max_length=64)
    state: str = _text(max_length=32)
    restarts: int = _count()
    lastRound: int = _count()
    bundle: int = _count()
    gpu: float = api(Num(ABSENT, minimum=0, maximum=64))
    lastSeen: str = _text(max_length=64)
    attack: str = _text("a simulated attacker's attack (spec.nodes.adversaries).", max_length=32)


@dataclass(frozen=True)
class PrivacySpent(Declared):
    epsilon: float | None = api(Num(ABSENT, minimum=0, maximum=1e300, nullable=True))
    delta: float = api(Num(ABSENT, minimum=0, maximum=1))
    accountant: str = _text(max_length=64)
    sampling: str = _text(max_length=64)


@dataclass(frozen=True)
class AdversariesSeen(Declared):
    attack: str = _text(max_length=32)
    count: int = _count()
    nodes: tuple[str, ...] = api(ListOf(Str(max_length=64), max_items=MAX_LISTED_NODES, default=ABSENT))


@dataclass(frozen=True)
class Artifacts(Declared):
    model: str = _text(max_length=2048)
    metrics: str = _text(max_length=2048)
    checkpoint: str = _text(max_length=2048)


@dataclass(frozen=True)
class LastCheckpoint(Declared):
    round: int = _count()
    path: str = _text(max_length=2048)


@dataclass(frozen=True)
class Trials(Declared):
    total: int = _count()
    running: int = _count()
    done: int = _count()
    stopped: int = _count("stopped early by the scheduler (ASHA).")
    failed: int = _count()


@dataclass(frozen=True)
class Best(Declared):
    trial: str = _text(max_length=253)
    config: Mapping[str, str] = api(MapOf(value=Str(max_length=1024), max_properties=32, max_key_length=253))
    accuracy: float = api(Num(ABSENT, minimum=0, maximum=1))


@dataclass(frozen=True)
class Status(Declared):
    observedGeneration: int = api(Int(ABSENT, minimum=0))
    phase: str = api(Word(ABSENT, choices=PHASES))
    reason: str = _text(max_length=1024)
    attempts: int = _count("RayJobs started for the current spec (1 + retries so far).")
    conditions: tuple = api(
        ListOf(
            Obj(Condition, required=("type", "status")),
            max_items=16,
            default=ABSENT,
            list_type="map",
            map_keys=("type",),
        )
    )
    rayClusterName: str = _text(max_length=253)
    rayJobName: str = _text(max_length=253)
    dashboardURL: str = _text(max_length=2048)
    serveURL: str = _text("the RayService's Ray Serve endpoint, while spec.serve serves the model.", 2048)
    round: int = _count()
    rounds: int = _count()
    progress: str = _text(max_length=64)
    nodesReady: str = _text("healthy/total nodes.", max_length=64)
    nodeCounts: Mapping[str, int] = api(
        MapOf(
            value=Int(minimum=0, maximum=2**31 - 1),
            max_properties=16,
            max_key_length=32,
            doc="how many nodes are in each state (Healthy, Pending, Straggling, Restarting, Failed).",
        )
    )
    nodeRestarts: int = _count("node actor restarts so far, all nodes and driver attempts together.")
    nodesUnlisted: int = _count(
        "nodes that are not Healthy but left out of `nodes` (the run folder's nodes.json lists all)."
    )
    metrics: Mapping[str, float] = api(
        MapOf(
            value=Num(maximum=1e300, minimum=-1e300),
            max_properties=MAX_METRICS,
            max_key_length=64,
            doc="loss, accuracy and any strategy's extra metrics of the last round.",
        )
    )
    privacy: PrivacySpent | None = api(
        Obj(
            PrivacySpent,
            default=None,
            doc="the differential privacy spent so far, for runs with spec.algorithm.privacy.",
        )
    )
    nodes: tuple = api(
        ListOf(
            Obj(NodeEntry),
            max_items=MAX_LISTED_NODES,
            default=ABSENT,
            doc=f"the nodes that are not Healthy (at most {MAX_LISTED_NODES}); nodeCounts counts every node.",
        )
    )
    adversaries: AdversariesSeen | None = api(
        Obj(
            AdversariesSeen,
            default=None,
            doc=f"the simulated attackers (spec.nodes.adversaries), the first {MAX_LISTED_NODES} of them listed.",
        )
    )
    artifacts: Artifacts | None = api(
        Obj(Artifacts, default=None, doc="where the run's outputs are (pvc://claim/path or s3://bucket/prefix/...).")
    )
    lastCheckpoint: LastCheckpoint | None = api(Obj(LastCheckpoint, default=None))
    resumedFrom: int = _count(
        "rounds done before this attempt (from the checkpoint it resumed after); round minus resumedFrom were done "
        "by it."
    )
    startTime: str = _time()
    completionTime: str = _time()
    driverError: str = _text(max_length=MAX_MESSAGE)
    driverStopped: str = _text(
        "the driver stopped in order on SIGTERM or SIGINT (what it kept), not by an error.", max_length=MAX_MESSAGE
    )
    driverRayJob: str = _text(
        "the RayJob whose driver wrote round, metrics, nodes and the other driver fields.", max_length=253
    )
    trials: Trials | None = api(Obj(Trials, default=None, doc="a sweep's trials (spec.sweep)."))
    best: Best | None = api(
        Obj(Best, default=None, doc="a sweep's best finished trial so far; its model is the run folder's model.pt.")
    )


STATUS = Obj(
    Status,
    default=None,
    doc="The operator writes phase, conditions and names; the driver writes progress and metrics.",
)
