"""The one idempotent reconcile: make a Federation's children match its spec, then say what KubeRay reports.

Level-triggered: it reads the world each time and acts on the difference, so create, resume, update, the
periodic resync and a RayJob's status change all call the same function, and a missed event heals on the
next pass. Children have deterministic names, so a second pass (or a restarted operator) finds them instead
of duplicating them. It acts only on children that this Federation controls: an object of a child's name
that is someone else's is reported as a Conflict and left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes.client import ApiException

from red_api.names import claim_name, owns_claim
from red_api.policy import TenantPolicy
from red_api.policy import problems as tenant_problems
from red_api.spec import QUEUE_LABEL, Federation, SpecError, parse_manifest
from red_operator import builders
from red_operator.builders import (
    LABEL_ATTEMPT,
    LABEL_GENERATION,
    LABEL_RAY_HASH,
    LABEL_SERVE_HASH,
    LABEL_SPEC_HASH,
    owned,
)
from red_operator.children import ApiSeen, Seen, terminating
from red_operator.kube import Rest
from red_operator.status import FAILED, SUCCEEDED, Observed, QueueWait, cluster_ready, compute_status, job_outcome

# Kueue's label on the Workload it makes for a job: the job's uid.
KUEUE_JOB_UID = "kueue.x-k8s.io/job-uid"
# KubeRay's label on a RayCluster's Pods, and the kubelet's reason for a container it cannot configure (a
# Secret or ConfigMap it references is missing).
RAY_CLUSTER_LABEL = "ray.io/cluster"
CONFIG_ERROR = "CreateContainerConfigError"


@dataclass(frozen=True)
class Action:
    """A change to a child, posted as an Event on the Federation the way KubeRay posts its own."""

    reason: str
    message: str


@dataclass
class Result:
    """The operator's status fields, plus what this pass did (Events, logs, metrics)."""

    status: dict[str, Any]
    invalid: str = ""
    actions: list[Action] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def _int_label(obj: Mapping[str, Any] | None, key: str) -> int:
    value = (((obj or {}).get("metadata") or {}).get("labels") or {}).get(key, "0")
    return int(value) if str(value).isdigit() else 0


def _label(obj: Mapping[str, Any] | None, key: str) -> str:
    return str((((obj or {}).get("metadata") or {}).get("labels") or {}).get(key, ""))


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


class _Pass:
    """The writes of one pass, each on a child this Federation controls, and what it refused to touch."""

    def __init__(self, rest: Rest, namespace: str, fed_uid: str):
        self.rest, self.namespace, self.uid = rest, namespace, fed_uid
        self.actions: list[Action] = []
        self.conflicts: list[str] = []

    def conflict(self, kind: str, obj: Mapping[str, Any]) -> None:
        self.conflicts.append(
            f"{kind} {_name(obj)} exists and is controlled by {builders.controller_of(obj)}, not by this Federation"
        )

    def create(self, desired: Mapping[str, Any]) -> dict[str, Any] | None:
        """The child, created; one found under its name is used only if it is ours (a lost response)."""
        kind = desired["kind"]
        obj, created = self.rest.create(desired)
        if obj is None:
            return None
        if not owned(obj, self.uid):
            self.conflict(kind, obj)
            return None
        if created:
            self.actions.append(Action(f"Created{kind}", f"created {kind} {_name(obj)}"))
        return obj

    def delete(self, kind: str, name: str, why: str) -> bool:
        if self.rest.delete(kind, self.namespace, name):
            self.actions.append(Action(f"Deleted{kind}", f"deleted {kind} {name} ({why})"))
            return True
        return False


