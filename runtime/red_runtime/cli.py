"""`red`: run a Federation manifest locally, or check one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from red_runtime.spec import SpecError, load_manifest


def run_command(manifest: str, out: str | None, address: str | None, resume: bool = False) -> int:
    """Run one Federation to completion with a progress bar and a run folder."""
    from red_runtime.driver import EXIT_INVALID, check_references, execute
    from red_runtime.outputs import ConsoleSink, RunFolderSink

    try:
        fed = load_manifest(manifest)
        check_references(fed)
    except (SpecError, OSError, ValueError) as err:
        print(f"red: {err}", file=sys.stderr)
        return EXIT_INVALID
    folder = Path(out) if out else Path("runs") / fed.name
    sinks = [ConsoleSink(), RunFolderSink(folder, resume=resume)]
    code = execute(fed, sinks, address, folder / "checkpoints", resume)
    if code == 0:
        print(f"red: results in {folder}/ (metrics.jsonl, summary.json, model.pt, metrics.png)", file=sys.stderr)
    return code


def validate_command(manifest: str) -> int:
    """Check a manifest as `red run` does before it starts Ray: the spec, then the data each node gets."""
    from red_runtime.data import check_partition

    try:
        fed = load_manifest(manifest)
        sizes = check_partition(fed.spec.task, fed.spec.nodes.count)
    except (SpecError, OSError, ValueError) as err:
        print(f"red: {err}", file=sys.stderr)
        return 2
    print(
        f"{manifest}: Federation {fed.name} is valid: {len(sizes)} nodes with {sizes.min()} to {sizes.max()} "
        "training samples each"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="red", description="Federated learning on Ray and Kubernetes")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a Federation manifest on an embedded (or given) Ray")
    run.add_argument("file", help="Federation YAML, as kubectl apply takes it")
    run.add_argument("--out", help="run folder (default runs/<name>/)")
    run.add_argument("--address", help="connect to this Ray cluster instead of starting one")
    run.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint (spec.checkpoint.every > 0)"
    )
    check = sub.add_parser("validate", help="check a Federation manifest without running it")
    check.add_argument("file")
    op = sub.add_parser("operator", help="run the Federation operator (kopf) against the current kubeconfig")
    op.add_argument("--namespace", action="append", help="watch only this namespace (repeatable; default: all)")
    op.add_argument("--kubeconfig", help="default: KUBECONFIG, ~/.kube/config, or in-cluster credentials")
    op.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint ('' turns it off)")
    op.add_argument("--metrics-port", type=int, default=8000, help="Prometheus /metrics port (0 turns it off)")
    op.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "operator":
        from red_operator.run import run_operator

        return run_operator(args.namespace, args.kubeconfig, args.liveness, args.metrics_port, args.verbose)
    if args.command == "run":
        return run_command(args.file, args.out, args.address, args.resume)
    return validate_command(args.file)


if __name__ == "__main__":
    sys.exit(main())
