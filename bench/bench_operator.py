"""Operator benchmark at scale: API requests per second at steady state, resident memory, apply-to-RayJob latency.

Runs against a real control plane with the real KubeRay operator (tests/cluster/ctl up, or any cluster
KUBECONFIG names) and a real `red operator` watching one fresh namespace:

    tests/cluster/ctl up && KUBECONFIG=tests/cluster/.state/kubeconfig python bench/bench_operator.py

1. load: --federations Federations, --finished-share of them in K8sJobMode (on kwok no Ray runs, so KubeRay
   fails them: finished, their clusters released), applied --batch at a time, each batch finished before the
   next (kwok's nodes hold 440 Pods), then the rest in HTTPMode (they stay Running).
2. requests: the operator runs as a ServiceAccount of its own, and a FlowSchema matches that ServiceAccount
   alone, so the API server's apiserver_flowcontrol_dispatched_requests_total for that flow schema counts the
   operator's requests (apiserver_request_total has no user label); their rate over --window seconds of
   steady state (two resyncs at least).
3. memory: the operator process' resident set at steady state.
4. latency under that load: one more Federation at a time, from starting `kubectl apply` to the operator's
   RayJob arriving on a watch; median over --sequential.

Prints one JSON object and a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parents[1]
LABEL = "red.dev/federation"
FLOW_SCHEMA = "red-bench-operator"
# The namespace's Pods go to kwok's fake nodes, which hold hundreds of heads at once, and never to the
# test cluster's one real node: the API server's PodNodeSelector and PodTolerationRestriction plugins
# (tests/cluster/ctl enables them) read these annotations and tolerate the taint ctl puts on kwok's CPU nodes.
KWOK_ONLY = {
    "scheduler.alpha.kubernetes.io/node-selector": "type=kwok",
    "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
        [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
    ),
}


def kubectl_binary() -> str:
    built = ROOT / "tests/cluster/.bin/kubectl"
    return str(built) if built.exists() else (shutil.which("kubectl") or "kubectl")


def kubectl(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([kubectl_binary(), *args], input=stdin, text=True, check=True, capture_output=True)
    return proc.stdout


def federation(name: str, mode: str) -> dict:
    spec = {"rounds": 3, "nodes": {"count": 4}, "ray": {"submissionMode": mode, "head": {"cpu": "1", "memory": "1Gi"}}}
    return {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": name}, "spec": spec}


class RayJobArrivals:
    """Watches RayJobs in one namespace and records when each Federation's first one arrived."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._api, self._namespace = api, namespace
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        custom = client.CustomObjectsApi(self._api)
        while True:
            stream = watch.Watch().stream(
                custom.list_namespaced_custom_object, "ray.io", "v1", self._namespace, "rayjobs", timeout_seconds=600
            )
            for event in stream:
                fed = (event["object"]["metadata"].get("labels") or {}).get(LABEL)
                with self._cond:
                    self.seen.setdefault(fed, time.perf_counter())
                    self._cond.notify_all()

    def wait(self, names: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not names <= self.seen.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(names - self.seen.keys())} Federations got no RayJob in {timeout}s")
                self._cond.wait(left)


def operator_identity(namespace: str, workdir: Path) -> Path:
    """A ServiceAccount for the operator, matched by a FlowSchema of its own; a kubeconfig with its token."""
    account = "red-operator"
    kubectl("create", "serviceaccount", account, "-n", namespace)
    kubectl("create", "clusterrolebinding", f"{namespace}-operator", "--clusterrole=cluster-admin",
            f"--serviceaccount={namespace}:{account}")  # fmt: skip
    flow = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": FLOW_SCHEMA},
        "spec": {
            "matchingPrecedence": 100,
            "priorityLevelConfiguration": {"name": "workload-high"},
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [
                        {"kind": "ServiceAccount", "serviceAccount": {"name": account, "namespace": namespace}}
                    ],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "clusterScope": True,
                            "namespaces": ["*"],
                        }
                    ],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(flow))
    token = kubectl("create", "token", account, "-n", namespace, "--duration=4h").strip()
    cluster = json.loads(kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json"))["clusters"][0]
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": account,
    }
    path = workdir / "operator.kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    return path


