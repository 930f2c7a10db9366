"""spec.serve against a real API server, the real KubeRay and kube-controller-manager's GC (kwok Pods).

No Ray runs on kwok, so the run's success is given as its two witnesses give it: KubeRay's verdict on the
RayJob (its status, as KubeRay writes it when the Ray job has SUCCEEDED) and the driver's final report (the
Federation's status, written as the driver's ServiceAccount). Everything after that is the real operator and
the real KubeRay, which takes the RayService and makes its RayCluster.
"""

from __future__ import annotations

import json

import pytest
import yaml

from red_api.spec import parse_manifest
from red_operator import builders
from red_operator.status import now_iso as now
from tests.operator.test_operator_cluster import apply, federation, get, names, status, subset, wait_children

pytestmark = pytest.mark.cluster


def succeed(kube, namespace: str, name: str) -> dict:
    """The RayJob's Ray job SUCCEEDED and the driver reported its last round; returns the Succeeded status."""
    job = wait_children(kube, namespace, name)["rayJobName"]
    report = {"round": 3, "rounds": 3, "progress": "3/3", "completionTime": now(), "driverRayJob": job}
    kube.kubectl(
        "patch", "federation", name, "--subresource=status", "--type=merge", "-p", json.dumps({"status": report}),
        f"--as=system:serviceaccount:{namespace}:{name}-driver", namespace=namespace,
    )  # fmt: skip
    verdict = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "endTime": now()}
    kube.kubectl(
        "patch", "rayjob", job, "--subresource=status", "--type=merge", "-p", json.dumps({"status": verdict}),
        namespace=namespace,
    )  # fmt: skip
    return kube.wait_for(
        lambda: (s := status(kube, namespace, name)).get("phase") == "Succeeded" and s,
        timeout=60,
        message=f"{name} Succeeded",
    )


def served_args(service: dict) -> dict:
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert (app["import_path"], app["route_prefix"]) == ("red_runtime.apps.serving:build_app", "/")
    return app["args"]


