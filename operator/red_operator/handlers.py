"""kopf handlers: thin wrappers around the serialised passes (passes.py) over the one reconcile().

Create, resume and update (of the spec) reconcile the Federation itself; an event of one of its children
reconciles its parent at once, so KubeRay's reports reach the Federation without waiting; a resync thread
visits every Federation that is not idle every RED_RECONCILE_INTERVAL seconds. The children and the
Federations are kept in kopf indices fed by the operator's watches, so a pass costs no API read.

No handler needs a finalizer: owner references let GC delete the children, so a Federation deleted while
the operator is away goes at once (kopf removes a finalizer an older release left, as it finds one).

Retries are deliberate: API errors that may pass (timeouts, 5xx, 429, conflicts) raise kopf.TemporaryError
with a delay from create and update; a spec that does not parse is a status (InvalidSpec), not an error;
the resync heals whatever a child's event left undone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import kopf
import urllib3
from kubernetes.client import ApiException

from red_api.names import API_GROUP, KIND, PLURAL, VERSION
from red_api.policy import TenantPolicy
from red_operator.builders import LABEL_FEDERATION
from red_operator.children import IndexSeen, by_controller, by_name
from red_operator.kube import Rest, new_api_client
from red_operator.metrics import ERRORS, known
from red_operator.passes import Passes, key_of

INTERVAL_S = float(os.environ.get("RED_RECONCILE_INTERVAL", "60"))
RETRIES = 8
BACKOFF_S = 5.0
TRANSIENT = {408, 409, 429, 500, 502, 503, 504}
OURS = {LABEL_FEDERATION: kopf.PRESENT}
CHILD_INDICES = {
    "RayCluster": ("ray.io", "v1", "rayclusters"),
    "RayJob": ("ray.io", "v1", "rayjobs"),
    "RayService": ("ray.io", "v1", "rayservices"),
    "ServiceAccount": ("", "v1", "serviceaccounts"),
    "Role": ("rbac.authorization.k8s.io", "v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims"),
}

log = logging.getLogger("red.operator")


def _index_id(kind: str) -> str:
    return f"red_{kind.lower()}s"


def _child_index(body: kopf.Body, **_: Any) -> dict:
    return by_name(body)


for _kind, (_group, _version, _plural) in CHILD_INDICES.items():
    kopf.index(_group, _version, _plural, id=_index_id(_kind), labels=OURS)(_child_index)


@kopf.index("ray.io", "v1", "rayjobs", id="red_rayjobs_by_controller", labels=OURS)
def _jobs_by_controller(body: kopf.Body, **_: Any) -> dict:
    return by_controller(body)


@kopf.index("", "v1", "serviceaccounts", id="red_serviceaccounts_by_controller", labels=OURS)
def _accounts_by_controller(body: kopf.Body, **_: Any) -> dict:
    return by_controller(body)


# What the operator reads of a Federation's metadata; its annotations and managedFields are not kept.
KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp", "labels")


@kopf.index(API_GROUP, VERSION, PLURAL, id="red_federations")
def _federations(body: kopf.Body, **_: Any) -> dict:
    """The newest body of each Federation, as the watch delivers it, less what the operator never reads."""
    return {key_of(body): essence(body)}


def essence(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a pass reads: the kept metadata, the spec and the status, as plain data. A body nested too
    deeply to copy (stored before the CRD bounded it) keeps a spec that parses as the error it is."""
    meta = body.get("metadata") or {}
    try:
        return {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": {k: _plain(meta[k]) for k in KEPT_METADATA if k in meta},
            "spec": _plain(body.get("spec")),
            "status": _plain(body.get("status")),
        }
    except RecursionError:
        kept = {k: meta[k] for k in ("name", "namespace", "uid", "generation", "resourceVersion") if k in meta}
        return {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": kept,
            "spec": "nested too deeply to read",
            "status": {},
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class SpecDigestDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's record of the last handled spec, as a digest of it rather than kopf's copy of the whole spec,
    labels and annotations: that copy, in an annotation, could push the object past the API server's
    262,144 bytes for all annotations, and a refused patch of kopf's own stops the operator. The digest
    changes exactly when the spec does, which is all the update handler (field="spec") asks of it."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return {"spec": {"sha256": spec_digest(body.get("spec"))}}


def spec_digest(spec: Any) -> str:
    try:
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    except (RecursionError, ValueError, TypeError):
        text = repr(type(spec))
    return hashlib.sha256(text.encode()).hexdigest()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **indices: Any) -> None:
    """Tune kopf once, and start the passes over the indices and the resync thread."""
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.error_backoffs = [1, 2, 5, 10, 20, 30]
    # kopf's own Events are for its failures; the operator posts its own (events.py).
    settings.posting.level = logging.WARNING
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = SpecDigestDiffBase(prefix=API_GROUP, key="last-handled-configuration")
    settings.execution.max_workers = int(os.environ.get("RED_OPERATOR_WORKERS", "32"))
    seen = IndexSeen(
        {k: indices[_index_id(k)] for k in CHILD_INDICES},
        indices["red_rayjobs_by_controller"],
        indices["red_serviceaccounts_by_controller"],
    )
    # The chart's tenant policy (RED_TENANT_POLICY): a bad one stops the operator here, at start, not later.
    policy = TenantPolicy.from_env(os.environ)
    memo.passes = Passes(Rest(new_api_client()), indices["red_federations"], seen, policy)
    memo.stop, memo.indexed = threading.Event(), threading.Event()
    args = (memo.stop, memo.indexed, INTERVAL_S)
    threading.Thread(target=memo.passes.resync, args=args, name="red-resync", daemon=True).start()


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.stop.set()


