"""What `red` costs before it does anything: a fresh interpreter importing the CLI module, in milliseconds,
for this checkout against an earlier one (the flat runtime before the layering, by default).

    python bench/bench_cli_start.py                  # against ec1052e
    python bench/bench_cli_start.py --base REV --repeats 15

Each run is a process of its own (the earlier side from `git archive REV`), the two sides alternating, and
the table gives medians and their ratio, new / base. It also says whether numpy, torch or Ray got imported,
which is what `red --help`, `red validate` and a manifest's error must not pay for.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_parse import checkout

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys, time
start = time.perf_counter()
import {module}
took = (time.perf_counter() - start) * 1e3
heavy = sorted(m for m in ("numpy", "torch", "ray", "kubernetes", "kopf") if m in sys.modules)
print(json.dumps({{"import_ms": took, "heavy": heavy}}))
"""


def cli_module(source: Path) -> str:
    return "red_runtime.apps.cli" if (source / "runtime" / "red_runtime" / "apps").is_dir() else "red_runtime.cli"


def run(source: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(source / p) for p in ("api", "runtime", "operator"))}
    probe = PROBE.format(module=cli_module(source))
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="ec1052e", help="the earlier revision (default ec1052e)")
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = checkout(args.base, Path(tmp) / "base")
        times: dict[str, list[float]] = {"base": [], "now": []}
        heavy: dict[str, list[str]] = {}
        for _ in range(args.repeats):
            for side, source in (("base", base), ("now", ROOT)):
                got = run(source)
                times[side].append(got["import_ms"])
                heavy[side] = got["heavy"]
    base_ms, now_ms = statistics.median(times["base"]), statistics.median(times["now"])
    print(f"| | {args.base} | now | ratio |\n|---|---|---|---|")
    print(f"| import of the CLI module (median of {args.repeats}) | {base_ms:.0f} ms | {now_ms:.0f} ms | "
          f"{now_ms / base_ms:.2f} |")  # fmt: skip
    print(f"| heavy modules imported | {', '.join(heavy['base']) or 'none'} | {', '.join(heavy['now']) or 'none'} | |")


if __name__ == "__main__":
    main()