def _ensure_rbac(p: _Pass, seen: Seen, fed: Federation) -> None:
    """The driver's ServiceAccount, Role and RoleBinding and the worker groups' ServiceAccounts; rules, subjects,
    roleRef and the spec's account annotations drifted by hand are put back. An account of this Federation that
    the spec no longer asks for (a group renamed, its annotations dropped) is deleted."""
    wanted = [*builders.build_rbac(fed), *builders.build_worker_accounts(fed)]
    for desired in wanted:
        kind, name = desired["kind"], desired["metadata"]["name"]
        current = seen.get(kind, fed.namespace, name)
        if current is None:
            p.create(desired)
        elif not owned(current, fed.uid):
            p.conflict(kind, current)
        elif terminating(current):
            continue
        elif "roleRef" in desired and current.get("roleRef") != desired["roleRef"]:
            # roleRef is immutable: the binding is replaced.
            p.rest.delete(kind, fed.namespace, name)
            if p.rest.create(desired)[1]:
                p.actions.append(Action(f"Replaced{kind}", f"replaced {kind} {name} (its roleRef had changed)"))
        else:
            fields = ("rules", "subjects", "automountServiceAccountToken")
            drift: dict[str, Any] = {k: desired[k] for k in fields if k in desired and current.get(k) != desired[k]}
            what = list(drift)
            if kind == "ServiceAccount" and (notes := builders.annotations_patch(current, desired)):
                drift["metadata"] = {"annotations": notes}
                what.append("annotations")
            if drift:
                p.rest.patch(kind, fed.namespace, name, drift)
                p.actions.append(Action(f"Updated{kind}", f"restored the {' and '.join(what)} of {kind} {name}"))
    names = {d["metadata"]["name"] for d in wanted if d["kind"] == "ServiceAccount"}
    for account in seen.accounts(fed.namespace, fed.name, fed.uid):
        if _name(account) not in names and not terminating(account):
            p.delete("ServiceAccount", _name(account), "no worker group asks for it")


def _storage_problem(kids: _Children, seen: Seen, fed: Federation) -> str:
    """Make the Federation's claim if it is the operator's to make; say what is missing for the RayCluster
    (the claim the spec names, the object-storage Secret), "" if nothing. A claim of the name that someone
    else made is a Conflict, never used."""
    p, storage, ns = kids.p, fed.spec.storage, fed.namespace
    if storage.uri:
        return _missing_secret(kids, fed) if storage.secretRef else ""
    name = claim_name(fed)
    if not owns_claim(fed):
        if kids.cluster is None and not p.rest.exists("PersistentVolumeClaim", ns, name):
            return f"spec.storage.pvc.claimName: {name!r}: no such PersistentVolumeClaim in namespace {ns}"
        return ""
    current = seen.get("PersistentVolumeClaim", ns, name)
    if current is None:
        current, created = p.rest.create(builders.build_claim(fed))
        if created:
            p.actions.append(Action("CreatedPersistentVolumeClaim", f"created PersistentVolumeClaim {name}"))
    if current is not None and not builders.claimed_by(current, fed):
        p.conflict("PersistentVolumeClaim", current)
    return ""


def _missing_secret(kids: _Children, fed: Federation) -> str:
    """spec.storage.secretRef as the kubelet found it: a Ray Pod whose container it cannot create for want
    of the Secret. The operator may not read Secrets; the Pods say what it needs to know, and the kubelet
    starts them once the Secret exists. Asked only while the RayCluster is not ready."""
    cluster = kids.cluster
    if cluster is None or terminating(cluster) or cluster_ready(cluster):
        return ""
    secret, ns = fed.spec.storage.secretRef, fed.namespace
    # The kubelet's words: `secret "X" not found` from its watch, `secrets "X" not found` from the API server.
    missing = re.compile(rf'secrets? "{re.escape(secret)}"')
    for pod in kids.p.rest.list("Pod", ns, f"{RAY_CLUSTER_LABEL}={kids.cluster_name}"):
        status = pod.get("status") or {}
        for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") == CONFIG_ERROR and missing.search(str(waiting.get("message") or "")):
                return (
                    f"spec.storage.secretRef.name: {secret!r}: no such Secret in namespace {ns}; create it with "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for an S3-compatible server)"
                )
    return ""


