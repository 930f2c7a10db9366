"""`kubectl apply` to Succeeded (or Failed) through every real component; see conftest.py for what is simulated."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from red_api.spec import parse_manifest
from red_operator import builders
from tests.e2e.conftest import head_service_host, hosts_entry
from tests.e2e.models import MESSAGE
from tests.operator.test_operator_cluster import apply, names, status
from tests.runtime.conftest import example, rounds_done

pytestmark = pytest.mark.e2e

ROUNDS = 6


def federation(name: str, **spec_overrides) -> dict:
    """The digits-star example, smaller, with the head Pod sized for kwok and HTTPMode submission."""
    ray = {"submissionMode": "HTTPMode", "head": {"cpu": "1", "memory": "1Gi"}}
    doc = example("digits-star", **{"rounds": ROUNDS, "nodes.count": 4, "ray": ray, **spec_overrides})
    doc["metadata"] = {"name": name}
    return doc


class Watch:
    """`kubectl get fed NAME -w` in the background: every version of the row a user would see scroll by."""

    def __init__(self, kube, namespace: str, name: str):
        columns = "ROUND:.status.progress,ACCURACY:.status.metrics.accuracy,PHASE:.status.phase"
        cmd = [kube.kubectl_path, "--kubeconfig", kube.kubeconfig, "-n", namespace, "get", "federation", name]
        self.proc = subprocess.Popen(
            [*cmd, "-w", "--no-headers", "-o", f"custom-columns={columns}"], stdout=subprocess.PIPE, text=True
        )
        self.rows: list[list[str]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.rows.append(line.split())

    def stop(self) -> list[list[str]]:
        self.proc.terminate()
        self.proc.wait(10)
        self._thread.join(5)
        return self.rows


def run_on_the_stack(kube, namespace, ray_head, tmp_path, doc, env=None) -> tuple[dict, list[list[str]], object]:
    """Apply `doc`, play its head Pod with a real Ray holding the driver's token, wait for the end."""
    name = doc["metadata"]["name"]
    cluster = builders.raycluster_name(name)
    host = head_service_host(cluster, namespace)
    # The head Service is headless: cluster DNS gives the kwok Pod's IP, which nothing here serves (a proxy
    # on the default route answers 404 and keeps the connection alive). Point the name at this machine
    # before KubeRay first asks, so its submissions are refused until the head below is up.
    with hosts_entry(host):
        apply(kube, namespace, doc)
        watch = Watch(kube, namespace, name)
        driver_sa = builders.driver_name(name)
        kube.wait_for(lambda: names(kube, namespace, "serviceaccount", name) == [driver_sa], timeout=60)
        token = kube.service_account_token(namespace, driver_sa)
        ray_token = kube.wait_for(
            lambda: kube.kubectl_json("get", "secret", cluster, namespace=namespace)["data"]["auth_token"],
            timeout=90,
            message=f"KubeRay's Ray auth Secret of {cluster}",
        )
        kubeconfig = kube.token_kubeconfig(token, tmp_path / "driver.kubeconfig")
        head = ray_head(kubeconfig, base64.b64decode(ray_token).decode(), env)
        kube.wait_for(
            lambda: kube.kubectl_json("get", "svc", host.split(".")[0], namespace=namespace),
            timeout=90,
            message=f"KubeRay's head Service of {cluster}",
        )
        # KubeRay was refused while the head started and now backs off exponentially (minutes, after a slow
        # start); a change to the RayJob makes it try again at once, as a real head Pod turning Ready would.
        kube.kubectl(
            "annotate", "rayjob", "--all", f"red.test/head-up={time.time():.0f}", "--overwrite", namespace=namespace
        )
        final = kube.wait_for(
            lambda: (s := status(kube, namespace, name)).get("phase") in ("Succeeded", "Failed") and s,
            timeout=420,
            interval=1,
            message=lambda: f"the end of {name}: {json.dumps(status(kube, namespace, name))[:2000]}",
        )
    time.sleep(1)  # the watch prints the last version
    return final, watch.stop(), head


