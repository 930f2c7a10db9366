"""The one idempotent reconcile: make a Federation's children match its spec, then say what KubeRay reports.

Level-triggered: it reads the world each time and acts on the difference, so create, resume, update, the
periodic timer and a RayJob's status change all call the same function, and a missed event heals on the next
tick. Children have deterministic names, so a second pass (or a restarted operator) finds them instead of
duplicating them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from red_operator import builders
from red_operator.builders import LABEL_ATTEMPT, LABEL_CLUSTER_HASH, LABEL_FEDERATION, LABEL_GENERATION, LABEL_SPEC_HASH
from red_operator.kube import Rest
from red_operator.status import FAILED, Observed, compute_status, job_outcome
from red_runtime.spec import Federation, SpecError, parse_manifest

log = logging.getLogger("red.operator")


@dataclass
class Result:
    """The operator's status fields, plus what this pass did (for logs and metrics)."""

    status: dict[str, Any]
    invalid: str = ""
    actions: list[str] = field(default_factory=list)


def _int_label(obj: Mapping[str, Any], key: str) -> int:
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(key, "0")
    return int(value) if str(value).isdigit() else 0


def _label(obj: Mapping[str, Any] | None, key: str) -> str:
    return str(((obj or {}).get("metadata") or {}).get("labels", {}).get(key, ""))


def _terminating(obj: Mapping[str, Any] | None) -> bool:
    return bool(obj and (obj.get("metadata") or {}).get("deletionTimestamp"))


def _ensure_rbac(rest: Rest, fed: Federation, actions: list[str]) -> None:
    """The driver's ServiceAccount, Role and RoleBinding; rules and subjects drifted by hand are put back."""
    for desired in builders.build_rbac(fed):
        kind, name = desired["kind"], desired["metadata"]["name"]
        current = rest.get(kind, fed.namespace, name)
        if current is None or _terminating(current):
            if current is None and rest.create(desired) is not None:
                actions.append(f"created {kind} {name}")
            continue
        drift = {k: desired[k] for k in ("rules", "subjects") if k in desired and current.get(k) != desired[k]}
        if drift:
            rest.patch(kind, fed.namespace, name, drift)
            actions.append(f"restored {kind} {name}")


def reconcile(body: Mapping[str, Any], rest: Rest) -> Result | None:
    """Drive the children toward the spec; None when `body` is older than the children (a stale event)."""
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name") or ""
    generation = int(meta.get("generation") or 0)
    actions: list[str] = []
    try:
        fed = parse_manifest({**body, "metadata": {**meta, "namespace": namespace}})
    except SpecError as err:
        invalid = "; ".join(err.problems)
        obs = Observed(cluster_name=builders.raycluster_name(name), invalid=invalid)
        return Result(compute_status(body, obs), invalid=invalid)

    jobs = rest.list("RayJob", namespace, f"{LABEL_FEDERATION}={name}")
    if any(_int_label(j, LABEL_GENERATION) > generation for j in jobs):
        return None
    _ensure_rbac(rest, fed, actions)
    cluster_name = builders.raycluster_name(fed.name)
    cluster = rest.get("RayCluster", namespace, cluster_name)

    if fed.spec.suspend:
        for job in jobs:
            if not _terminating(job) and rest.delete("RayJob", namespace, job["metadata"]["name"]):
                actions.append(f"deleted RayJob {job['metadata']['name']} (suspended)")
        if cluster and not _terminating(cluster) and rest.delete("RayCluster", namespace, cluster_name):
            actions.append(f"deleted RayCluster {cluster_name} (suspended)")
        obs = Observed(cluster_name=cluster_name, suspended=True, attempts=_attempts(body))
        return Result(compute_status(body, obs), actions=actions)

    digest = builders.spec_hash(fed.spec)
    mine = [j for j in jobs if _label(j, LABEL_SPEC_HASH) == digest and not _terminating(j)]
    current = max(mine, key=lambda j: _int_label(j, LABEL_ATTEMPT), default=None)
    attempt = _int_label(current, LABEL_ATTEMPT) if current else 1
    outcome = job_outcome(current)
    predecessor = None
    if outcome and outcome.phase == FAILED and attempt <= fed.spec.faultTolerance.maxJobRetries:
        actions.append(f"RayJob {current['metadata']['name']} failed ({outcome.reason}); retrying")
        predecessor, current, outcome, attempt = current, None, None, attempt + 1
    finished = outcome is not None
    # A RayJob that may still run (not ended, or being deleted) blocks the next one: two drivers of one
    # Federation would share its cluster and its status.
    blocking = [j for j in jobs if j is not current and j is not predecessor and job_outcome(j) is None]

    released = False
    desired_cluster = builders.build_raycluster(fed)
    if finished and not fed.spec.ray.keepCluster:
        if cluster and not _terminating(cluster) and rest.delete("RayCluster", namespace, cluster_name):
            actions.append(f"deleted RayCluster {cluster_name} (job finished)")
        cluster, released = None, True
    elif cluster is None:
        cluster = rest.create(desired_cluster) or rest.get("RayCluster", namespace, cluster_name)
        actions.append(f"created RayCluster {cluster_name}")
    elif _label(cluster, LABEL_CLUSTER_HASH) != _label(desired_cluster, LABEL_CLUSTER_HASH) and not _terminating(
        cluster
    ):
        rest.delete("RayCluster", namespace, cluster_name)
        actions.append(f"deleted RayCluster {cluster_name} (its spec changed; recreated once gone)")
        cluster = {**cluster, "metadata": {**cluster["metadata"], "deletionTimestamp": "now"}}

    cluster_usable = cluster is not None and not _terminating(cluster)
    if current is None and not finished and cluster_usable and not blocking:
        desired_job = builders.build_rayjob(fed, attempt, generation)
        current = rest.create(desired_job) or rest.get("RayJob", namespace, desired_job["metadata"]["name"])
        actions.append(f"created RayJob {desired_job['metadata']['name']}")
    # The failed attempt stays until its successor exists: its attempt label is the retry count.
    keep = {(j or {}).get("metadata", {}).get("name") for j in (current, None if current else predecessor)}
    for job in jobs:
        job_name = job["metadata"]["name"]
        if job_name not in keep and not _terminating(job):
            rest.delete("RayJob", namespace, job_name)
            actions.append(f"deleted RayJob {job_name} (superseded)")

    job_name = current["metadata"]["name"] if current else builders.rayjob_name(fed.name, digest, attempt)
    obs = Observed(
        cluster=cluster,
        job=current,
        cluster_name=cluster_name,
        job_name=job_name,
        attempts=attempt,
        cluster_released=released,
    )
    return Result(compute_status(body, obs), actions=actions)


def _attempts(body: Mapping[str, Any]) -> int:
    return int((body.get("status") or {}).get("attempts") or 0)