def _stop_serving(p: _Pass, service: Mapping[str, Any] | None, why: str) -> None:
    """Delete the Federation's RayService, if it has one (a same-named one of someone else's is left alone)."""
    if service is not None and owned(service, p.uid) and not terminating(service):
        p.delete("RayService", _name(service), why)


def _serve(
    p: _Pass, service: Mapping[str, Any] | None, fed: Federation, phase: str
) -> tuple[str, Mapping[str, Any] | None]:
    """Serve the model while the Federation has Succeeded and spec.serve asks for it: the RayService created,
    or patched when what shapes it changed, else deleted. Returns the served URL ("" while none is served)
    and the RayService."""
    if fed.spec.serve is None or phase != SUCCEEDED:
        why = "spec.serve removed" if fed.spec.serve is None else f"the Federation is {phase}, not Succeeded"
        _stop_serving(p, service, why)
        return "", None
    desired = builders.build_rayservice(fed)
    if service is None:
        created = p.create(desired)
        return (builders.serve_url(fed), created) if created else ("", None)
    if not owned(service, fed.uid):
        p.conflict("RayService", service)
        return "", None
    if terminating(service):  # spec.serve removed and given back: its deletion's event brings the next pass
        return "", None
    digest = desired["metadata"]["labels"][LABEL_SERVE_HASH]
    if _label(service, LABEL_SERVE_HASH) != digest:
        # KubeRay applies a new serveConfigV2 to the running cluster, and replaces the cluster (new one first)
        # only if its Pods changed; `test` refuses the patch if the name now holds another object.
        uid = str((service.get("metadata") or {}).get("uid") or "")
        labels = {**((service.get("metadata") or {}).get("labels") or {}), **desired["metadata"]["labels"]}
        ops = [
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "replace", "path": "/metadata/labels", "value": labels},
            {"op": "replace", "path": "/spec", "value": desired["spec"]},
        ]
        p.rest.json_patch("RayService", fed.namespace, _name(service), ops)
        p.actions.append(Action("UpdatedRayService", f"updated RayService {_name(service)} to the spec"))
    return builders.serve_url(fed), service


def _problems(err: Exception) -> str:
    if isinstance(err, SpecError):
        return "; ".join(err.problems)
    return f"spec: {err}"


def failed(body: Mapping[str, Any], err: BaseException) -> Result:
    """The status of a Federation whose pass raised: Failed, reason ReconcileError, naming the exception. What
    exists stays as it was (reconcile builds every child before it creates one, so a spec that a builder
    cannot render has created nothing)."""
    meta = body.get("metadata") or {}
    previous = body.get("status") or {}
    obs = Observed(
        cluster_name=builders.raycluster_name(str(meta.get("name") or "")),
        job_name=str(previous.get("rayJobName") or ""),
        attempts=_attempts(body),
        error=f"{type(err).__name__}: {str(err)[:500]}",
    )
    return Result(compute_status(body, obs))


@dataclass
class _Children:
    """What one pass found of a Federation's children (the operator's watch indices, or API reads), and what
    it changes as it goes: a RayCluster it creates or deletes, the RayJob it runs."""

    body: Mapping[str, Any]
    p: _Pass
    generation: int
    jobs: list[dict[str, Any]]
    cluster_name: str
    cluster: dict[str, Any] | None
    service: Mapping[str, Any] | None


@dataclass
class _JobPlan:
    """The RayJob of the current spec, if any, how it ended, and what else may still be running."""

    current: dict[str, Any] | None
    predecessor: dict[str, Any] | None  # a failed attempt, kept until its retry exists
    attempt: int
    finished: bool
    blocking: list[dict[str, Any]]  # RayJobs that may still run: the next one waits for them


