"""Events on a Federation, as KubeRay posts them on its objects: every child created, replaced or deleted,
every conflict, every phase change. Posted with the operator's own client from any thread (kopf's poster
serves only its handlers), and never allowed to fail a reconcile."""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes.client import ApiException

from red_api.names import API_VERSION, KIND
from red_operator.kube import Rest

log = logging.getLogger("red.operator")
COMPONENT = "red-operator"
MAX_MESSAGE = 1024


def build_event(fed: Mapping[str, Any], warning: bool, reason: str, message: str) -> dict[str, Any]:
    """A core/v1 Event about the Federation `fed` (its metadata is all that is read)."""
    meta = fed.get("metadata") or {}
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def post(rest: Rest, fed: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
    try:
        rest.post(build_event(fed, warning, reason, message))
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
        log.warning("could not post Event %s about %s: %s", reason, (fed.get("metadata") or {}).get("name"), err)
