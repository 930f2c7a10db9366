"""The suite's real node for the e2e tests that run Red's images in real Pods: the fixtures (the node, the
chart installed with its default values) and the helpers those tests share (a Federation sized for this
machine, waiting for its end or a round, what to print when it does not come, `red fetch`).

tests/e2e/conftest.py makes the fixtures available to every test here; a test file that needs the chart says
`pytest.mark.usefixtures("chart")`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import yaml

from red_api.spec import RaySpec
from tests.helm.conftest import CHART, Helm
from tests.operator.test_operator_cluster import status

NODE = "red-node"  # tests/cluster/node.sh
ROUNDS = 3
SLOW_ROUNDS = 20  # slow_federation's
RUNTIME_IMAGE = RaySpec().image  # what a Federation runs unless it names another, built by the suite


@pytest.fixture
def real_node(kube) -> None:
    """The suite's real node (tests/cluster/node.sh), with Red's images loaded."""
    if os.environ.get("RED_TEST_KUBECONFIG"):
        pytest.skip("needs the suite's real node with Red's images loaded (tests/cluster/ctl up)")
    if kube.kubectl("get", "node", NODE, check=False).returncode != 0:
        pytest.fail(f"no Node {NODE}: tests/cluster/ctl up starts it (RED_CLUSTER_NODE=0 leaves it out)")


def federation(name: str) -> dict:
    """Two nodes on digits, one worker Pod; sized for a 2-core machine (requests are also limits)."""
    spec = {
        "rounds": ROUNDS,
        "topology": {"kind": "star"},
        "nodes": {"count": 2, "role": "train-eval", "resources": {"cpu": 0.5}},
        "placement": {"strategy": "SPREAD"},
        "algorithm": {"name": "fedavg"},
        "task": {
            "dataset": {"name": "digits"},
            "partition": {"kind": "iid"},
            "model": {"name": "mlp", "hidden": [32]},
            "train": {"epochs": 2, "batchSize": 32, "optimizer": "sgd", "lr": 0.1},
            "seed": 0,
        },
        "ray": {
            "head": {"cpu": "500m", "memory": "3Gi"},
            "workerGroups": [{"name": "cpu", "replicas": 1, "cpu": "500m", "memory": "2Gi"}],
            "keepCluster": True,
        },
    }
    return {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": name}, "spec": spec}


def diagnose(kube, namespace: str) -> str:
    """What a user would look at when it does not finish: Pods, events, the head's log."""
    out = [kube.kubectl("get", "pods", "-o", "wide", namespace=namespace, check=False).stdout]
    out.append(
        kube.kubectl("get", "events", "--sort-by=.lastTimestamp", namespace=namespace, check=False).stdout[-4000:]
    )
    for name in kube.kubectl("get", "pods", "-o", "name", namespace=namespace, check=False).stdout.split():
        log = kube.kubectl("logs", name, "--all-containers", "--tail=40", namespace=namespace, check=False)
        out.append(f"--- {name}\n{log.stdout}{log.stderr}")
    return "\n".join(out)


def pods_of(kube, namespace: str, selector: str) -> list[dict]:
    return kube.kubectl_json("get", "pods", "-l", selector, namespace=namespace)["items"]


def ray_list(kube, namespace: str, head: dict, what: str) -> list[dict]:
    """`ray list WHAT` in the head Pod: Ray's own record of its nodes, actors, jobs."""
    cmd = ["exec", head["metadata"]["name"], "-c", head["spec"]["containers"][0]["name"], "--"]
    cmd += ["ray", "list", what, "--detail", "--format", "yaml", "--limit", "1000"]
    return yaml.safe_load(kube.kubectl(*cmd, namespace=namespace).stdout)


def node_hosts_in(kube, namespace: str, head: dict, pod: dict) -> list[dict]:
    """The node actors (NodeHost) that Ray placed in `pod`, alive or, after the run, killed by the driver."""
    nodes = [n["node_id"] for n in ray_list(kube, namespace, head, "nodes") if n["node_ip"] == pod["status"]["podIP"]]
    actors = ray_list(kube, namespace, head, "actors")
    return [a for a in actors if a["class_name"] == "NodeHost" and a["node_id"] in nodes]


def wait_for_the_end(kube, namespace: str, name: str, rounds: int) -> dict:
    """The Federation's final status, once it has Succeeded after all its rounds (else what went wrong)."""
    final = kube.wait_for(
        lambda: (s := status(kube, namespace, name)).get("phase") in ("Succeeded", "Failed") and s,
        timeout=900,
        interval=2,
        message=lambda: (
            f"the end of {name}: {json.dumps(status(kube, namespace, name))[:1500]}\n" + diagnose(kube, namespace)
        ),
    )
    assert final["phase"] == "Succeeded", json.dumps(final, indent=1) + "\n" + diagnose(kube, namespace)
    assert (final["round"], final["progress"]) == (rounds, f"{rounds}/{rounds}"), final
    return final


@pytest.fixture
def chart(real_node, helm: Helm, node_namespace: str) -> Iterator[str]:  # noqa: F811
    """The chart, installed as its README says, with its default values; uninstalled afterwards. The CRD
    exists already, shared with the other tests: --take-ownership adopts it (byte-identical)."""
    name = f"red-{uuid.uuid4().hex[:6]}"
    args = ("--namespace", node_namespace, "--take-ownership", "--wait", "--timeout", "5m")
    helm.run("install", name, CHART, *args, timeout=360)
    yield name
    helm.run("uninstall", name, "--namespace", node_namespace, "--wait", check=False)


def progress(doc: dict) -> int:
    """The round the driver last reported (status.progress is "k/R")."""
    return int(doc.get("progress", "0/0").split("/")[0])


def wait_for_round(kube, namespace: str, name: str, at_least: int) -> dict:
    return kube.wait_for(
        lambda: (s := status(kube, namespace, name)) and progress(s) >= at_least and s,
        timeout=600,
        interval=1,
        message=lambda: (
            f"round {at_least} of {name}: {json.dumps(status(kube, namespace, name))[:1500]}\n"
            + diagnose(kube, namespace)
        ),
    )


def slow_federation(name: str) -> dict:
    """Rounds of about 3 s on half a core (digits trains in well under one otherwise): a Pod deleted after
    the first rounds dies while the federation trains, with time left to see it through."""
    doc = federation(name)
    doc["spec"]["rounds"] = SLOW_ROUNDS
    doc["spec"]["task"]["model"]["hidden"] = [128]
    doc["spec"]["task"]["train"].update(epochs=20, batchSize=8)
    return doc


def delete_pod(kube, namespace: str, pod: dict) -> None:
    # As a node that fails does: the containers stop at once (a second's grace), mid-round.
    kube.kubectl("delete", "pod", pod["metadata"]["name"], "--grace-period=1", "--wait=false", namespace=namespace)


def red_fetch(kube, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": kube.kubeconfig}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        env.pop(key, None)  # what red fetch needs comes from the cluster, not from this test
    proc = subprocess.run(
        [sys.executable, "-m", "red_runtime.apps.cli", "fetch", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def accuracies(stdout: str) -> tuple[float, float]:
    """What red fetch printed: the accuracy the run reported, and the fetched model's, measured again."""
    reported = float(re.search(r"final accuracy (\d\.\d+)", stdout).group(1))
    measured = float(re.search(r"on the test set: accuracy (\d\.\d+)", stdout).group(1))
    return reported, measured
