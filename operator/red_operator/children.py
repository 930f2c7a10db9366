"""What the operator knows of a Federation's children, and how it reads them.

A child is the Federation's only if its controller owner reference carries the Federation's uid (what
controller-runtime's SetControllerReference makes, and what owner-reference GC follows); anything else of
the same name is someone else's and is never touched. `IndexSeen` answers from the operator's watches
(kopf indices), with no API call; `ApiSeen` reads from the API server, for tools and tests.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Protocol

from red_operator.builders import LABEL_FEDERATION, controller_uid, owned
from red_operator.kube import Rest


class Seen(Protocol):
    """The children as last seen: by kind and name, and the RayJobs and ServiceAccounts a Federation controls."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def jobs(self, namespace: str, fed_name: str, fed_uid: str) -> list[dict[str, Any]]: ...

    def accounts(self, namespace: str, fed_name: str, fed_uid: str) -> list[dict[str, Any]]: ...


class ApiSeen:
    """Children read from the API server, a GET or LIST per question: for tools and tests."""

    def __init__(self, rest: Rest):
        self.rest = rest

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.rest.get(kind, namespace, name)

    def jobs(self, namespace: str, fed_name: str, fed_uid: str) -> list[dict[str, Any]]:
        return self._controlled("RayJob", namespace, fed_name, fed_uid)

    def accounts(self, namespace: str, fed_name: str, fed_uid: str) -> list[dict[str, Any]]:
        return self._controlled("ServiceAccount", namespace, fed_name, fed_uid)

    def _controlled(self, kind: str, namespace: str, fed_name: str, fed_uid: str) -> list[dict[str, Any]]:
        return [o for o in self.rest.list(kind, namespace, f"{LABEL_FEDERATION}={fed_name}") if owned(o, fed_uid)]


def terminating(obj: Mapping[str, Any] | None) -> bool:
    return bool(obj and (obj.get("metadata") or {}).get("deletionTimestamp"))


def trim(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a child that reconcile reads: identity, labels and annotations, owners, deletion, status,
    RBAC content."""
    meta = body.get("metadata") or {}
    out: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            k: copy.deepcopy(meta[k])
            for k in (
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "labels",
                "annotations",
                "ownerReferences",
                "deletionTimestamp",
            )
            if k in meta
        },
    }
    for k in ("status", "rules", "subjects", "roleRef", "automountServiceAccountToken"):
        if k in body:
            out[k] = copy.deepcopy(body[k])
    spec = body.get("spec")
    if isinstance(spec, Mapping) and "suspend" in spec:  # a RayCluster that Kueue holds (or has admitted)
        out["spec"] = {"suspend": spec["suspend"]}
    return out


def by_name(body: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """An index entry: (namespace, name) -> the trimmed child."""
    meta = body.get("metadata") or {}
    return {(meta.get("namespace", ""), meta.get("name", "")): trim(body)}


def by_controller(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """An index entry: the controller's uid -> the trimmed child (none for an object without a controller)."""
    uid = controller_uid(body)
    return {uid: trim(body)} if uid else {}


def _first(index: Mapping[Any, Any], key: Any) -> dict[str, Any] | None:
    store = index.get(key)
    return next(iter(list(store)), None) if store is not None else None


class IndexSeen:
    """Children as the operator's watches last saw them (kopf indices): no API call per question.

    An index may lag its own writes by a moment; a create that finds the name taken then answers with the
    object (Rest.create), and a second delete finds nothing, so a lag costs a request, never a duplicate.
    """

    def __init__(
        self,
        by_kind: Mapping[str, Mapping[Any, Any]],
        jobs_by_controller: Mapping[Any, Any],
        accounts_by_controller: Mapping[Any, Any],
    ):
        self.by_kind = by_kind
        self.jobs_by_controller, self.accounts_by_controller = jobs_by_controller, accounts_by_controller

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return _first(self.by_kind[kind], (namespace, name))

    def jobs(self, namespace: str, fed_name: str, fed_uid: str) -> list[dict[str, Any]]:
        return _all(self.jobs_by_controller, fed_uid)

    def accounts(self, namespace: str, fed_name: str, fed_uid: str) -> list[dict[str, Any]]:
        return _all(self.accounts_by_controller, fed_uid)


def _all(index: Mapping[Any, Any], fed_uid: str) -> list[dict[str, Any]]:
    store = index.get(fed_uid) if fed_uid else None
    return list(store) if store is not None else []