def test_a_model_that_raises_fails_the_federation_with_its_error(kube, namespace, operator, ray_head, tmp_path):
    doc = federation("e2e-boom", **{"task.model": {"name": "tests.e2e.models:ExplodingModel"}})
    final, _, _ = run_on_the_stack(kube, namespace, ray_head, tmp_path, doc)
    assert final["phase"] == "Failed"
    failed = {c["type"]: c for c in final["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "AppFailed"
    assert MESSAGE in failed["message"], failed["message"]
    assert MESSAGE in final["driverError"]
    row = kube.kubectl("get", "fed", "e2e-boom", "--no-headers", namespace=namespace).stdout.split()
    assert row[1:3] == ["False", "Failed"]


def test_a_failed_attempt_is_retried_and_the_driver_resumes(kube, namespace, operator, ray_head, tmp_path):
    """A driver attempt dies in round 3; the operator starts a second RayJob on the same RayCluster
    (faultTolerance.maxJobRetries), whose driver resumes from the checkpoint and finishes the federation."""
    overrides = {
        "task.model": {"name": "tests.e2e.models:CrashOnceModel"},
        "checkpoint": {"every": 1},  # in the run folder on its storage, which both attempts share
        "faultTolerance.maxJobRetries": 1,
    }
    env = {"RED_TEST_CRASH_MARKER": str(tmp_path / "crashed"), "RED_TEST_CRASH_AFTER": "200"}  # ~2 rounds
    final, _, head = run_on_the_stack(kube, namespace, ray_head, tmp_path, federation("e2e-retry", **overrides), env)
    assert (tmp_path / "crashed").exists(), "the first attempt never crashed"
    assert final["phase"] == "Succeeded", json.dumps(final, indent=1)
    assert final["attempts"] == 2 and final["rayJobName"].endswith("-2")
    assert (final["round"], final["progress"], final["lastCheckpoint"]["round"]) == (
        ROUNDS,
        f"{ROUNDS}/{ROUNDS}",
        ROUNDS,
    )
    # Both attempts ran on the one Ray cluster (this head): the operator kept it between them.
    attempts = head.jobs()
    assert sorted(j["status"] for j in attempts) == ["FAILED", "SUCCEEDED"]
    retried = next(j for j in attempts if j["status"] == "SUCCEEDED")
    resumed = re.search(r"resuming after round (\d+)", head.logs(retried["submission_id"]))
    assert resumed and 1 <= int(resumed.group(1)) < ROUNDS, "the second attempt started over"


def test_status_reports_survive_an_api_server_outage(kube, namespace, relay, tmp_path):
    """The driver, cut off from the API server for 6 s mid-run, keeps training; its final status lands, and
    the operator's fields (written here first, as the operator would) are untouched by its patches."""
    doc = federation("outage", rounds=12)
    apply(kube, namespace, doc)
    fed = parse_manifest(kube.kubectl_json("get", "federation", "outage", namespace=namespace))
    for child in builders.build_rbac(fed):
        kube.apply(child, namespace=namespace)
    operator_fields = {
        "phase": "Running",
        "reason": "JobRunning",
        "observedGeneration": 1,
        "rayJobName": "outage-abcde-1",
        "conditions": [{"type": "Ready", "status": "True", "reason": "JobRunning", "message": "running"}],
    }
    kube.kubectl(
        "patch", "federation", "outage", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": operator_fields}), namespace=namespace,
    )  # fmt: skip
    token = kube.service_account_token(namespace, builders.driver_name("outage"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["KUBECONFIG"] = str(kube.token_kubeconfig(token, tmp_path / "driver.kubeconfig", server=relay.url))
    out = tmp_path / "run"
    driver = subprocess.Popen(
        [sys.executable, "-m", "red_runtime.apps.launch", "--federation", f"{namespace}/outage", "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        kube.wait_for(lambda: rounds_done(out) >= 2, timeout=240, interval=0.1, message="round 2")
        relay.cut()
        cut_at = rounds_done(out)
        time.sleep(6)
        trained_while_cut = rounds_done(out) - cut_at
        relay.restore()
        output, _ = driver.communicate(timeout=300)
    finally:
        driver.kill()
    assert driver.returncode == 0, output[-4000:]
    assert "status patch failed" in output, "the outage never reached the driver"
    assert trained_while_cut >= 1, "training stalled while the API server was away"
    st = status(kube, namespace, "outage")
    assert (st["round"], st["progress"], st["nodesReady"]) == (12, "12/12", "4/4")
    assert st["completionTime"] and st["nodeCounts"]["Healthy"] == 4 == sum(st["nodeCounts"].values())
    assert {k: st[k] for k in operator_fields} == operator_fields


def test_a_sweep_runs_on_the_federations_cluster_and_reports_its_trials_and_best(
    kube, namespace, operator, ray_head, tmp_path
):
    """spec.sweep: the RayJob's driver runs a Ray Tune sweep on the Federation's own Ray cluster; the status
    counts the trials, names the best, and the ACCURACY column shows the best trial's accuracy."""
    sweep = {"params": ["task.train.lr=grid:0.02,0.2"], "samples": 1, "scheduler": "fifo"}
    doc = federation("e2e-sweep", rounds=3, sweep=sweep)
    final, rows, _ = run_on_the_stack(kube, namespace, ray_head, tmp_path, doc)
    assert final["phase"] == "Succeeded", json.dumps(final, indent=1)
    assert final["trials"] == {"total": 2, "running": 0, "done": 2, "stopped": 0, "failed": 0}
    best = final["best"]
    assert best["trial"] in ("e2e-sweep-00000", "e2e-sweep-00001")
    assert best["config"]["task.train.lr"] in ("0.02", "0.2")
    assert final["metrics"]["accuracy"] == best["accuracy"] > 0.5
    assert final["progress"] == "2/2 trials" and final["artifacts"]["model"].endswith("/e2e-sweep/model.pt")
    row = kube.kubectl("get", "fed", "e2e-sweep", "--no-headers", namespace=namespace).stdout
    assert "2/2 trials" in row and str(best["accuracy"]) in row.split(), row  # the ROUND and ACCURACY columns
    assert any(r[0] == "0/2" for r in rows), rows  # `kubectl get -w` saw the sweep start