def reconcile(
    body: Mapping[str, Any], rest: Rest, seen: Seen | None = None, policy: TenantPolicy | None = None
) -> Result | None:
    """Drive the children toward the spec; None when `body` is older than the children (a stale event).

    `seen` answers what exists (the operator's watch indices); without it every question is an API read.
    `policy` is the chart's tenant policy: a spec it does not allow is invalid, as a spec that does not parse.
    """
    seen = seen or ApiSeen(rest)
    kids = _observe(body, rest, seen)
    if kids is None:
        return None
    meta = body.get("metadata") or {}
    try:
        fed = parse_manifest({**body, "metadata": {**meta, "namespace": kids.p.namespace}}, stored=True)
        refused = tenant_problems(fed.spec, policy or TenantPolicy())
        if refused:  # got in before the policy, or past its admission check
            raise SpecError(refused)
    except Exception as err:  # noqa: BLE001 - whatever a spec makes the parser raise, it runs nothing
        _stop_serving(kids.p, kids.service, "the spec is invalid")
        return _release(kids, _problems(err))
    # Every child is rendered before any is created: a spec that a builder cannot render raises here (and
    # ends in ReconcileError, passes.py) with nothing created.
    builders.build_all(fed, kids.generation)
    _ensure_rbac(kids.p, seen, fed)
    if fed.spec.suspend:
        return _suspend(kids)
    storage_problem = _storage_problem(kids, seen, fed)
    queue = queue_of(fed, kids.cluster)
    held = held_by_queue(queue, kids.cluster)
    plan = _plan_job(kids, fed, held)
    released, created = _converge_cluster(kids, fed, plan, storage_problem)
    if created:
        held = held_by_queue(queue, kids.cluster)  # a queued RayCluster is created suspended
    why = f"Kueue holds RayCluster {kids.cluster_name} (LocalQueue {queue})"
    _converge_jobs(kids, fed, plan, held, why, storage_problem)
    return _report(kids, fed, plan, released, held, queue, "" if plan.finished else storage_problem)


def _observe(body: Mapping[str, Any], rest: Rest, seen: Seen) -> _Children | None:
    """The Federation's RayJobs, RayCluster and RayService; None when a RayJob is newer than `body` (a stale
    event). A RayCluster of the Federation's name that it does not control is a conflict, left alone."""
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
    uid = str(meta.get("uid") or "")
    generation = int(meta.get("generation") or 0)
    p = _Pass(rest, namespace, uid)
    jobs = seen.jobs(namespace, name, uid)
    if any(_int_label(j, LABEL_GENERATION) > generation for j in jobs):
        return None
    cluster_name = builders.raycluster_name(name)
    cluster = seen.get("RayCluster", namespace, cluster_name)
    if cluster is not None and not owned(cluster, uid):
        p.conflict("RayCluster", cluster)
        cluster = None
    service = seen.get("RayService", namespace, builders.rayservice_name(name))
    return _Children(body, p, generation, jobs, cluster_name, cluster, service)


def _suspend(kids: _Children) -> Result:
    """spec.suspend: every RayJob, the RayCluster and serving go; storage and RBAC stay."""
    p = kids.p
    _remove_compute(kids, "suspended")
    _stop_serving(p, kids.service, "suspended")
    # The stopped RayJob stays named: its driver's last report (the checkpoint it wrote on the way out)
    # is accepted only while the status names its RayJob.
    last_job = str((kids.body.get("status") or {}).get("rayJobName") or "")
    obs = Observed(
        cluster_name=kids.cluster_name,
        job_name=last_job,
        suspended=True,
        attempts=_attempts(kids.body),
        conflicts=p.conflicts,
    )
    return Result(compute_status(kids.body, obs), actions=p.actions, conflicts=p.conflicts)


