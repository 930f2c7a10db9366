"""What the operator knows of a Federation's children, and how it reads them.

A child is the Federation's only if its controller owner reference carries the Federation's uid (what
controller-runtime's SetControllerReference makes, and what owner-reference GC follows); anything else of
the same name is someone else's and is never touched. `ApiSeen` reads children from the API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from red_operator.builders import LABEL_FEDERATION, owned
from red_operator.kube import Rest


class Seen(Protocol):
    """The children as last seen: by kind and name, and the RayJobs a Federation controls."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def jobs(self, namespace: str, fed_name: str, fed_uid: str) -> list[dict[str, Any]]: ...


class ApiSeen:
    """Children read from the API server, a GET or LIST per question: for tools and tests."""

    def __init__(self, rest: Rest):
        self.rest = rest

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.rest.get(kind, namespace, name)

    def jobs(self, namespace: str, fed_name: str, fed_uid: str) -> list[dict[str, Any]]:
        return [j for j in self.rest.list("RayJob", namespace, f"{LABEL_FEDERATION}={fed_name}") if owned(j, fed_uid)]


def terminating(obj: Mapping[str, Any] | None) -> bool:
    return bool(obj and (obj.get("metadata") or {}).get("deletionTimestamp"))
