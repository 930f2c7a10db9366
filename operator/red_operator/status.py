"""Status logic: what KubeRay reports about the RayCluster and RayJob, turned into the Federation's status.

A pure function, so every phase and condition is unit-tested on plain dicts. It computes only the fields
the operator owns (OPERATOR_FIELDS); the driver's fields (round, metrics, nodes, ...) are never touched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PENDING, QUEUED, PROVISIONING, RUNNING = "Pending", "Queued", "Provisioning", "Running"
SUCCEEDED, FAILED, SUSPENDED = "Succeeded", "Failed", "Suspended"
PHASES = (PENDING, QUEUED, PROVISIONING, RUNNING, SUCCEEDED, FAILED, SUSPENDED)

OPERATOR_FIELDS = (
    "observedGeneration",
    "phase",
    "conditions",
    "rayClusterName",
    "rayJobName",
    "dashboardURL",
    "attempts",
    "reason",
    "serveURL",
)
CONDITION_TYPES = (
    "Ready",
    "StorageReady",
    "ClusterProvisioned",
    "JobRunning",
    "NodesHealthy",
    "Succeeded",
    "Failed",
    "Stalled",
    "Serving",
    "Queued",
)
# KubeRay's RayJob status.jobDeploymentStatus values that end a RayJob.
FAILED_DEPLOYMENTS = ("Failed", "ValidationFailed")
MAX_MESSAGE = 1000
MAX_REASON = 128
# A RayJob may report success a moment before the driver's last status patch lands; past this grace the
# Federation succeeds without it (the driver's sink flushes for 60 s, so the report is lost, not late).
REPORT_GRACE_S = 90.0


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class QueueWait:
    """A queued Federation whose RayCluster Kueue holds suspended: not admitted yet, or evicted."""

    queue: str  # the LocalQueue
    workload: str  # Kueue's Workload for the RayCluster, "" until Kueue has made it
    reason: str  # Queued (not admitted yet) or Kueue's eviction reason (Preempted, ...)
    message: str  # why it waits, in Kueue's words


@dataclass(frozen=True)
class Observed:
    """What reconcile saw (and did) this pass; the inputs of the status function besides the Federation."""

    cluster: Mapping[str, Any] | None = None
    job: Mapping[str, Any] | None = None
    cluster_name: str = ""
    job_name: str = ""
    attempts: int = 0
    invalid: str = ""
    suspended: bool = False
    cluster_released: bool = False
    conflicts: tuple[str, ...] | list[str] = ()
    storage_problem: str = ""  # what the Federation's storage lacks before a RayCluster may start
    serve_url: str = ""  # the Serve endpoint of the Federation's RayService, "" while none serves
    service: Mapping[str, Any] | None = None  # that RayService, as KubeRay reports it
    queue: str = ""  # the LocalQueue of a queued Federation
    waiting: QueueWait | None = None  # while Kueue holds its RayCluster
    error: str = ""  # what stopped this pass (an exception reconciling this Federation), "" if nothing


@dataclass(frozen=True)
class Outcome:
    phase: str
    reason: str
    message: str


def job_outcome(job: Mapping[str, Any] | None) -> Outcome | None:
    """Succeeded or Failed once KubeRay says the RayJob ended; None while it has not.

    jobDeploymentStatus and reason decide first (they cover submitter failures, deadlines and validation,
    where the Ray job itself may never have run); jobStatus only tells a Complete RayJob's result.
    """
    if not job:
        return None
    status = job.get("status") or {}
    deployment = status.get("jobDeploymentStatus") or ""
    reason = status.get("reason") or ""
    message = status.get("message") or ""
    job_status = status.get("jobStatus") or ""
    if deployment in FAILED_DEPLOYMENTS:
        return Outcome(FAILED, reason or deployment, message or f"RayJob {deployment}")
    if deployment == "Complete":
        if job_status in ("FAILED", "STOPPED"):
            return Outcome(FAILED, reason or f"Job{job_status.title()}", message or f"Ray job {job_status}")
        return Outcome(SUCCEEDED, "Completed", message or "Ray job SUCCEEDED")
    return None


def cluster_ready(cluster: Mapping[str, Any] | None) -> bool:
    if not cluster or (cluster.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = cluster.get("status") or {}
    if status.get("state") == "ready":
        return True
    return any(
        c.get("type") == "RayClusterProvisioned" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _seconds_between(start: str, end: str) -> float:
    def parse(t: str) -> dt.datetime:  # Python 3.10's fromisoformat does not read "Z"
        return dt.datetime.fromisoformat(t.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds()


def driver_report(previous: Mapping[str, Any], job_name: str) -> Mapping[str, Any]:
    """The driver's fields, if the driver that wrote them is the current RayJob's (its reports carry its
    RayJob's name; an untagged report, from a driver of an older release, counts as current)."""
    tag = previous.get("driverRayJob")
    return previous if not tag or tag == job_name else {}


def _with_driver_report(outcome: Outcome, obs: Observed, previous: Mapping[str, Any], now: str) -> Outcome:
    """Join KubeRay's verdict with the driver's own report (its fields in the same status).

    Success needs the driver's final report (completionTime), so `kubectl get fed` never shows Succeeded
    next to a stale ROUND. A failure leads with the driver's error, which says what went wrong in training;
    KubeRay's message (the entrypoint's exit code and log tail) follows. A superseded attempt's report
    (its completionTime, its driverError) says nothing about this one.
    """
    previous = driver_report(previous, obs.job_name)
    if outcome.phase == SUCCEEDED and not previous.get("completionTime"):
        ended = ((obs.job or {}).get("status") or {}).get("endTime")
        if _seconds_between(ended or now, now) < REPORT_GRACE_S:
            return Outcome(
                RUNNING, "AwaitingDriverReport", f"RayJob {obs.job_name} succeeded; awaiting the driver's final report"
            )
        return Outcome(SUCCEEDED, outcome.reason, f"{outcome.message} (the driver's final report never arrived)")
    stopped = previous.get("driverStopped")
    if outcome.phase == FAILED and stopped:  # a stop by signal is no failure of training: say what it kept
        return Outcome(FAILED, "StoppedBySignal", f"{stopped} | {outcome.message}")
    error = previous.get("driverError")
    if outcome.phase == FAILED and error and error not in outcome.message:
        return Outcome(FAILED, outcome.reason, f"{error} | {outcome.message}")
    return outcome


def _phase(obs: Observed, previous: Mapping[str, Any], now: str) -> Outcome:
    if obs.error:
        return Outcome(FAILED, "ReconcileError", f"{obs.error} (retried when the spec or a child changes)")
    if obs.invalid:
        return Outcome(FAILED, "InvalidSpec", f"{obs.invalid} (no RayJob or RayCluster runs until the spec is fixed)")
    if obs.suspended:
        return Outcome(SUSPENDED, "Suspended", "spec.suspend is true: RayJob and RayCluster removed")
    if obs.waiting:
        return Outcome(QUEUED, obs.waiting.reason, queued_message(obs.waiting, previous))
    outcome = job_outcome(obs.job)
    if outcome:
        return _with_driver_report(outcome, obs, previous, now)
    if obs.storage_problem:
        return Outcome(PENDING, "StorageUnavailable", f"{obs.storage_problem} (the RayCluster starts once it exists)")
    deployment = ((obs.job or {}).get("status") or {}).get("jobDeploymentStatus") or ""
    if obs.job and deployment == "Running":
        return Outcome(RUNNING, "JobRunning", f"RayJob {obs.job_name} is running")
    if cluster_ready(obs.cluster):
        if obs.job:
            return Outcome(PROVISIONING, "JobInitializing", f"RayJob {obs.job_name} is {deployment or 'new'}")
        return Outcome(PROVISIONING, "CreatingJob", f"RayCluster {obs.cluster_name} is ready")
    if obs.cluster:
        state = (obs.cluster.get("status") or {}).get("state") or "new"
        return Outcome(PROVISIONING, "ClusterProvisioning", f"RayCluster {obs.cluster_name} is {state}")
    return Outcome(PENDING, "CreatingCluster", f"creating RayCluster {obs.cluster_name}")


def queued_message(wait: QueueWait, previous: Mapping[str, Any]) -> str:
    """Where it waits and why; after a preemption, also what it keeps (the next attempt resumes there)."""
    workload = f"Workload {wait.workload}" if wait.workload else "no Workload yet"
    kept = (previous.get("lastCheckpoint") or {}).get("round") if wait.reason != "Queued" else None
    resumes = f"; resumes after round {kept}" if kept else ""
    return f"waiting in LocalQueue {wait.queue} ({workload}): {wait.message}{resumes}"


def _queued(obs: Observed, outcome: Outcome) -> tuple[str, str, str, str] | None:
    """The Queued condition of a queued Federation: True while Kueue holds it, False once admitted."""
    if obs.waiting:
        return ("Queued", "True", outcome.reason, outcome.message)
    if obs.queue and not obs.invalid and not obs.suspended:
        return ("Queued", "False", "Admitted", f"admitted by Kueue from LocalQueue {obs.queue}")
    return None


def _nodes_healthy(previous: Mapping[str, Any]) -> tuple[str, str, str] | None:
    ready = previous.get("nodesReady")
    if not isinstance(ready, str) or "/" not in ready:
        return None
    healthy, _, total = ready.partition("/")
    if not (healthy.isdigit() and total.isdigit()):
        return None
    if int(total) and healthy == total:
        return "True", "AllNodesHealthy", f"{ready} nodes healthy"
    return "False", "NodesUnhealthy", f"{ready} nodes healthy"


def _conditions(outcome: Outcome, obs: Observed, previous: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    phase = outcome.phase
    ready = phase in (RUNNING, SUCCEEDED)
    if obs.conflicts:
        conditions = [("Ready", "False", "Conflict", "; ".join(obs.conflicts))]
    else:
        conditions = [("Ready", "True" if ready else "False", outcome.reason, outcome.message)]
    if obs.storage_problem:
        conditions.append(("StorageReady", "False", "StorageUnavailable", obs.storage_problem))
    elif not obs.invalid and not obs.suspended:
        conditions.append(("StorageReady", "True", "StorageAvailable", "the Federation's storage is in place"))
    if obs.invalid:
        released = f"RayCluster {obs.cluster_name} deleted: the spec is invalid (storage is kept)"
        conditions.append(("ClusterProvisioned", "False", "InvalidSpec", released))
    elif cluster_ready(obs.cluster):
        conditions.append(("ClusterProvisioned", "True", "RayClusterReady", f"RayCluster {obs.cluster_name} is ready"))
    elif obs.suspended:
        conditions.append(("ClusterProvisioned", "False", "Suspended", "RayCluster removed while suspended"))
    elif obs.waiting:
        held = f"RayCluster {obs.cluster_name} is suspended until Kueue admits it"
        conditions.append(("ClusterProvisioned", "False", "Queued", held))
    elif obs.cluster_released:
        conditions.append(("ClusterProvisioned", "False", "ClusterReleased", "RayCluster removed: the job finished"))
    else:
        conditions.append(("ClusterProvisioned", "False", "Provisioning", f"RayCluster {obs.cluster_name} not ready"))
    running = phase == RUNNING
    if obs.invalid:
        stopped = f"RayJob {obs.job_name} stopped" if obs.job_name else "no RayJob runs"
        conditions.append(("JobRunning", "False", "InvalidSpec", f"{stopped}: the spec is invalid"))
    else:
        conditions.append(("JobRunning", "True" if running else "False", outcome.reason, outcome.message))
    nodes = _nodes_healthy(previous)
    if nodes:
        conditions.append(("NodesHealthy", *nodes))
    conditions.append(("Succeeded", "True" if phase == SUCCEEDED else "False", outcome.reason, outcome.message))
    conditions.append(("Failed", "True" if phase == FAILED else "False", outcome.reason, outcome.message))
    # kstatus (Flux) calls a resource Failed only through Stalled=True: a failed Federation makes no more
    # progress until its spec changes.
    conditions.append(("Stalled", "True" if phase == FAILED else "False", outcome.reason, outcome.message))
    if obs.serve_url:
        conditions.append(("Serving", *_serving(obs.service)))
    queued = _queued(obs, outcome)
    if queued:
        conditions.append(queued)
    return conditions


def _serving(service: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """Whether the RayService answers, as KubeRay's Ready condition says (Serve endpoints behind its Service)."""
    name = ((service or {}).get("metadata") or {}).get("name") or "the RayService"
    ready = next(
        (c for c in ((service or {}).get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    if ready.get("status") == "True":
        return "True", ready.get("reason") or "Ready", f"RayService {name}: {ready.get('message') or 'ready'}"
    why = ready.get("message") or "waiting for KubeRay to start it"
    return "False", ready.get("reason") or "Deploying", f"RayService {name} is not serving yet: {why}"


def compute_status(
    body: Mapping[str, Any], obs: Observed, now: str | None = None, dashboard_url: str | None = None
) -> dict[str, Any]:
    """The operator's status fields for this Federation; a condition keeps its lastTransitionTime until its
    status flips, as Kubernetes API conventions ask."""
    now = now or now_iso()
    previous = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation") or 0
    outcome = _phase(obs, previous, now)
    old = {c.get("type"): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    conditions = []
    for ctype, cstatus, reason, message in _conditions(outcome, obs, previous):
        before = old.get(ctype) or {}
        kept = before.get("lastTransitionTime") if before.get("status") == cstatus else None
        conditions.append(
            {
                "type": ctype,
                "status": cstatus,
                "reason": reason[:MAX_REASON],
                "message": message[:MAX_MESSAGE],
                "lastTransitionTime": kept or now,
                "observedGeneration": generation,
            }
        )
    job_status = (obs.job or {}).get("status") or {}
    url = dashboard_url or job_status.get("dashboardURL") or previous.get("dashboardURL") or ""
    if obs.suspended or obs.invalid:
        url = ""
    return {
        "observedGeneration": generation,
        "phase": outcome.phase,
        "reason": "Conflict" if obs.conflicts else outcome.reason[:MAX_REASON],
        "conditions": conditions,
        "rayClusterName": obs.cluster_name,
        "rayJobName": obs.job_name,
        "dashboardURL": url,
        "attempts": obs.attempts,
        "serveURL": obs.serve_url,
    }


def changed_fields(previous: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Only the operator's fields that differ: an unchanged reconcile sends no patch at all."""
    return {k: v for k, v in new.items() if k in OPERATOR_FIELDS and previous.get(k) != v}
