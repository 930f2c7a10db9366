"""Reconcile passes, one at a time per Federation, and the one path by which the operator writes status.

Every pass (create, resume, update, a child's event, the resync) takes its Federation's lock, reads the
newest body the watches have seen, overlaid with the operator's own last write until the watch shows it,
reconciles, and patches the status before it lets go. So passes land in the order they ran, none works
from a status older than the last one written, and the phase never steps back. kopf's handler patch, which
lands after the handler returns and outside any lock, is not used for status. An exception that is not the
API's ends the pass in a status too (phase Failed, reason ReconcileError): one Federation's content never
stops the operator, nor loops in retries that say nothing.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes.client import ApiException

from red_api.names import KIND
from red_api.policy import TenantPolicy
from red_operator import events
from red_operator.children import Seen
from red_operator.kube import Rest
from red_operator.metrics import ERRORS, RECONCILES, set_phase
from red_operator.reconcile import Result, failed, reconcile
from red_operator.status import FAILED, OPERATOR_FIELDS, SUCCEEDED, SUSPENDED, changed_fields

log = logging.getLogger("red.operator")
Key = tuple[str, str]
IDLE_PHASES = (SUCCEEDED, FAILED, SUSPENDED)


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def idle(body: Mapping[str, Any]) -> bool:
    """Nothing runs and nothing is left to do until the spec changes or a child does (whose event wakes it)."""
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    return status.get("phase") in IDLE_PHASES and status.get("observedGeneration") == generation


def _ready(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})


class Passes:
    """The operator's reconcile passes over the Federations that `federations` (an index) holds."""

    def __init__(self, rest: Rest, federations: Mapping[Key, Any], seen: Seen, policy: TenantPolicy | None = None):
        self.rest, self.federations, self.seen = rest, federations, seen
        self.policy = policy or TenantPolicy()
        self._locks: dict[Key, threading.Lock] = collections.defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._written: dict[Key, tuple[str, dict[str, Any]]] = {}

    def _lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks[key]

    def latest(self, key: Key, hint: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The newest body known: the index's (else `hint`), with the operator's own last write laid over
        its status until the watch has brought that write back."""
        store = self.federations.get(key)
        body = next(iter(list(store)), None) if store is not None else None
        body = body or (dict(hint) if hint is not None else None)
        if body is None:
            return None
        status = dict(body.get("status") or {})
        with self._guard:
            written = self._written.get(key)
            if written:
                version, fields = written
                seen = (body.get("metadata") or {}).get("resourceVersion") == version
                if seen or all(status.get(k) == v for k, v in fields.items()):
                    del self._written[key]
                else:
                    status.update(fields)
        return {**body, "status": status}

    def run(self, key: Key, trigger: str, hint: Mapping[str, Any] | None = None, uid: str = "") -> Result | None:
        """One pass; None if there was nothing to reconcile (gone, being deleted, another uid, a stale event)."""
        RECONCILES.labels(trigger=trigger).inc()
        with self._lock(key):
            body = self.latest(key, hint)
            meta = (body or {}).get("metadata") or {}
            if body is None or meta.get("deletionTimestamp") or (uid and meta.get("uid") != uid):
                return None
            try:
                result = reconcile(body, self.rest, self.seen, self.policy)
            except (ApiException, urllib3.exceptions.HTTPError, OSError):
                raise  # the API's, which the handlers sort into retry-later and give-up
            except Exception as err:  # anything else this Federation's content caused: its status says so
                ERRORS.labels(kind="reconcile").inc()
                log.exception("reconcile of Federation %s/%s failed", *key)
                result = failed(body, err)
            if result is None:
                return None
            self._write(key, body, result)
        self._announce(body, result)
        return result

    def _write(self, key: Key, body: Mapping[str, Any], result: Result) -> None:
        changes = changed_fields(body.get("status") or {}, result.status)
        if not changes:
            return
        namespace, name = key
        obj = self.rest.patch(KIND, namespace, name, {"status": changes}, subresource="status")
        fields = {k: result.status[k] for k in OPERATOR_FIELDS if k in result.status}
        with self._guard:
            self._written[key] = (str((obj.get("metadata") or {}).get("resourceVersion") or ""), fields)

    def _announce(self, body: Mapping[str, Any], result: Result) -> None:
        before = body.get("status") or {}
        phase = result.status["phase"]
        set_phase("/".join(key_of(body)), phase)
        for action in result.actions:
            log.info("%s/%s: %s", *key_of(body), action.message)
            events.post(self.rest, body, action.reason, action.message)
        ready, was = _ready(result.status), _ready(before)
        if result.conflicts and (was.get("reason"), was.get("message")) != ("Conflict", ready.get("message")):
            events.post(self.rest, body, "Conflict", ready.get("message", ""), warning=True)
        if phase != before.get("phase"):
            message = f"{result.status['reason']}: {ready.get('message', '')}"
            events.post(self.rest, body, phase, message, warning=phase == FAILED)

    def forget(self, key: Key) -> None:
        with self._guard:
            self._locks.pop(key, None)
            self._written.pop(key, None)
        set_phase("/".join(key), None)

    def resync(self, stop: threading.Event, indexed: threading.Event, interval_s: float) -> None:
        """The level-triggered safety net: every `interval_s`, a pass over each Federation that is not idle.

        Finished, failed and suspended Federations are skipped (their children's events still wake them),
        and a pass reads only the indices, so an unchanged Federation costs no API request at all. Nothing
        runs before `indexed`: a pass over an index still filling would see children missing.
        """
        while not stop.wait(interval_s):
            if not indexed.is_set():
                continue
            for key in list(self.federations):
                if stop.is_set():
                    return
                store = self.federations.get(key)
                body = next(iter(list(store)), None) if store is not None else None
                if body is None or idle(body):
                    continue
                try:
                    self.run(key, "resync")
                except Exception as err:  # the next round retries; one Federation never stops the others
                    log.warning("resync of Federation %s/%s failed: %s", *key, err)
