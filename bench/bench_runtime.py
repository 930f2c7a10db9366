"""Runtime benchmark: seconds per round against the ideal, start-up time and peak memory.

Reference workload (issue 2): synthetic data, 512 samples per node, 784 features, 10 classes; an MLP
with one hidden layer of 128; 5 local epochs, batch 64, SGD lr 0.1; star FedAvg.

The ideal round is the time to train every node serially on one thread divided by the cores Ray
has. It is measured in this same process, right before the federation, by training a sample of
nodes with the same training code (every node has the same workload, so the sample mean scales).
The contended ideal is the same measurement made in one process per core at once, as the node actors
train: what the cores share (caches, memory bandwidth) slows each of them, and no scheduling wins it back.
`--cache` sets task.dataset.cache (auto holds synthetic data where an actor's share fits in 1 GiB; at
10,000 nodes it does not, and nodes regenerate their rows each round).

    python bench/bench_runtime.py --nodes 100 1000 --rounds 3
    python bench/bench_runtime.py --nodes 10000 --rounds 2

Prints one JSON object per node count and a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import abc
import argparse
import json
import multiprocessing
import os
import statistics
import threading
import time

import numpy as np
import psutil
import torch

from red_api.spec import parse_manifest
from red_runtime.engine.driver import Driver
from red_runtime.engine.events import Reporter, Sink
from red_runtime.engine.node import round_generator
from red_runtime.engine.session import ray_session
from red_runtime.engine.stopping import StopRequest
from red_runtime.learn.data import DataSource
from red_runtime.learn.models import build_model, get_flat
from red_runtime.learn.training import local_splits, train_local


def manifest(nodes: int, rounds: int, cache: str = "auto") -> dict:
    return {
        "apiVersion": "red.dev/v1alpha1",
        "kind": "Federation",
        "metadata": {"name": f"bench-{nodes}"},
        "spec": {
            "rounds": rounds,
            "nodes": {"count": nodes, "role": "train", "resources": {"cpu": 1}},
            "task": {
                "dataset": {
                    "name": "synthetic",
                    "samplesPerNode": 512,
                    "features": 784,
                    "classes": 10,
                    "cache": cache,
                },
                "partition": {"kind": "iid"},
                "model": {"name": "mlp", "hidden": [128]},
                "train": {"epochs": 5, "batchSize": 64, "optimizer": "sgd", "lr": 0.1},
            },
        },
    }


def serial_seconds_per_node(fed, sample: int) -> float:
    """Median time to train one node once, on one thread, with the node actors' own code.

    One untimed run first: torch's first step in a process pays a one-off warm-up (about a second)
    that a node actor pays once, not once per node.
    """
    torch.set_num_threads(1)
    spec = fed.spec
    source = DataSource(spec.task, spec.nodes.count)
    model = build_model(spec.task.model, source.input_shape, source.classes, spec.task.seed)
    start = get_flat(model)
    times = []
    warm = local_splits(source.node_data(0), spec.nodes.roles, spec.task.seed, 0)
    train_local(model, start, warm, spec.task.train, round_generator(0, 0, 0), torch.device("cpu"))
    for i in range(min(sample, spec.nodes.count)):
        state = local_splits(source.node_data(i), spec.nodes.roles, spec.task.seed, i)
        began = time.perf_counter()
        train_local(model, start, state, spec.task.train, round_generator(0, i, 1), torch.device("cpu"))
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _serial_in_child(args: tuple[dict, int]) -> float:
    raw, sample = args
    return serial_seconds_per_node(parse_manifest(raw), sample)


def contended_seconds_per_node(raw: dict, sample: int, cores: int) -> float:
    """serial_seconds_per_node measured in `cores` processes at once: what one node costs when every core trains,
    as the node actors do. Above the single-process figure by what the cores share (caches, memory bandwidth,
    a host's sibling threads), which no scheduling can win back."""
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        return statistics.median(pool.map(_serial_in_child, [(raw, sample)] * cores))


class Sampler(abc.ABC):
    """Calls `sample()` every `every_s` seconds on a thread of its own while its `with` block runs."""

    def __init__(self, every_s: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(every_s)

    @abc.abstractmethod
    def sample(self) -> None:
        """Take one reading."""


class MemoryWatch(Sampler):
    """Peak summed RSS and PSS of this process and everything it started (the embedded Ray)."""

    def __init__(self, every_s: float = 0.5):
        super().__init__(every_s)
        self.peak_rss = self.peak_pss = 0
        self._me = psutil.Process()

    def sample(self) -> None:
        rss = pss = 0
        for p in [self._me, *self._me.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                rss += info.rss
                pss += info.pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)


class Timing(Sink):
    def __init__(self, t0: float):
        self.t0 = t0
        self.first_round_begins = None
        self.seconds = []

    def started(self, info, nodes):
        self.first_round_begins = time.monotonic() - self.t0

    def round_done(self, report, nodes):
        self.seconds.append(report.seconds)
        print(f"  round {report.round}: {report.seconds:.2f}s, accuracy {report.accuracy:.3f}", flush=True)


def bench(nodes: int, rounds: int, sample: int, cache: str) -> dict:
    raw = manifest(nodes, rounds, cache)
    fed = parse_manifest(raw)
    per_node = serial_seconds_per_node(fed, sample)
    cores = os.cpu_count()
    contended = contended_seconds_per_node(raw, sample, cores)
    t0 = time.monotonic()
    timing = Timing(t0)
    with MemoryWatch() as mem, ray_session(None, StopRequest()):
        summary = Driver(fed, Reporter([timing])).run()
    steady = timing.seconds[1:] or timing.seconds  # round 1 also builds every node's data
    ideal = per_node * nodes / cores
    return {
        "nodes": nodes,
        "slots": summary.slots,
        "cores": cores,
        "rounds": rounds,
        "cache": cache,
        "first_round_s": round(timing.seconds[0], 3),
        "median_round_s": round(statistics.median(steady), 3),
        "first_to_later": round(timing.seconds[0] / statistics.median(steady), 3),
        "ideal_round_s": round(ideal, 3),
        "ratio_to_ideal": round(statistics.median(steady) / ideal, 3),
        "contended_ideal_round_s": round(contended * nodes / cores, 3),
        "ratio_to_contended": round(statistics.median(steady) / (contended * nodes / cores), 3),
        "startup_s": round(timing.first_round_begins, 2),
        "peak_rss_gib": round(mem.peak_rss / 2**30, 2),
        "peak_pss_gib": round(mem.peak_pss / 2**30, 2),
        "final_accuracy": round(summary.final_accuracy, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[16, 100, 1000])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sample", type=int, default=48, help="nodes trained serially to measure the ideal")
    parser.add_argument("--cache", default="auto", choices=["auto", "always", "never"], help="task.dataset.cache")
    args = parser.parse_args()
    rows = []
    for n in args.nodes:
        print(f"{n} nodes:", flush=True)
        rows.append(bench(n, args.rounds, args.sample, args.cache))
        print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| nodes | cache | actor slots | first round s | median s/round | first / later | ideal s/round "
        "| ratio to ideal | contended ideal s | ratio to contended | start-up s | peak RSS GiB | peak PSS GiB |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['nodes']} | {r['cache']} | {r['slots']} | {r['first_round_s']} | {r['median_round_s']} "
            f"| {r['first_to_later']} | {r['ideal_round_s']} | {r['ratio_to_ideal']} "
            f"| {r['contended_ideal_round_s']} | {r['ratio_to_contended']} "
            f"| {r['startup_s']} | {r['peak_rss_gib']} | {r['peak_pss_gib']} |"
        )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