def _plan_job(kids: _Children, fed: Federation, held: bool) -> _JobPlan:
    """The current spec's RayJob and its attempt: a failed one within spec.faultTolerance.maxJobRetries
    makes way for a retry. While Kueue holds the RayCluster (`held`), no RayJob is current."""
    digest = builders.spec_hash(fed.spec)
    # The current spec's RayJobs: by hash, or by generation for one that an older release labelled with a
    # hash of its own making (the spec has not changed since: the generation would have).
    mine = [
        j
        for j in kids.jobs
        if not terminating(j)
        and (_label(j, LABEL_SPEC_HASH) == digest or _int_label(j, LABEL_GENERATION) == kids.generation)
    ]
    current = max(mine, key=lambda j: _int_label(j, LABEL_ATTEMPT), default=None)
    if held:
        # Kueue holds the RayCluster: not admitted yet, or evicted (its Pods go, and the head's preStop hook
        # has the driver checkpoint). No RayJob runs until Kueue admits it again (_converge_jobs deletes
        # any); the next one resumes.
        current = None
    attempt = _int_label(current, LABEL_ATTEMPT) if current else 1
    outcome = job_outcome(current)
    predecessor = None
    if current and outcome and outcome.phase == FAILED and attempt <= fed.spec.faultTolerance.maxJobRetries:
        why = f"RayJob {_name(current)} failed ({outcome.reason}); retrying"
        kids.p.actions.append(Action("RetryingRayJob", why))
        predecessor, current, outcome, attempt = current, None, None, attempt + 1
    # A RayJob that may still run (not ended, or being deleted) blocks the next one: two drivers of one
    # Federation would share its cluster and its status.
    blocking = [j for j in kids.jobs if j is not current and j is not predecessor and job_outcome(j) is None]
    return _JobPlan(current, predecessor, attempt, outcome is not None, blocking)


def _converge_cluster(kids: _Children, fed: Federation, plan: _JobPlan, storage_problem: str) -> tuple[bool, bool]:
    """Create the RayCluster, release it once the job finished (unless spec.ray.keepCluster), or replace it
    between RayJobs when spec.ray changed; (released, created)."""
    p, cluster = kids.p, kids.cluster
    if plan.finished and not fed.spec.ray.keepCluster:
        if cluster and not terminating(cluster):
            p.delete("RayCluster", kids.cluster_name, "the job finished")
        kids.cluster = None
        return True, False
    if cluster is None:
        if not plan.finished and not p.conflicts and not storage_problem:
            kids.cluster = p.create(builders.build_raycluster(fed))
            return False, True
    elif (
        plan.current is None
        and not plan.finished
        and not terminating(cluster)
        and _label(cluster, LABEL_RAY_HASH) != builders.ray_hash(fed.spec)
    ):
        # Only between RayJobs: a cluster under a RayJob of the current spec is never replaced.
        p.delete("RayCluster", kids.cluster_name, "spec.ray changed; recreated once gone")
        kids.cluster = {**cluster, "metadata": {**cluster["metadata"], "deletionTimestamp": "now"}}
    return False, False


def _converge_jobs(kids: _Children, fed: Federation, plan: _JobPlan, held: bool, why: str, storage: str) -> None:
    """Create the current spec's RayJob once its RayCluster is usable, its storage is there and nothing blocks
    it; delete every other RayJob (`why`, when Kueue holds the cluster)."""
    p, cluster = kids.p, kids.cluster
    usable = cluster is not None and not terminating(cluster) and not storage
    if plan.current is None and not plan.finished and usable and not held and not plan.blocking and not p.conflicts:
        plan.current = p.create(builders.build_rayjob(fed, plan.attempt, kids.generation))
    # The failed attempt stays until its successor exists: its attempt label is the retry count.
    keep = {_name(j) for j in (plan.current, None if plan.current else plan.predecessor) if j}
    for job in kids.jobs:
        if _name(job) not in keep and not terminating(job):
            p.delete("RayJob", _name(job), why if held else "superseded")


