"""Federations queued by the real Kueue, on the suite's real node: quota, priority and preemption, suspension.

`tests/cluster/ctl up` runs Kueue's manager (sigs.k8s.io/kueue v0.17.0) with its webhooks and its RayCluster
integration. Each test gives its namespace a ClusterQueue whose quota holds exactly one Federation's Pods
(a head and a worker of 500m and 3Gi + 2Gi), and a LocalQueue in front of it; the Federations carry the
label kueue.x-k8s.io/queue-name. The chart is installed with its default values.

Continuity is measured against the same Federation run uninterrupted by `red run` on this machine (the
identical driver, on an embedded Ray): a run that was preempted or suspended and resumed must end with the
same accuracy, and must never train a round twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.e2e.real_node import (
    diagnose,
    federation,
    red_fetch,
    slow_federation,
    wait_for_round,
    wait_for_the_end,
)
from tests.e2e.test_e2e import Watch
from tests.operator.test_operator_cluster import status

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("chart")]

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE = "kueue.x-k8s.io/v1beta2"
LOCAL_QUEUE = "team"
SLOW_ROUNDS = 12


@pytest.fixture
def queue(kube, node_namespace: str):
    """A ClusterQueue with room for one Federation, for this namespace only, and its LocalQueue. Lower
    priorities are preempted within it."""
    name = f"cq-{uuid.uuid4().hex[:8]}"
    docs = [
        {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": "red-test-default"}},
        {
            "apiVersion": KUEUE,
            "kind": "ClusterQueue",
            "metadata": {"name": name},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": node_namespace}},
                "preemption": {"withinClusterQueue": "LowerPriority"},
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu", "memory"],
                        "flavors": [
                            {
                                "name": "red-test-default",
                                "resources": [
                                    {"name": "cpu", "nominalQuota": "1"},
                                    {"name": "memory", "nominalQuota": "5Gi"},
                                ],
                            }
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": KUEUE,
            "kind": "LocalQueue",
            "metadata": {"name": LOCAL_QUEUE, "namespace": node_namespace},
            "spec": {"clusterQueue": name},
        },
        *(
            {"apiVersion": KUEUE, "kind": "WorkloadPriorityClass", "metadata": {"name": f"red-test-{p}"}, "value": v}
            for p, v in (("low", 10), ("high", 1000))
        ),
    ]
    for doc in docs:
        kube.apply(doc)
    yield LOCAL_QUEUE
    kube.kubectl("delete", "clusterqueue", name, "--wait=false", check=False)


def queued(doc: dict, priority: str = "") -> dict:
    doc["metadata"].setdefault("labels", {})[QUEUE_LABEL] = LOCAL_QUEUE
    doc["spec"]["ray"]["keepCluster"] = False  # a finished Federation gives its quota back
    if priority:
        doc["spec"]["priorityClassName"] = f"red-test-{priority}"
    return doc


def slow(name: str) -> dict:
    doc = slow_federation(name)
    doc["spec"]["rounds"] = SLOW_ROUNDS
    return doc


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> float:
    """The final accuracy of the slow Federation run start to end by `red run` (the same driver, embedded Ray)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    manifest = out / "federation.yaml"
    manifest.write_text(yaml.safe_dump(slow("reference")))
    proc = subprocess.run(
        [sys.executable, "-m", "red_runtime.apps.cli", "run", str(manifest), "--out", str(out / "run")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["rounds_run"] == SLOW_ROUNDS
    return summary["final_accuracy"]


def condition(doc: dict, kind: str) -> dict:
    return next((c for c in doc.get("conditions") or [] if c["type"] == kind), {})


def wait_for_phase(kube, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 600) -> dict:
    return kube.wait_for(
        lambda: (s := status(kube, namespace, name)).get("phase") in phases and s,
        timeout=timeout,
        interval=1,
        message=lambda: (
            f"{name} in {phases}: {json.dumps(status(kube, namespace, name))[:1500]}\n" + diagnose(kube, namespace)
        ),
    )


def rounds_in_metrics(kube, namespace: str, name: str, to: Path) -> list[int]:
    """The rounds in the run's metrics.jsonl, from the Federation's storage (`red fetch`)."""
    red_fetch(kube, name, "-n", namespace, "--to", str(to))
    lines = (to / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["round"] for line in lines if line.strip()]


def reported_rounds(rows: list[list[str]]) -> list[int]:
    return [int(r[0].split("/")[0]) for r in rows if r and r[0] != "<none>"]


def test_a_federation_waits_in_the_queue_until_the_one_before_it_is_done(kube, node_namespace: str, queue: str):
    namespace = node_namespace
    kube.apply(queued(federation("first")), namespace=namespace)
    wait_for_phase(kube, namespace, "first", ("Provisioning", "Running"))
    kube.apply(queued(federation("second")), namespace=namespace)

    waiting = wait_for_phase(kube, namespace, "second", ("Queued",), timeout=120)
    held = condition(waiting, "Queued")
    assert held["status"] == "True" and f"LocalQueue {queue}" in held["message"], held
    assert "Workload raycluster-second-ray" in held["message"] or "no Workload yet" in held["message"], held
    # What `kubectl get fed` shows: READY False, PHASE Queued; and no Pod of its own yet.
    row = kube.kubectl("get", "fed", "second", "--no-headers", namespace=namespace).stdout.split()
    assert row[1:3] == ["False", "Queued"], row
    assert not kube.kubectl_json("get", "pods", "-l", "ray.io/cluster=second-ray", namespace=namespace)["items"]
    # Kueue's own reason reaches the condition once its Workload exists.
    message = kube.wait_for(
        lambda: (
            "Workload raycluster-second-ray"
            in (m := condition(status(kube, namespace, "second"), "Queued").get("message", ""))
            and m
        ),
        timeout=120,
        message="Kueue's Workload in the Queued condition",
    )
    assert "quota" in message, message

    first = wait_for_the_end(kube, namespace, "first", 3)
    second = wait_for_the_end(kube, namespace, "second", 3)
    # The second driver started only after the first had finished and given its quota back.
    assert second["startTime"] >= first["completionTime"], (first, second)
    assert condition(second, "Queued")["status"] == "False" and condition(second, "Queued")["reason"] == "Admitted"


def test_a_high_priority_federation_preempts_a_low_one_which_resumes_without_repeating_a_round(
    kube, node_namespace: str, queue: str, uninterrupted: float, tmp_path: Path
):
    namespace = node_namespace
    kube.apply(queued(slow("low"), "low"), namespace=namespace)
    watch = Watch(kube, namespace, "low")
    before = wait_for_round(kube, namespace, "low", 2)
    assert before["round"] < SLOW_ROUNDS - 3, "the run would end before the preemption"
    kube.apply(queued(federation("high"), "high"), namespace=namespace)

    # Kueue evicts the low one: Queued again, saying why and where it will resume.
    evicted = wait_for_phase(kube, namespace, "low", ("Queued",), timeout=180)
    assert evicted["reason"] == "Preempted", evicted
    assert f"LocalQueue {queue}" in condition(evicted, "Queued")["message"]
    # Its driver stopped after its round and wrote a checkpoint (checkpoints are off in its spec).
    stopped = kube.wait_for(
        lambda: (s := status(kube, namespace, "low")).get("driverStopped") and s,
        timeout=120,
        message="a stopped driver",
    )
    saved = stopped["lastCheckpoint"]["round"]
    assert saved >= before["round"], stopped

    high = wait_for_the_end(kube, namespace, "high", 3)
    low = wait_for_the_end(kube, namespace, "low", SLOW_ROUNDS)
    time.sleep(1)  # the watch prints the last version
    rows = watch.stop()
    assert low["startTime"] >= high["completionTime"], (low, high)

    # Rounds done before the preemption, and after: the resumed driver started after the checkpoint.
    assert low["resumedFrom"] == saved and low["round"] == SLOW_ROUNDS, low
    # No round was trained twice: once the checkpoint was reported, progress never went back before it...
    reported = reported_rounds(rows)
    after = reported[reported.index(saved) :]
    assert min(after) >= saved and after == sorted(after), rows
    # ...and metrics.jsonl holds every round once, in order.
    assert rounds_in_metrics(kube, namespace, "low", tmp_path / "low") == list(range(1, SLOW_ROUNDS + 1))
    # It ends where an uninterrupted run of the same spec and seed ends.
    assert round(low["metrics"]["accuracy"], 4) == round(uninterrupted, 4), (low["metrics"], uninterrupted)


def test_suspending_mid_run_then_resuming_continues_after_the_checkpoint_it_wrote(
    kube, node_namespace: str, queue: str, uninterrupted: float, tmp_path: Path
):
    namespace, name = node_namespace, "paused"
    kube.apply(queued(slow(name)), namespace=namespace)
    before = wait_for_round(kube, namespace, name, 2)
    kube.kubectl("patch", "fed", name, "--type=merge", "-p", '{"spec":{"suspend":true}}', namespace=namespace)

    wait_for_phase(kube, namespace, name, ("Suspended",), timeout=60)
    stopped = kube.wait_for(
        lambda: (s := status(kube, namespace, name)).get("driverStopped") and s, timeout=120, message="a stopped driver"
    )
    saved = stopped["lastCheckpoint"]["round"]
    assert saved >= before["round"], stopped
    kube.wait_for(
        lambda: not kube.kubectl_json("get", "pods", "-l", f"ray.io/cluster={name}-ray", namespace=namespace)["items"],
        timeout=180,
        message="the suspended Federation's Pods to go",
    )
    watch = Watch(kube, namespace, name)
    kube.kubectl("patch", "fed", name, "--type=merge", "-p", '{"spec":{"suspend":false}}', namespace=namespace)

    final = wait_for_the_end(kube, namespace, name, SLOW_ROUNDS)
    time.sleep(1)
    rows = watch.stop()
    assert final["resumedFrom"] == saved, final
    resumed = [r for r in reported_rounds(rows) if r]
    assert resumed and min(resumed) >= saved, rows
    assert rounds_in_metrics(kube, namespace, name, tmp_path / name) == list(range(1, SLOW_ROUNDS + 1))
    assert round(final["metrics"]["accuracy"], 4) == round(uninterrupted, 4), (final["metrics"], uninterrupted)


def test_a_spec_kueue_cannot_queue_is_refused_with_the_field_named(kube, node_namespace: str, queue: str):
    namespace = node_namespace
    doc = queued(federation("wide"))
    doc["spec"]["ray"]["workerGroups"] = [
        {"name": f"g{i}", "replicas": 1, "cpu": "100m", "memory": "256Mi"} for i in range(8)
    ]
    kube.apply(doc, namespace=namespace)
    refused = wait_for_phase(kube, namespace, "wide", ("Failed",), timeout=60)
    assert refused["reason"] == "InvalidSpec", refused
    assert "spec.ray.workerGroups: 8 groups" in condition(refused, "Ready")["message"], refused
    assert kube.kubectl("get", "raycluster", "wide-ray", namespace=namespace, check=False).returncode != 0
