"""Red against Flower's simulation engine on the reference workload, as whole processes, side by side.

Each repeat runs `red run` on bench_runtime.py's manifest (100 nodes, 5 rounds by default) and then
flower_reference.py, the same work on Flower (flwr[simulation]), each in a fresh process with its own
embedded Ray, timed from the process's start to its exit. Repeats alternate the two, so that a change in
the machine's load weighs on both alike; medians are reported, with Red's summary.json phases.

Flower is not a dependency of Red: the first run makes bench/.venv (git-ignored), a virtual environment on
top of this one with flwr[simulation] and the Ray it pins.

    python bench/bench_flower.py --nodes 100 --rounds 5 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_runtime import manifest

HERE = Path(__file__).parent
VENV = HERE / ".venv"
FLOWER = "flwr[simulation]==1.41.0"


def flower_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"making {VENV} with {FLOWER} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", FLOWER], check=True)
    return python


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def accuracy_of(output: str, marker: str) -> float:
    line = next(ln for ln in output.splitlines() if marker in ln)
    return float(line.split("accuracy ")[1].split()[0].rstrip(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    python = flower_python()
    work = Path(tempfile.mkdtemp(prefix="red-vs-flower-"))
    doc = manifest(args.nodes, args.rounds)
    doc["metadata"]["name"] = "reference"
    (work / "reference.yaml").write_text(yaml.safe_dump(doc))
    red_cmd = [sys.executable, "-m", "red_runtime.apps.cli", "run", "reference.yaml", "--out"]
    flower_cmd = [str(python), str(HERE / "flower_reference.py"), "--nodes", str(args.nodes)]
    flower_cmd += ["--rounds", str(args.rounds), "--out", "flower-model.pt"]
    red_s, flower_s, phases = [], [], []
    for i in range(args.repeats):
        seconds, out = timed([*red_cmd, f"red-{i}"], work)
        red_s.append(seconds)
        phases.append(json.loads((work / f"red-{i}" / "summary.json").read_text())["phases"])
        red_acc = accuracy_of(out, "done after")
        seconds, out = timed(flower_cmd, work)
        flower_s.append(seconds)
        flower_acc = accuracy_of(out, "flower: accuracy")
        print(
            json.dumps(
                {
                    "repeat": i,
                    "red_s": round(red_s[-1], 2),
                    "flower_s": round(flower_s[-1], 2),
                    "red_accuracy": red_acc,
                    "flower_accuracy": flower_acc,
                }
            ),
            flush=True,
        )
    red_med, flower_med = statistics.median(red_s), statistics.median(flower_s)
    phase_med = {k: round(statistics.median(p[k] for p in phases), 2) for k in phases[0]}
    print(f"\n| nodes | rounds | Red s (median of {args.repeats}) | Flower s | Red / Flower |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {args.nodes} | {args.rounds} | {red_med:.1f} | {flower_med:.1f} | {red_med / flower_med:.2f} |")
    print(f"\nRed's phases (median s): {json.dumps(phase_med)}")


if __name__ == "__main__":
    main()
