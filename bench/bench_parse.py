"""What a reconcile pass pays to read a Federation: parse_manifest of every example, and parse plus the pure
builders (RayCluster and RayJob), in microseconds per manifest, for this checkout against an earlier one.

    python bench/bench_parse.py                 # against 12e9dcd, the last hand-written spec model
    python bench/bench_parse.py --base REV --repeats 7 --loops 200

Each side runs in a process of its own (the earlier one from `git archive REV`), alternating, and the table
gives medians and their ratio, new / base.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys, time
import yaml
from {module} import parse_manifest
from red_operator import builders

docs = [yaml.safe_load(open(p)) for p in json.loads(sys.argv[1])]
for d in docs:
    d["metadata"].update(namespace="ns", uid="u1")
loops = int(sys.argv[2])

def timed(work):
    start = time.perf_counter()
    for _ in range(loops):
        for doc in docs:
            work(doc)
    return (time.perf_counter() - start) / (loops * len(docs)) * 1e6

def build(doc):
    fed = parse_manifest(doc, stored=True)
    builders.build_raycluster(fed)
    builders.build_rayjob(fed, 1, 1)

print(json.dumps({{"parse_us": timed(lambda d: parse_manifest(d, stored=True)), "parse_build_us": timed(build)}}))
"""


def checkout(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run(source: Path, examples: list[str], loops: int) -> dict[str, float]:
    new = (source / "api").is_dir()
    paths = [source / part for part in (("api", "runtime", "operator") if new else ("runtime", "operator"))]
    module = "red_api.spec" if new else "red_runtime.spec"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module), json.dumps(examples), str(loops)],
        env={"PYTHONPATH": ":".join(map(str, paths)), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="12e9dcd", help="the earlier revision (default 12e9dcd)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loops", type=int, default=100)
    args = parser.parse_args()
    examples = [str(p) for p in sorted((ROOT / "manifests" / "examples").glob("*.yaml"))]
    with tempfile.TemporaryDirectory() as tmp:
        base = checkout(args.base, Path(tmp))
        results: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
        for _ in range(args.repeats):
            results["base"].append(run(base, examples, args.loops))
            results["new"].append(run(ROOT, examples, args.loops))
    print(f"| per manifest ({len(examples)} examples, median of {args.repeats}) | {args.base} | this | ratio |")
    print("|---|---|---|---|")
    summary = {}
    for key, label in (("parse_us", "parse_manifest"), ("parse_build_us", "parse + RayCluster + RayJob")):
        old = statistics.median(r[key] for r in results["base"])
        new = statistics.median(r[key] for r in results["new"])
        summary[key] = {"base": old, "new": new, "ratio": new / old}
        print(f"| {label} | {old:.0f} µs | {new:.0f} µs | {new / old:.2f} |")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
