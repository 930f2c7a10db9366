"""spec.serve on the suite's real node: the chart installed with its defaults, a Federation trained in real
Pods, then the operator's RayService serving the model from the Federation's claim in Red's runtime image.

A user inside the cluster calls status.serveURL; here that call is made from a Pod of the namespace (the
RayService's head, which has Python), through the Service's DNS name, as any client Pod would.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from red_api.manifest import load_manifest
from red_api.names import MANIFEST
from red_runtime.apps.artifacts import load_model
from tests.e2e.real_node import (
    diagnose,
    federation,
    red_fetch,
    wait_for_the_end,
)
from tests.operator.test_operator_cluster import status

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("chart")]

EXAMPLES = 20

# Runs in the serving head Pod: POST the examples to the serve URL, print the answer and the status codes.
CLIENT = """
import json, sys, urllib.request, urllib.error
url, body = sys.argv[1], sys.argv[2]
def call(path, data=None):
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
out = {"health": call("/healthz"), "predict": call("/predict", body.encode()),
       "bad": call("/predict", b'{"inputs": [[0.5, 0.5]]}')}
print(json.dumps(out))
"""


def serving_head(kube, namespace: str, service: str) -> dict:
    cluster = kube.kubectl_json("get", "rayservice", service, namespace=namespace)["status"]["activeServiceStatus"][
        "rayClusterName"
    ]
    pods = kube.kubectl_json(
        "get", "pods", "-l", f"ray.io/cluster={cluster},ray.io/node-type=head", namespace=namespace
    )["items"]
    return pods[0]


def test_a_served_federation_answers_predict_from_a_pod_with_the_trained_models_predictions(
    kube, node_namespace: str, tmp_path
):
    namespace, name = node_namespace, "served"
    doc = federation(name)
    doc["spec"]["ray"]["keepCluster"] = False  # the training Pods go: the serving Pods need the room
    doc["spec"]["serve"] = {"replicas": 1, "cpu": 0.5}
    kube.apply(doc, namespace=namespace)
    wait_for_the_end(kube, namespace, name, 3)

    url = f"http://{name}-serve-serve-svc.{namespace}.svc:8000"
    final = kube.wait_for(
        lambda: (
            (s := status(kube, namespace, name)).get("serveURL") == url
            and {c["type"]: c for c in s["conditions"]}.get("Serving", {}).get("status") == "True"
            and s
        ),
        timeout=600,
        interval=3,
        message=lambda: (
            f"Serving=True on {name}: {json.dumps(status(kube, namespace, name))[:1500]}\n" + diagnose(kube, namespace)
        ),
    )
    service = kube.kubectl_json("get", "rayservice", f"{name}-serve", namespace=namespace)
    owner = service["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Federation", name, True)

    # What the model, fetched from the claim and evaluated here, predicts for the first test examples.
    red_fetch(kube, name, "-n", namespace, "--to", str(tmp_path / "got"))
    model, source = load_model(load_manifest(str(tmp_path / "got" / MANIFEST)), tmp_path / "got")
    x = source.test_set().x[:EXAMPLES]
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()

    head = serving_head(kube, namespace, f"{name}-serve")
    body = json.dumps({"inputs": x.reshape(EXAMPLES, -1).tolist()})
    container = head["spec"]["containers"][0]["name"]
    proc = kube.kubectl(
        "exec", head["metadata"]["name"], "-c", container, "--", "python", "-c", CLIENT, url, body, namespace=namespace
    )
    answers = json.loads(proc.stdout.strip().splitlines()[-1])
    code, health = answers["health"]
    assert code == 200 and health["run"] == name and health["input_shape"] == list(x.shape[1:]), answers
    code, predicted = answers["predict"]
    assert code == 200, answers
    assert predicted["predictions"] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose(np.array(predicted["probabilities"]), expected, atol=1e-5)
    code, bad = answers["bad"]
    assert code == 400 and "expected a list of 64 numbers" in bad["error"], answers
    assert final["phase"] == "Succeeded"
