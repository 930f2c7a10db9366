"""What a Federation leaves behind, on the suite's real node: the chart installed with its default values,
a Federation run to Succeeded in a namespace that enforces Pod Security `restricted`, and `red fetch`.

The claim is bound by the suite's hostPath provisioner (the default StorageClass); object storage is moto's
S3 server, listening on the node's bridge address so that the head Pod reaches it as it would reach S3.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from pyarrow import fs

from tests.e2e.real_node import (
    accuracies,
    diagnose,
    federation,
    red_fetch,
    wait_for_the_end,
)
from tests.operator.test_operator_cluster import status

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("chart")]

NODE_IP = "10.88.0.1"  # tests/cluster/node.sh: the bridge's address, where Pods reach the host


def test_the_model_outlives_the_head_on_its_claim_and_red_fetch_brings_back_what_was_reported(
    kube, node_namespace: str, tmp_path
):
    namespace, name = node_namespace, "stored"
    doc = federation(name)
    doc["spec"]["ray"]["keepCluster"] = False  # the head Pod goes when the job ends: the claim stays
    kube.apply(doc, namespace=namespace)
    final = wait_for_the_end(kube, namespace, name, 3)
    assert final["artifacts"] == {
        "model": f"pvc://{name}-storage/{name}/model.pt",
        "metrics": f"pvc://{name}-storage/{name}/metrics.jsonl",
        "checkpoint": f"pvc://{name}-storage/{name}/checkpoints/",
    }
    wide = kube.kubectl("get", "fed", name, "-o", "wide", namespace=namespace).stdout
    assert f"pvc://{name}-storage/{name}/model.pt" in wide, wide
    kube.wait_for(
        lambda: (
            not kube.kubectl_json(
                "get", "pods", "-l", f"ray.io/cluster={final['rayClusterName']}", namespace=namespace
            )["items"]
        ),
        timeout=180,
        message="the RayCluster's Pods to go",
    )

    proc = red_fetch(kube, name, "-n", namespace, "--to", str(tmp_path / "got"), "--evaluate")
    reported, measured = accuracies(proc.stdout)
    assert reported == measured and abs(measured - final["metrics"]["accuracy"]) <= 1e-4, proc.stdout
    assert {"model.pt", "metrics.jsonl", "summary.json", "metrics.png", "federation.yaml"} <= {
        p.name for p in (tmp_path / "got").iterdir()
    }
    # The fetch Pod (admitted by `restricted`, like every Pod here) is gone again.
    assert not kube.kubectl_json("get", "pods", "-l", "app.kubernetes.io/managed-by=red-fetch", namespace=namespace)[
        "items"
    ]
    # storage.retain (the default): deleting the Federation keeps its claim, and with it the model.
    kube.kubectl("delete", "fed", name, "--wait=true", namespace=namespace)
    claim = kube.kubectl_json("get", "pvc", f"{name}-storage", namespace=namespace)
    assert claim["status"]["phase"] == "Bound" and not claim["metadata"].get("deletionTimestamp")


@pytest.fixture
def node_s3():
    """moto's S3 server on the node's bridge address, reachable from Pods and from here; a bucket in it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=NODE_IP, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = f"red-{uuid.uuid4().hex[:8]}"
    fs.S3FileSystem(
        access_key="red",
        secret_key="red-secret",
        endpoint_override=endpoint,
        region="us-east-1",
        allow_bucket_creation=True,
    ).create_dir(bucket)
    yield endpoint, bucket
    server.stop()


def test_a_federation_waits_for_its_secret_then_writes_to_object_storage_and_red_fetch_reads_it(
    kube, node_namespace: str, node_s3, tmp_path
):
    namespace, name = node_namespace, "in-s3"
    endpoint, bucket = node_s3
    secret_key = f"never-shown-{uuid.uuid4().hex[:8]}"
    doc = federation(name)
    doc["spec"]["storage"] = {"uri": f"s3://{bucket}/feds", "secretRef": {"name": "s3-creds"}}
    doc["spec"]["checkpoint"] = {"every": 1}
    kube.apply(doc, namespace=namespace)

    # No Secret yet: the kubelet cannot start the head, and the operator, which has no rights on Secrets,
    # reads that off the Pod into a condition that says what to create (within a resync, 60 s).
    waiting = kube.wait_for(
        lambda: (s := status(kube, namespace, name)).get("reason") == "StorageUnavailable" and s,
        timeout=240,
        message=lambda: json.dumps(status(kube, namespace, name)) + "\n" + diagnose(kube, namespace),
    )
    storage = {c["type"]: c for c in waiting["conditions"]}["StorageReady"]
    assert storage["status"] == "False" and "spec.storage.secretRef.name: 's3-creds'" in storage["message"]
    assert waiting["phase"] == "Pending"

    values = {"AWS_ACCESS_KEY_ID": "red", "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_ENDPOINT_URL": endpoint}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-creds"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }
    kube.apply(secret, namespace=namespace)
    final = wait_for_the_end(kube, namespace, name, 3)
    base = f"s3://{bucket}/feds/{name}"
    assert final["artifacts"]["model"] == f"{base}/model.pt", final
    assert not kube.kubectl_json("get", "pvc", namespace=namespace)["items"], "object storage needs no claim"

    proc = red_fetch(kube, name, "-n", namespace, "--to", str(tmp_path / "got"), "--evaluate")
    reported, measured = accuracies(proc.stdout)
    assert reported == measured and abs(measured - final["metrics"]["accuracy"]) <= 1e-4, proc.stdout
    assert [p.name for p in (tmp_path / "got" / "checkpoints").iterdir() if p.suffix == ".pt"], "checkpoints too"
    # The credentials are in the Secret only: not in the status, the Events or the operator's children.
    shown = kube.kubectl("get", "fed", name, "-o", "yaml", namespace=namespace).stdout
    shown += kube.kubectl("get", "events,rayclusters,rayjobs", "-o", "yaml", namespace=namespace).stdout
    assert secret_key not in shown, diagnose(kube, namespace)
