"""Sweep benchmark: an 8-trial `red tune` against the same 8 trials run one after another with `red run`.

Both sides run as a user runs them, as whole processes, side by side in one invocation and on the same
trial values (the sweep's, read back from its trials.csv). FIFO scheduling, so no trial stops early and
both sides train the same rounds; the saving is trials sharing the cluster and one Ray start.

    python bench/bench_tune.py --repeats 3

Prints one JSON object per repeat and a Markdown row for docs/benchmarks.md (medians).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def manifest(rounds: int) -> dict:
    doc = yaml.safe_load((ROOT / "manifests/examples/digits-star.yaml").read_text())
    doc["spec"]["rounds"] = rounds
    doc["spec"]["nodes"]["count"] = 4
    doc["spec"]["task"]["train"]["epochs"] = 2
    return doc


def red(*args: str) -> float:
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "red_runtime.apps.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"red {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - began


def one_repeat(work: Path, rounds: int, trials: int) -> dict:
    doc = manifest(rounds)
    fed = work / "fed.yaml"
    fed.write_text(yaml.safe_dump(doc))
    sweep = red("tune", str(fed), "--param", "task.train.lr=loguniform:1e-3:0.5", "--samples", str(trials),
                "--scheduler", "fifo", "--out", str(work / "sweep"))  # fmt: skip
    lrs = [float(r["task.train.lr"]) for r in csv.DictReader((work / "sweep" / "trials.csv").open())]
    sequential = 0.0
    for i, lr in enumerate(lrs):
        doc["spec"]["task"]["train"]["lr"] = lr
        path = work / f"trial{i}.yaml"
        path.write_text(yaml.safe_dump(doc))
        sequential += red("run", str(path), "--out", str(work / f"run{i}"))
    return {
        "trials": trials,
        "rounds": rounds,
        "sweep_s": sweep,
        "sequential_s": sequential,
        "ratio": sweep / sequential,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as work:
            results.append(one_repeat(Path(work), args.rounds, args.trials))
        print(json.dumps(results[-1]), flush=True)
    med = {k: statistics.median(r[k] for r in results) for k in ("sweep_s", "sequential_s", "ratio")}
    print(
        f"| {args.trials} trials x {args.rounds} rounds, 4 nodes | {med['sweep_s']:.1f} s "
        f"| {med['sequential_s']:.1f} s | {med['ratio']:.2f} | {args.repeats} |"
    )


if __name__ == "__main__":
    main()
