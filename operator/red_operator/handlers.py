"""kopf handlers: thin wrappers that call the one reconcile() and write its result into the status.

Create, resume, update (of the spec) and a periodic timer reconcile the Federation itself; an event of one
of its RayJobs or RayClusters reconciles its parent at once, so KubeRay's reports reach the Federation
without waiting for the timer. A lock per Federation keeps these passes from overlapping.

Retries are deliberate: API errors that may pass (timeouts, 5xx, 429, conflicts) raise kopf.TemporaryError
with a delay; a spec that the spec model rejects raises kopf.PermanentError after the status says why; a
change handler gives up after RETRIES attempts, and the timer heals whatever it left undone.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import kopf
import urllib3
from kubernetes.client import ApiException

from red_operator.builders import LABEL_FEDERATION
from red_operator.kube import Rest, new_api_client
from red_operator.metrics import ERRORS, RECONCILES, known, set_phase
from red_operator.reconcile import Result, reconcile
from red_operator.status import FAILED, changed_fields
from red_runtime.spec import API_GROUP, KIND

VERSION = "v1alpha1"
PLURAL = "federations"
INTERVAL_S = float(os.environ.get("RED_RECONCILE_INTERVAL", "10"))
RETRIES = 8
BACKOFF_S = 5.0
TRANSIENT = {408, 409, 429, 500, 502, 503, 504}

_locks: dict[tuple[str, str], threading.Lock] = collections.defaultdict(threading.Lock)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Tune kopf once: watches that notice a silent API server, quiet event posting, bounded backoffs."""
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.error_backoffs = [1, 2, 5, 10, 20, 30]
    # Handler log lines stay logs; the phase changes are posted as Events explicitly.
    settings.posting.level = logging.WARNING
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.execution.max_workers = int(os.environ.get("RED_OPERATOR_WORKERS", "32"))
    memo.rest = Rest(new_api_client())


def _run(body: Mapping[str, Any], rest: Rest, trigger: str) -> Result | None:
    """One reconcile pass, with API failures sorted into retry-later and give-up."""
    RECONCILES.labels(trigger=trigger).inc()
    meta = body.get("metadata") or {}
    try:
        with _locks[(meta.get("namespace", ""), meta.get("name", ""))]:
            return reconcile(body, rest)
    except ApiException as err:
        ERRORS.labels(kind=f"http-{err.status}").inc()
        message = f"Kubernetes API {err.status} {err.reason}: {str(err.body)[:500]}"
        if err.status in TRANSIENT or (err.status or 0) >= 500:
            raise kopf.TemporaryError(message, delay=BACKOFF_S) from err
        raise kopf.PermanentError(message) from err
    except (urllib3.exceptions.HTTPError, OSError) as err:
        ERRORS.labels(kind="connection").inc()
        raise kopf.TemporaryError(f"Kubernetes API unreachable: {err}", delay=BACKOFF_S) from err


def _announce(body: Mapping[str, Any], result: Result, logger: logging.Logger | logging.LoggerAdapter) -> None:
    for action in result.actions:
        logger.info(action.message)
    before = (body.get("status") or {}).get("phase")
    phase = result.status["phase"]
    meta = body.get("metadata") or {}
    set_phase(f"{meta.get('namespace')}/{meta.get('name')}", phase)
    if phase != before:
        condition = next(c for c in result.status["conditions"] if c["type"] == "Ready")
        kopf.event(
            dict(body),
            type="Warning" if phase == FAILED else "Normal",
            reason=phase,
            message=f"{result.status['reason']}: {condition['message']}"[:1000],
        )


def _reconcile_handler(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, trigger: str) -> None:
    result = _run(body, memo.rest, trigger)
    if result is None:
        return
    changes = changed_fields(body.get("status") or {}, result.status)
    if changes:
        patch.setdefault("status", {}).update(changes)
    _announce(body, result, logger)
    if result.invalid and trigger != "timer":
        raise kopf.PermanentError(f"invalid Federation: {result.invalid}")


@kopf.on.resume(API_GROUP, VERSION, PLURAL, retries=RETRIES, backoff=BACKOFF_S)
@kopf.on.create(API_GROUP, VERSION, PLURAL, retries=RETRIES, backoff=BACKOFF_S)
def on_create(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """A new Federation, or one found when the operator starts: the same reconcile."""
    _reconcile_handler(body, patch, memo, logger, "create")


@kopf.on.update(API_GROUP, VERSION, PLURAL, field="spec", retries=RETRIES, backoff=BACKOFF_S)
def on_update(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """A spec change: reconcile replaces the RayJob (KubeRay ignores edits to one) or suspends/resumes."""
    _reconcile_handler(body, patch, memo, logger, "update")


@kopf.timer(API_GROUP, VERSION, PLURAL, interval=INTERVAL_S, initial_delay=INTERVAL_S, backoff=BACKOFF_S)
def on_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Level-triggered safety net: heals missed events, drift and children deleted by hand."""
    _reconcile_handler(body, patch, memo, logger, "timer")


@kopf.on.delete(API_GROUP, VERSION, PLURAL, optional=True)
def on_delete(body: kopf.Body, **_: Any) -> None:
    """Nothing to clean up (owner references let GC delete the children); only forget the metrics."""
    meta = body.get("metadata") or {}
    set_phase(f"{meta.get('namespace')}/{meta.get('name')}", None)
    _locks.pop((meta.get("namespace", ""), meta.get("name", "")), None)


def _parent(body: Mapping[str, Any]) -> str | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("controller") and ref.get("apiVersion", "").startswith(API_GROUP):
            return ref.get("name")
    return None


@kopf.on.event("ray.io", "v1", "rayjobs", labels={LABEL_FEDERATION: kopf.PRESENT})
@kopf.on.event("ray.io", "v1", "rayclusters", labels={LABEL_FEDERATION: kopf.PRESENT})
def on_child_event(body: kopf.Body, type: str | None, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """KubeRay changed a child's status (or it went away): reconcile the parent now, not at the next tick."""
    name = _parent(body)
    if type is None or name is None:  # the initial listing: resume handlers cover the parents
        return
    namespace = body.get("metadata", {}).get("namespace", "")
    rest: Rest = memo.rest
    fed = rest.get(KIND, namespace, name)
    if fed is None or (fed.get("metadata") or {}).get("deletionTimestamp"):
        return
    try:
        result = _run(fed, rest, "child")
    except kopf.TemporaryError as err:  # event handlers are not retried; the timer picks it up
        logger.warning(f"reconcile of Federation {name} deferred to the timer: {err}")
        return
    if result is None:
        return
    changes = changed_fields(fed.get("status") or {}, result.status)
    if changes:
        rest.patch(KIND, namespace, name, {"status": changes}, subresource="status")
    _announce(fed, result, logger)


@kopf.on.probe(id="federations")
def federations_probe(**_: Any) -> int:
    """The liveness endpoint reports how many Federations this operator has seen."""
    return known()
