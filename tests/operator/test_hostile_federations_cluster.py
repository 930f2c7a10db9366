"""One tenant's hostile Federations, applied to the real API server while the operator watches two namespaces:
each is refused by the API server (the CRD's bounds) or ends Failed with nothing created, the operator stays
up, and a valid Federation in the other namespace reaches Running.

These are the Federations that, before the API was bounded, looped in tracebacks with no status, made kopf's
own patch fail (its copy of the object in one annotation) or could stop kopf for every namespace.
kwok plays the Pods (see test_operator_cluster.py): an HTTPMode RayJob stays Running.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import KWOK_ONLY, _test_namespace
from tests.operator.conftest import Operator
from tests.operator.test_operator_cluster import federation, get, names, status

pytestmark = pytest.mark.cluster


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def hostile() -> dict[str, dict]:
    annotated = federation("annotated")
    annotated["metadata"]["annotations"] = {"example.com/note": "x" * 135_000}
    return {
        "env": federation("env", {"ray": {"runtimeEnv": {"env_vars": {"A": "x" * 270_000}}}}),
        "deep-env": federation("deep-env", {"ray": {"runtimeEnv": nested(400)}}),
        "deep-options": federation("deep-options", {"algorithm": {"name": "fedprox", "options": nested(400)}}),
        "cpu": federation("cpu", {"ray": {"head": {"cpu": "1e400", "memory": "1Gi"}}}),
        "lr": federation("lr", {"task": {"train": {"lr": 1e300}}}),
        "connected": federation(  # what CEL cannot say: the API server takes it, the operator refuses it
            "connected", {"topology": {"kind": "custom", "edges": [[0, 1], [2, 3]]}, "nodes": {"count": 4}}
        ),
        "annotated": annotated,  # valid: its annotation is its own business, and kopf no longer copies it
    }


@pytest.fixture
def other_namespace(kube, request) -> Iterator[str]:
    yield from _test_namespace(kube, request, KWOK_ONLY)


def test_hostile_federations_are_refused_or_fail_with_nothing_created_and_stop_no_one(
    kube, crd, namespace, other_namespace, tmp_path
):
    op = Operator(kube, [namespace, other_namespace], tmp_path)
    op.start()
    try:
        stored = []
        for name, manifest in hostile().items():
            text = json.dumps(manifest)
            proc = kube.kubectl("apply", "--server-side", "-f", "-", input=text, namespace=namespace, check=False)
            if proc.returncode == 0:
                stored.append(name)
            else:
                assert "spec." in proc.stderr or "metadata." in proc.stderr, (name, proc.stderr[-2000:])
        assert {"env", "cpu", "lr"}.isdisjoint(stored), "the CRD's bounds refuse these at apply time"
        assert {"connected", "annotated"} <= set(stored)

        def settled(name: str) -> dict | None:
            st = status(kube, namespace, name)
            return st if st.get("phase") and st.get("observedGeneration") else None

        for name in stored:
            st = kube.wait_for(
                lambda n=name: settled(n), timeout=60, message=lambda n=name: f"{n}:\n{op.log()[-3000:]}"
            )
            if name == "annotated":
                assert st["phase"] in ("Pending", "Provisioning", "Running"), st
                continue
            assert (st["phase"], st["reason"]) == ("Failed", "InvalidSpec"), (name, st)
            for kind in ("raycluster", "rayjob", "serviceaccount", "role", "rolebinding"):
                assert names(kube, namespace, kind, name) == [], (name, kind)

        apply_valid = json.dumps(federation("valid"))
        kube.kubectl("apply", "--server-side", "-f", "-", input=apply_valid, namespace=other_namespace)
        running = kube.wait_for(
            lambda: status(kube, other_namespace, "valid").get("phase") == "Running",
            timeout=120,
            message=lambda: f"a Running Federation beside the hostile ones:\n{op.log()[-3000:]}",
        )
        assert running and op.proc is not None and op.proc.poll() is None, "the operator stopped"
        note = get(kube, namespace, "federation", "annotated")["metadata"]["annotations"]
        assert len(note.get("red.dev/last-handled-configuration", "")) < 200, "kopf copied the object again"
    finally:
        for ns in (namespace, other_namespace):
            kube.kubectl("delete", "federations", "--all", "--wait=true", "--timeout=60s", namespace=ns, check=False)
        op.stop()
