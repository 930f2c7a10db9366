"""Operator benchmark: `kubectl apply` to RayJob latency, a burst of Federations, the operator's memory.

Runs against a real control plane with the real KubeRay operator (tests/cluster/ctl up, or any cluster
KUBECONFIG names) and a real `red operator` watching one fresh namespace:

    tests/cluster/ctl up && KUBECONFIG=tests/cluster/.state/kubeconfig python bench/bench_operator.py

1. latency: one Federation at a time, the time from starting `kubectl apply` to the operator's RayJob
   arriving on a watch; median over --sequential Federations.
2. burst: --burst Federations in one `kubectl apply`, the time until every one has its RayJob.
3. memory: the operator process' resident set once the burst is reconciled.

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
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parents[1]
LABEL = "red.dev/federation"


def kubectl_binary() -> str:
    built = ROOT / "tests/cluster/.bin/kubectl"
    return str(built) if built.exists() else (shutil.which("kubectl") or "kubectl")


def kubectl(*args: str, stdin: str | None = None) -> None:
    subprocess.run([kubectl_binary(), *args], input=stdin, text=True, check=True, capture_output=True)


def federation(name: str) -> dict:
    return {
        "apiVersion": "red.dev/v1alpha1",
        "kind": "Federation",
        "metadata": {"name": name},
        "spec": {"rounds": 3, "nodes": {"count": 4}, "ray": {"submissionMode": "HTTPMode"}},
    }


class RayJobArrivals:
    """Watches RayJobs in one namespace and records when each Federation's first one arrived."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._api, self._namespace = api, namespace
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        custom = client.CustomObjectsApi(self._api)
        stream = watch.Watch().stream(custom.list_namespaced_custom_object, "ray.io", "v1", self._namespace, "rayjobs")
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


def start_operator(namespace: str) -> subprocess.Popen:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "red_runtime.cli", "operator", "--namespace", namespace, "--metrics-port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--liveness", f"http://127.0.0.1:{port}/healthz"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise RuntimeError("red operator did not become live")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds/federation.yaml"))
    kubectl("create", "namespace", namespace)
    api = config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
    arrivals = RayJobArrivals(api, namespace)
    operator = start_operator(namespace)
    try:
        latencies = []
        for i in range(args.sequential):
            name = f"seq-{i}"
            began = time.perf_counter()
            kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(federation(name)))
            arrivals.wait({name}, timeout=60)
            latencies.append(arrivals.seen[name] - began)
        burst = {f"burst-{i}" for i in range(args.burst)}
        batch = {"apiVersion": "v1", "kind": "List", "items": [federation(n) for n in sorted(burst)]}
        began = time.perf_counter()
        kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(batch))
        applied = time.perf_counter() - began
        arrivals.wait(burst, timeout=600)
        burst_s = max(arrivals.seen[n] for n in burst) - began
        time.sleep(10)  # a timer tick or two over all of them, as in steady state
        rss_mb = psutil.Process(operator.pid).memory_info().rss / 2**20
    finally:
        # While the operator runs: kopf's finalizers would otherwise hold the Federations (and namespace).
        kubectl("delete", "federations", "--all", "-n", namespace, "--wait=true", "--timeout=300s")
        operator.terminate()
        operator.wait(30)
        kubectl("delete", "namespace", namespace, "--wait=false")
    result = {
        "apply_to_rayjob_median_s": round(statistics.median(latencies), 3),
        "apply_to_rayjob_max_s": round(max(latencies), 3),
        "burst": args.burst,
        "burst_kubectl_apply_s": round(applied, 1),
        "burst_all_rayjobs_s": round(burst_s, 1),
        "operator_rss_mb_at_burst": round(rss_mb, 1),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    print("\n| measure | value | target |\n|---|---|---|")
    print(f"| apply -> RayJob, median of {args.sequential} | {result['apply_to_rayjob_median_s']} s | < 1 s |")
    print(f"| {args.burst} Federations at once, all RayJobs | {result['burst_all_rayjobs_s']} s | < 60 s |")
    print(f"| operator RSS with {args.burst} | {result['operator_rss_mb_at_burst']} MB | < 200 MB |")


if __name__ == "__main__":
    main()