def _reconcile(body: kopf.Body, memo: kopf.Memo, trigger: str) -> None:
    """A pass for a Federation handler, its API failures sorted into retry-later and give-up."""
    memo.indexed.set()  # kopf runs resource handlers only once it has filled every index
    try:
        memo.passes.run(key_of(body), trigger, hint=essence(body))
    except ApiException as err:
        ERRORS.labels(kind=f"http-{err.status}").inc()
        message = f"Kubernetes API {err.status} {err.reason}: {str(err.body)[:500]}"
        if err.status in TRANSIENT or (err.status or 0) >= 500:
            raise kopf.TemporaryError(message, delay=BACKOFF_S) from err
        raise kopf.PermanentError(message) from err
    except (urllib3.exceptions.HTTPError, OSError) as err:
        ERRORS.labels(kind="connection").inc()
        raise kopf.TemporaryError(f"Kubernetes API unreachable: {err}", delay=BACKOFF_S) from err


@kopf.on.resume(API_GROUP, VERSION, PLURAL, retries=RETRIES, backoff=BACKOFF_S)
@kopf.on.create(API_GROUP, VERSION, PLURAL, retries=RETRIES, backoff=BACKOFF_S)
def on_create(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A new Federation, or one found when the operator starts: the same reconcile."""
    _reconcile(body, memo, "create")


@kopf.on.update(API_GROUP, VERSION, PLURAL, field="spec", retries=RETRIES, backoff=BACKOFF_S)
def on_update(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A spec change: reconcile replaces the RayJob (KubeRay ignores edits to one) or suspends/resumes."""
    _reconcile(body, memo, "update")


@kopf.on.event(API_GROUP, VERSION, PLURAL)
def on_federation_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A Federation gone: forget its lock, its last write and its phase."""
    if type == "DELETED":
        memo.passes.forget(key_of(body))


def _parent(body: Mapping[str, Any]) -> tuple[str, str] | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("controller") and ref.get("apiVersion", "").startswith(API_GROUP):
            return ref.get("name"), ref.get("uid")
    return None


@kopf.on.event("ray.io", "v1", "rayservices", labels=OURS)
@kopf.on.event("ray.io", "v1", "rayjobs", labels=OURS)
@kopf.on.event("ray.io", "v1", "rayclusters", labels=OURS)
def on_child_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """KubeRay changed a child's status (or it went away): reconcile the parent now, not at the next resync.
    A RayService's own RayCluster carries our labels too (KubeRay copies them), but the RayService controls it:
    it has no parent here."""
    parent = _parent(body)
    if type is None or parent is None:  # the initial listing: resume handlers cover the parents
        return
    name, uid = parent
    key = (str(body.get("metadata", {}).get("namespace", "")), str(name))
    try:
        memo.passes.run(key, "child", uid=uid)
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:  # not retried: the resync picks it up
        ERRORS.labels(kind="child").inc()
        log.warning("reconcile of Federation %s/%s deferred to the resync: %s", *key, err)


@kopf.on.probe(id="federations")
def federations_probe(**_: Any) -> int:
    """The liveness endpoint reports how many Federations this operator has seen."""
    return known()
