"""`red`: run a Federation manifest locally, check one, or fetch what a run left."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from red_runtime.spec import SpecError, load_manifest


def run_command(
    manifest: str, out: str | None, address: str | None, resume: bool = False, mlflow: str | None = None
) -> int:
    """Run one Federation to completion with a progress bar and a run folder (local or s3://), tracked in
    MLflow where `mlflow` (or spec.tracking.mlflow) names a server."""
    from red_runtime.artifacts import run_location
    from red_runtime.driver import EXIT_INVALID, check_references, execute_into
    from red_runtime.outputs import ConsoleSink, RunFolder
    from red_runtime.storage import StorageError
    from red_runtime.tracking import TrackingError, check_tracking, tracking_sinks

    try:
        fed = load_manifest(manifest)
        check_references(fed)
        check_tracking(fed, mlflow)
        location = out or (run_location(fed) if fed.spec.storage.uri else f"runs/{fed.name}")
        run = RunFolder(location, resume, manifest=yaml.safe_load(Path(manifest).read_text()))
    except (SpecError, OSError, ValueError, StorageError, TrackingError) as err:
        print(f"red: {err}", file=sys.stderr)
        return EXIT_INVALID
    run.sinks.extend(tracking_sinks(fed, run.folder, mlflow))
    code = execute_into(fed, [ConsoleSink()], address, run, resume)
    if code == 0:
        print(f"red: results in {location}/ (metrics.jsonl, summary.json, model.pt, metrics.png)", file=sys.stderr)
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


def fetch_command(name: str | None, namespace: str | None, source: str | None, to: str | None, rescore: bool) -> int:
    """Download a run folder (a Federation's, from its storage; or any s3:// or local one) and print its
    final accuracy, and with --evaluate the accuracy of the fetched model measured again on the test set."""
    from red_runtime.artifacts import read_summary, score
    from red_runtime.fetch import FetchError, fetch_federation, fetch_folder
    from red_runtime.outputs import MANIFEST
    from red_runtime.storage import StorageError

    try:
        fed = None
        if source:
            target = Path(to or Path(source.rstrip("/")).name or "run")
            count = fetch_folder(source, target)
        else:
            from red_runtime.kube import api_client, read_federation

            api = api_client()
            fed, _ = read_federation(api, namespace or _current_namespace(), name)
            target = Path(to or name)
            count = fetch_federation(api, fed, target)
            source = f"Federation {fed.namespace}/{fed.name}"
        summary = read_summary(target)
    except (FetchError, StorageError, SpecError, OSError, ValueError) as err:
        print(f"red: {err}", file=sys.stderr)
        return 1
    print(
        f"red: fetched {count} files of {source} into {target}/: final accuracy {summary['final_accuracy']:.4f} "
        f"after {summary['rounds_run']} rounds"
    )
    if rescore:
        if fed is None:
            fed = load_manifest(str(target / MANIFEST))
        loss, accuracy = score(fed, target)
        print(f"red: {target / 'model.pt'} on the test set: accuracy {accuracy:.4f}, loss {loss:.4f}")
    return 0


def _current_namespace() -> str:
    from kubernetes import config

    try:
        return config.list_kube_config_contexts()[1]["context"].get("namespace") or "default"
    except (config.ConfigException, KeyError, TypeError):
        return "default"


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
    run.add_argument("--mlflow", metavar="URI", help="track the run on this MLflow server (spec.tracking.mlflow.uri)")
    check = sub.add_parser("validate", help="check a Federation manifest without running it")
    check.add_argument("file")
    fetch = sub.add_parser("fetch", help="download a Federation's model, metrics and checkpoints")
    fetch.add_argument("name", nargs="?", help="the Federation (read from the current kubeconfig's cluster)")
    fetch.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    fetch.add_argument("--from", dest="source", help="a run folder instead: s3://bucket/prefix or a local path")
    fetch.add_argument("--to", help="where to put it (default: ./NAME)")
    fetch.add_argument("--evaluate", action="store_true", help="score the fetched model on the test set again")
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
        return run_command(args.file, args.out, args.address, args.resume, args.mlflow)
    if args.command == "fetch":
        if bool(args.name) == bool(args.source):
            parser.error("fetch takes a Federation NAME or --from LOCATION")
        return fetch_command(args.name, args.namespace, args.source, args.to, args.evaluate)
    return validate_command(args.file)


if __name__ == "__main__":
    sys.exit(main())
