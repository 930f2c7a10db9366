"""GPU benchmark: node actors on shares of one GPU, vectorised against serial virtual nodes.

The reference workload (bench_runtime.py's: synthetic 512x784 per node, MLP 784-128-10, 5 epochs, batch 64,
SGD 0.1, FedAvg) at --nodes virtual nodes on --actors node actors of 1/--actors GPU each, once with
`task.train.vectorize: never` and once with `always`, on a fresh embedded Ray each. It reports, per mode:
seconds per round (first and the median of the rest), the GPU's peak memory in use and its mean
utilisation while the rounds ran (NVML, sampled every 0.1 s), and each actor's `ray.get_gpu_ids()` and
`CUDA_VISIBLE_DEVICES`, which show that every actor got its share of the one GPU.

    python bench/bench_gpu.py --nodes 1000 --actors 4 --rounds 3

Prints one JSON object per mode and a Markdown table for docs/benchmarks.md. Needs an NVIDIA GPU and
nvidia-ml-py (pynvml).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import pynvml
import ray
from bench_runtime import Sampler, Timing, manifest

from red_api.spec import parse_manifest
from red_runtime.engine.driver import Driver
from red_runtime.engine.events import Reporter
from red_runtime.engine.session import ray_session
from red_runtime.engine.stopping import StopRequest


class GpuWatch(Sampler):
    """Peak memory in use and mean utilisation of GPU 0 while `active` is set."""

    def __init__(self, every_s: float = 0.1):
        super().__init__(every_s)
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.name = pynvml.nvmlDeviceGetName(self.handle)
        self.peak_bytes = 0
        self.utilisation: list[int] = []
        self.active = threading.Event()

    def sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, pynvml.nvmlDeviceGetMemoryInfo(self.handle).used)
        if self.active.is_set():
            self.utilisation.append(pynvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)


class ActorShares(Timing):
    """Round times, and after round 1 (every actor exists by then) what each actor was given."""

    def __init__(self, t0: float, watch: GpuWatch):
        super().__init__(t0)
        self.watch = watch
        self.actors: list[dict] = []

    def started(self, info, nodes):
        super().started(info, nodes)
        self.watch.active.set()

    def round_done(self, report, nodes):
        super().round_done(report, nodes)
        if report.round == 1:
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "-slot-" in a["name"]]
            hosts = [ray.get_actor(n) for n in sorted(names)]
            self.actors = [
                {k: i[k] for k in ("slot", "device", "gpu_ids", "cuda_visible_devices")}
                for i in ray.get([h.info.remote() for h in hosts])
            ]


def run(nodes: int, actors: int, rounds: int, vectorize: str) -> dict:
    raw = manifest(nodes, rounds)
    raw["metadata"]["name"] = f"gpu-{vectorize}"
    raw["spec"]["nodes"]["resources"] = {"cpu": 1, "gpu": round(1 / actors, 4)}
    raw["spec"]["task"]["train"]["vectorize"] = vectorize
    fed = parse_manifest(raw)
    with GpuWatch() as watch:
        timing = ActorShares(time.monotonic(), watch)
        with ray_session(None, StopRequest()):
            summary = Driver(fed, Reporter([timing])).run()
        watch.active.clear()
    later = timing.seconds[1:] or timing.seconds
    return {
        "gpu": watch.name,
        "vectorize": vectorize,
        "nodes": nodes,
        "slots": summary.slots,
        "rounds": rounds,
        "first_round_s": round(timing.seconds[0], 3),
        "median_round_s": round(statistics.median(later), 3),
        "peak_gpu_memory_gib": round(watch.peak_bytes / 2**30, 2),
        "mean_gpu_utilisation_pct": round(statistics.mean(watch.utilisation or [0]), 1),
        "final_accuracy": round(summary.final_accuracy, 4),
        "actors": timing.actors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--actors", type=int, default=4, help="node actors, each on 1/actors of the GPU")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["never", "always"], choices=["never", "always", "auto"])
    args = parser.parse_args()
    rows = []
    for mode in args.modes:
        print(f"vectorize {mode}:", flush=True)
        rows.append(run(args.nodes, args.actors, args.rounds, mode))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| vectorize | nodes | actors | first round s | median s/round | peak GPU GiB | mean GPU util % |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['vectorize']} | {r['nodes']} | {r['slots']} | {r['first_round_s']} | {r['median_round_s']} "
            f"| {r['peak_gpu_memory_gib']} | {r['mean_gpu_utilisation_pct']} |"
        )
    if len(rows) == 2:
        print(f"\nserial / vectorised per round: {rows[0]['median_round_s'] / rows[1]['median_round_s']:.1f}x")


if __name__ == "__main__":
    main()