def operator_requests() -> float:
    """Requests the API server dispatched for the operator's FlowSchema since it started counting."""
    total = 0.0
    for line in kubectl("get", "--raw", "/metrics").splitlines():
        if (
            line.startswith("apiserver_flowcontrol_dispatched_requests_total{")
            and f'flow_schema="{FLOW_SCHEMA}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_operator(namespace: str, kubeconfig: Path) -> subprocess.Popen:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "red_runtime.apps.cli", "operator", "--namespace", namespace, "--metrics-port", "0"]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.Popen(
        [*cmd, "--liveness", f"http://127.0.0.1:{port}/healthz"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise RuntimeError("red operator did not become live")


def phases(namespace: str) -> dict[str, int]:
    out = kubectl("get", "federations", "-n", namespace, "-o", "jsonpath={range .items[*]}{.status.phase}{'\\n'}{end}")
    counts: dict[str, int] = {}
    for phase in out.splitlines():
        counts[phase or "none"] = counts.get(phase or "none", 0) + 1
    return counts


def apply_all(namespace: str, docs: list[dict]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))


def wait_phases(namespace: str, enough: Callable[[dict[str, int]], bool], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while not enough(counts := phases(namespace)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"phases after {timeout}s: {counts}")
        time.sleep(5)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--federations", type=int, default=1000)
    parser.add_argument("--finished-share", type=float, default=0.9)
    parser.add_argument("--batch", type=int, default=150, help="finished Federations applied at a time")
    parser.add_argument("--window", type=float, default=150.0, help="seconds of steady state to count requests over")
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--settle-timeout", type=float, default=1800.0)
    args = parser.parse_args()
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds/federation.yaml"))
    ns_doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "annotations": KWOK_ONLY}}
    kubectl("create", "-f", "-", stdin=json.dumps(ns_doc))
    workdir = Path(tempfile.mkdtemp(prefix="red-bench-"))
    operator = start_operator(namespace, operator_identity(namespace, workdir))
    api = config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
    arrivals = RayJobArrivals(api, namespace)
    finished = round(args.federations * args.finished_share)
    try:
        began = time.perf_counter()
        for start in range(0, finished, args.batch):
            stop = min(finished, start + args.batch)
            apply_all(namespace, [federation(f"done-{i}", "K8sJobMode") for i in range(start, stop)])
            wait_phases(
                namespace, lambda c, n=stop: c.get("Failed", 0) + c.get("Succeeded", 0) >= n, args.settle_timeout
            )
        running = args.federations - finished
        apply_all(namespace, [federation(f"run-{i}", "HTTPMode") for i in range(running)])
        wait_phases(namespace, lambda c: c.get("Running", 0) + c.get("Provisioning", 0) >= running, args.settle_timeout)
        settled_s = time.perf_counter() - began
        time.sleep(30)  # the last finishes' cluster deletions and their events
        before, t0 = operator_requests(), time.monotonic()
        time.sleep(args.window)
        requests_per_s = (operator_requests() - before) / (time.monotonic() - t0)
        rss_mb = psutil.Process(operator.pid).memory_info().rss / 2**20
        latencies = []
        for i in range(args.sequential):
            name = f"seq-{i}"
            start = time.perf_counter()
            kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(federation(name, "HTTPMode")))
            arrivals.wait({name}, timeout=120)
            latencies.append(arrivals.seen[name] - start)
        final = phases(namespace)
    finally:
        kubectl("delete", "federations", "--all", "-n", namespace, "--wait=false")
        operator.terminate()
        operator.wait(30)
        kubectl("delete", "namespace", namespace, "--wait=false")
        kubectl("delete", "flowschema", FLOW_SCHEMA, "--ignore-not-found")
        kubectl("delete", "clusterrolebinding", f"{namespace}-operator", "--ignore-not-found")
    result = {
        "federations": args.federations,
        "finished": finished,
        "running": args.federations - finished,
        "phases_at_end": final,
        "settle_s": round(settled_s, 1),
        "operator_requests_per_s": round(requests_per_s, 3),
        "window_s": args.window,
        "operator_rss_mb": round(rss_mb, 1),
        "apply_to_rayjob_median_s": round(statistics.median(latencies), 3),
        "apply_to_rayjob_max_s": round(max(latencies), 3),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    n, done, live = args.federations, finished, args.federations - finished
    print("\n| measure | value | target |\n|---|---|---|")
    print(f"| operator requests/s at steady state ({n} Federations: {done} finished, {live} running) "
          f"| {result['operator_requests_per_s']} | < 5 |")  # fmt: skip
    print(f"| operator resident memory | {result['operator_rss_mb']} MB | < 300 MB |")
    print(f"| apply -> RayJob under that load, median of {args.sequential} | "
          f"{result['apply_to_rayjob_median_s']} s | < 1 s |")  # fmt: skip


if __name__ == "__main__":
    main()
