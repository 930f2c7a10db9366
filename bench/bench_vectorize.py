"""Vectorised against serial local training: milliseconds per node, one actor's round, no Ray.

Workload: an MLP (by default the reference one: 784 features, one hidden layer of 128, 10 classes; digits'
is --features 64 --hidden 64), or with --cnn the built-in CNN (channels 8, 16) on 8x8 images, on seeded
random data, --samples per node, 1 epoch, batch --batch (32); each optimizer in --optimizers. The serial loop is
training.train_local node after node, as NodeHost runs it; the vectorised one is vectorized.train_many
over all the nodes. Both start every repeat from the same parameters and fresh node states, and the
median of --repeats is reported (the machine may be busy).

    python bench/bench_vectorize.py --nodes 2 4 10 50 --threads 1

Prints one JSON object per case and a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from red_api.spec import Model, Train
from red_runtime.learn.data import Arrays
from red_runtime.learn.models import build_model, get_flat
from red_runtime.learn.training import LocalState, train_local
from red_runtime.learn.vectorized import Job, train_many

CLASSES = 10


def node_data(nodes: int, samples: int, shape: tuple[int, ...]) -> list[Arrays]:
    rng = np.random.default_rng(0)
    return [
        Arrays(rng.normal(size=(samples, *shape)).astype(np.float32), rng.integers(0, CLASSES, samples))
        for _ in range(nodes)
    ]


def workload(features: int, hidden: int, cnn: bool) -> tuple[str, Model, tuple[int, ...]]:
    if cnn:
        return "cnn 8-16 on 1x8x8", Model(name="cnn", channels=(8, 16)), (1, 8, 8)
    return f"mlp {features}-{hidden}-{CLASSES}", Model(name="mlp", hidden=(hidden,)), (features,)


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def case(nodes: int, samples: int, optimizer: str, repeats: int, batch: int, load: tuple) -> dict:
    name, spec, shape = load
    model = build_model(spec, shape, CLASSES, seed=0)
    start = get_flat(model)
    cfg = Train(epochs=1, batchSize=batch, optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 0.01)
    data = node_data(nodes, samples, shape)
    cpu = torch.device("cpu")

    def serial() -> None:
        for i, d in enumerate(data):
            train_local(model, start, LocalState(train=d), cfg, torch.Generator().manual_seed(i), cpu)

    def vectorised() -> None:
        jobs = [Job(start, LocalState(train=d), torch.Generator().manual_seed(i)) for i, d in enumerate(data)]
        train_many(model, jobs, cfg, cpu)

    serial(), vectorised()  # first-use costs out of the timings
    # Interleaved, so that a change in the machine's load weighs on both alike.
    times: dict[str, list[float]] = {"serial": [], "vectorised": []}
    for _ in range(repeats):
        times["serial"].append(timed(serial))
        times["vectorised"].append(timed(vectorised))
    ms = {k: 1000 * statistics.median(v) / nodes for k, v in times.items()}
    return {
        "model": name,
        "nodes": nodes,
        "samples": samples,
        "batch": batch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "optimizer": optimizer,
        "threads": torch.get_num_threads(),
        "serial_ms_per_node": round(ms["serial"], 3),
        "vectorised_ms_per_node": round(ms["vectorised"], 3),
        "speedup": round(ms["serial"] / ms["vectorised"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam"], choices=["sgd", "adam"])
    parser.add_argument("--features", type=int, default=784)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--cnn", action="store_true", help="the built-in CNN instead of an MLP")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (an actor with cpu: 1 has one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = workload(args.features, args.hidden, args.cnn)
    rows = []
    for optimizer in args.optimizers:
        for nodes in args.nodes:
            rows.append(case(nodes, args.samples, optimizer, args.repeats, args.batch, load))
            print(json.dumps(rows[-1]), flush=True)
    columns = ["model", "parameters", "optimizer", "nodes", "samples", "batch", "threads"]
    columns += ["serial_ms_per_node", "vectorised_ms_per_node", "speedup"]
    print("\n| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