def _report(
    kids: _Children, fed: Federation, plan: _JobPlan, released: bool, held: bool, queue: str, storage_problem: str
) -> Result:
    """The status this pass observed, serving brought in line with its phase."""
    digest = builders.spec_hash(fed.spec)
    job_name = _name(plan.current) if plan.current else builders.rayjob_name(fed.name, digest, plan.attempt)
    obs = Observed(
        cluster=kids.cluster,
        job=plan.current,
        cluster_name=kids.cluster_name,
        job_name=job_name,
        attempts=plan.attempt,
        cluster_released=released,
        conflicts=kids.p.conflicts,
        storage_problem=storage_problem,
        queue=queue,
        waiting=queue_wait(kids.p.rest, fed.namespace, queue, kids.cluster) if held and kids.cluster else None,
    )
    # Serving follows the phase this pass computes (Succeeded only with the driver's final report in).
    url, served = _serve(kids.p, kids.service, fed, compute_status(kids.body, obs)["phase"])
    obs = replace(obs, serve_url=url, service=served, conflicts=kids.p.conflicts)
    return Result(compute_status(kids.body, obs), actions=kids.p.actions, conflicts=kids.p.conflicts)


def queue_of(fed: Federation, cluster: Mapping[str, Any] | None) -> str:
    """The LocalQueue: the Federation's label, else the one Kueue gave its RayCluster (Kueue labels a job with
    no queue for a namespace's LocalQueue named `default`)."""
    return fed.queue or _label(cluster, QUEUE_LABEL)


def held_by_queue(queue: str, cluster: Mapping[str, Any] | None) -> bool:
    """Whether Kueue holds the Federation's RayCluster: queued, and suspended (until admitted, or evicted)."""
    if not queue or cluster is None or terminating(cluster):
        return False
    return bool((cluster.get("spec") or {}).get("suspend"))


def queue_wait(rest: Rest, namespace: str, queue: str, cluster: Mapping[str, Any]) -> QueueWait:
    """Why Kueue holds the RayCluster, as its Workload says (QuotaReserved's message, or the eviction's)."""
    uid = str((cluster.get("metadata") or {}).get("uid") or "")
    try:
        workloads = rest.list("Workload", namespace, f"{KUEUE_JOB_UID}={uid}") if uid else []
    except ApiException as err:
        if err.status not in (403, 404):
            raise
        why = "Kueue's Workload API is not served" if err.status == 404 else "the operator may not read Workloads"
        return QueueWait(queue, "", "Queued", f"{why}; is Kueue installed, with its RayCluster integration?")
    if not workloads:
        return QueueWait(queue, "", "Queued", "waiting for Kueue to create the Workload")
    workload = max(workloads, key=lambda w: str((w.get("metadata") or {}).get("creationTimestamp") or ""))
    conditions = {c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []}
    name = _name(workload)
    evicted = conditions.get("Evicted") or {}
    if evicted.get("status") == "True":
        return QueueWait(queue, name, str(evicted.get("reason") or "Evicted"), str(evicted.get("message") or ""))
    reserved = conditions.get("QuotaReserved") or {}
    if reserved.get("status") == "True":
        return QueueWait(queue, name, "Queued", "quota reserved; waiting for admission checks")
    message = reserved.get("message") or "waiting for quota in the ClusterQueue"
    return QueueWait(queue, name, "Queued", str(message))


def _remove_compute(kids: _Children, why: str, cluster_why: str = "") -> None:
    """Every RayJob and the RayCluster go (GPUs and all); the driver's RBAC and any storage stay."""
    for job in kids.jobs:
        if not terminating(job):
            kids.p.delete("RayJob", _name(job), why)
    if kids.cluster and not terminating(kids.cluster):
        kids.p.delete("RayCluster", kids.cluster_name, cluster_why or why)


def _release(kids: _Children, invalid: str) -> Result:
    """A spec that does not parse runs nothing: its compute goes, and fixing the spec picks up where it was."""
    _remove_compute(kids, "the spec is invalid", "the spec is invalid; storage kept")
    p, body = kids.p, kids.body
    previous = body.get("status") or {}
    obs = Observed(
        cluster_name=kids.cluster_name,
        job_name=str(previous.get("rayJobName") or ""),
        attempts=_attempts(body),
        invalid=invalid,
        conflicts=p.conflicts,
    )
    return Result(compute_status(body, obs), invalid=invalid, actions=p.actions, conflicts=p.conflicts)


def _attempts(body: Mapping[str, Any]) -> int:
    return int((body.get("status") or {}).get("attempts") or 0)