def test_a_succeeded_federation_is_served_resized_in_place_and_stopped(kube, namespace, operator):
    spec = {"rounds": 3, "nodes": {"count": 4}, "serve": {"replicas": 1, "cpu": 0.5}}
    apply(kube, namespace, federation("served", spec))
    wait_children(kube, namespace, "served")
    assert get(kube, namespace, "rayservice", "served-serve") is None, "nothing is served before Succeeded"
    final = succeed(kube, namespace, "served")
    job = final["rayJobName"]

    service = kube.wait_for(lambda: get(kube, namespace, "rayservice", "served-serve"), timeout=60)
    fed_obj = get(kube, namespace, "federation", "served")
    (ref,) = service["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("Federation", fed_obj["metadata"]["uid"], True)
    assert served_args(service) == {"run": "/red/storage/served", "replicas": 1, "cpu": 0.5, "gpu": 0.0}
    parsed = parse_manifest({**fed_obj, "metadata": {**fed_obj["metadata"], "namespace": namespace}})
    assert subset(builders.build_rayservice(parsed)["spec"], service["spec"]), "a RayService field was dropped"
    url = f"http://served-serve-serve-svc.{namespace}.svc:8000"
    kube.wait_for(lambda: status(kube, namespace, "served").get("serveURL") == url, timeout=30)
    # no Ray runs on kwok, so KubeRay never sees Serve endpoints: the Federation says the service is not up yet
    serving = {c["type"]: c for c in status(kube, namespace, "served")["conditions"]}["Serving"]
    assert serving["status"] == "False" and "RayService served-serve" in serving["message"]
    row = kube.kubectl("get", "fed", "served", "-o", "wide", "--no-headers", namespace=namespace).stdout.split()
    assert row[-1] == url
    # KubeRay took it: it validated the spec and made the RayService's own RayCluster
    kube.wait_for(
        lambda: kube.kubectl_json(
            "get", "rayclusters", "-l", "ray.io/originated-from-cr-name=served-serve", namespace=namespace
        )["items"],
        timeout=60,
        message="KubeRay's RayCluster of the RayService",
    )
    uid = service["metadata"]["uid"]

    kube.kubectl(
        "patch", "federation", "served", "--type=merge", "-p", '{"spec": {"serve": {"replicas": 3}}}',
        namespace=namespace,
    )  # fmt: skip
    resized = kube.wait_for(
        lambda: (s := get(kube, namespace, "rayservice", "served-serve")) and served_args(s)["replicas"] == 3 and s,
        timeout=60,
        message="the RayService patched",
    )
    assert resized["metadata"]["uid"] == uid, "patched, not replaced"
    assert names(kube, namespace, "rayjob", "served") == [job], "a change of spec.serve trains nothing"
    st = status(kube, namespace, "served")
    assert (st["phase"], st["rayJobName"], st["serveURL"]) == ("Succeeded", job, url)
    assert get(kube, namespace, "raycluster", "served-ray") is None, "nor brings back the training cluster"

    kube.kubectl(
        "patch", "federation", "served", "--type=merge", "-p", '{"spec": {"serve": null}}', namespace=namespace
    )
    kube.wait_for(lambda: get(kube, namespace, "rayservice", "served-serve") is None, timeout=60)
    kube.wait_for(lambda: not status(kube, namespace, "served").get("serveURL"), timeout=30)
    assert status(kube, namespace, "served")["phase"] == "Succeeded"


def test_deleting_the_federation_deletes_its_rayservice(kube, namespace, operator):
    apply(kube, namespace, federation("short", {"rounds": 3, "nodes": {"count": 4}, "serve": {"cpu": 0.5}}))
    succeed(kube, namespace, "short")
    kube.wait_for(lambda: get(kube, namespace, "rayservice", "short-serve"), timeout=60)
    kube.kubectl("delete", "federation", "short", "--wait=true", namespace=namespace)
    selector = "ray.io/originated-from-cr-name=short-serve"
    kube.wait_for(
        lambda: (
            get(kube, namespace, "rayservice", "short-serve") is None
            and not kube.kubectl_json("get", "rayclusters", "-l", selector, namespace=namespace)["items"]
        ),
        timeout=90,
        message="GC of the RayService and its RayCluster",
    )


def test_a_rayservice_of_the_name_that_someone_else_owns_is_left_alone(kube, namespace, operator):
    theirs = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "other-serve"},
        # kueue's: KubeRay leaves it to kueue, so it stays as written
        "spec": {
            "managedBy": "kueue.x-k8s.io/multikueue",
            "serveConfigV2": "applications: []\n",
            "rayClusterConfig": {
                "headGroupSpec": {"template": {"spec": {"containers": [{"name": "h", "image": "x"}]}}}
            },
        },
    }
    apply(kube, namespace, theirs)
    before = get(kube, namespace, "rayservice", "other-serve")
    apply(kube, namespace, federation("other", {"rounds": 3, "nodes": {"count": 4}, "serve": {}}))
    succeed(kube, namespace, "other")

    def conflict():
        st = status(kube, namespace, "other")
        ready = {c["type"]: c for c in st.get("conditions") or []}.get("Ready") or {}
        return st.get("reason") == "Conflict" and "RayService other-serve" in ready.get("message", "") and st

    st = kube.wait_for(conflict, timeout=60, message="the conflict reported")
    assert st["phase"] == "Succeeded" and not st.get("serveURL")
    events = kube.kubectl_json("get", "events", "--field-selector", "involvedObject.name=other", namespace=namespace)
    assert any(e["reason"] == "Conflict" and "RayService other-serve" in e["message"] for e in events["items"])
    kube.kubectl("delete", "federation", "other", "--wait=true", namespace=namespace)
    after = get(kube, namespace, "rayservice", "other-serve")
    assert after is not None and after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"] == before["spec"]
