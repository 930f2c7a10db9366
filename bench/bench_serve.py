"""Serving benchmark: requests per second and p50/p99 latency of `red serve`'s POST /predict.

The digits MLP (one hidden layer of 64) of a finished run, served by `red serve` as a user starts it (a
subprocess with its own embedded Ray: Serve's HTTP proxy and one replica of one CPU). Clients are threads
of this process, each with its own keep-alive HTTP connection, sending one real test-set example per
request as fast as answers come back. A repeat sends --requests requests across the clients; figures are
the medians over the repeats.

    python bench/bench_serve.py --clients 1 8 64 --requests 1000 --repeats 5

Without --run it first trains digits-star (3 rounds) into a temporary folder. Prints one JSON object per
client count and a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from red_api.manifest import load_manifest
from red_api.names import MANIFEST
from red_runtime.apps.artifacts import load_model

ROOT = Path(__file__).resolve().parents[1]


def train(folder: Path) -> Path:
    doc = yaml.safe_load((ROOT / "manifests/examples/digits-star.yaml").read_text())
    doc["spec"]["rounds"] = 3
    manifest = folder / "digits-star.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    out = folder / "run"
    subprocess.run([sys.executable, "-m", "red_runtime.apps.cli", "run", str(manifest), "--out", str(out)], check=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, port: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"red serve exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"red serve not healthy within {timeout}s")


def client(port: int, bodies: list[bytes], latencies: list[float], errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    for body in bodies:
        began = time.perf_counter()
        conn.request("POST", "/predict", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        latencies.append(time.perf_counter() - began)
        if resp.status != 200:
            errors.append(f"HTTP {resp.status}")
    conn.close()


def load(port: int, bodies: list[bytes], clients: int) -> dict:
    """Send every body once, split across `clients` threads; throughput and latency percentiles."""
    shares = [bodies[i::clients] for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    threads = [threading.Thread(target=client, args=(port, s, lat, errors)) for s, lat in zip(shares, latencies)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests: {errors[:3]}")
    every = np.concatenate([np.asarray(lat) for lat in latencies])
    p50, p99 = np.percentile(every, [50, 99]) * 1e3
    return {"rps": len(bodies) / wall, "p50_ms": float(p50), "p99_ms": float(p99)}


def health(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/healthz")
    return json.loads(conn.getresponse().read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run folder (default: train digits-star, 3 rounds)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--requests", type=int, default=1000, help="requests per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        run = args.run or train(Path(tmp))
        _, source = load_model(load_manifest(str(run / MANIFEST)), run)
        x = source.test_set().x
        bodies = [json.dumps({"inputs": [x[i % len(x)].ravel().tolist()]}).encode() for i in range(args.requests)]
        port = free_port()
        log = open(Path(tmp) / "serve.log", "w")  # noqa: SIM115 (open while the server runs)
        proc = subprocess.Popen(
            [sys.executable, "-m", "red_runtime.apps.cli", "serve", str(run), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_healthy(proc, port)
            load(port, bodies[:200], 8)  # warm-up: connections, the replica's first forward passes
            rows = []
            for clients in args.clients:
                runs = [load(port, bodies, clients) for _ in range(args.repeats)]
                row = {
                    "clients": clients,
                    "requests": args.requests,
                    "repeats": args.repeats,
                    "rps": round(statistics.median(r["rps"] for r in runs), 1),
                    "rps_min": round(min(r["rps"] for r in runs), 1),
                    "rps_max": round(max(r["rps"] for r in runs), 1),
                    "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
                    "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            stats = health(port)
            print("replica:", {k: stats[k] for k in ("requests", "batches", "largest_batch")}, flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
            log.close()
    base = rows[0]["rps"]
    print("\n| concurrent clients | requests/s (median) | range over repeats | vs 1 client | p50 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['rps']} | {r['rps_min']}-{r['rps_max']} | {r['rps'] / base:.2f} "
            f"| {r['p50_ms']} | {r['p99_ms']} |"
        )
    print(f"\ncores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
