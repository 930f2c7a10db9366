"""`red`: run a Federation manifest locally, check one, fetch what a run left, or serve its model."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path

from red_api.manifest import MAX_FILE_BYTES, load_manifest, parse_text, read_manifest
from red_api.names import MANIFEST, run_location
from red_api.spec import Federation, SpecError
from red_api.sweep import parse_sweep
from red_api.trial import check_sweep
from red_runtime import __version__
from red_runtime.apps.artifacts import read_summary, require_trust, score
from red_runtime.apps.fetch import FetchError, fetch_federation, fetch_folder
from red_runtime.engine.phases import Phases
from red_runtime.engine.session import ray_session
from red_runtime.engine.stopping import EXIT_FAILED, EXIT_INVALID, StopRequest
from red_runtime.learn.references import resolve
from red_runtime.report.console import ConsoleSink
from red_runtime.report.kube import api_client, read_federation
from red_runtime.report.storage import Mirror, StorageError, is_remote
from red_runtime.report.tracking import TrackingError, check_tracking
from red_runtime.tune.trials import TRIALS_CSV, finish_sweep, without_sweep


def one_line(err: BaseException) -> str:
    """One line for an error: a missing or unreadable file as `PATH: no such file or directory`."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror[0].lower()}{err.strerror[1:]}"
    return str(err)


def run_command(
    manifest: str, out: str | None, address: str | None, resume: bool = False, mlflow: str | None = None
) -> int:
    """Run one Federation to completion with a progress bar and a run folder (local or s3://), tracked in
    MLflow where `mlflow` (or spec.tracking.mlflow) names a server."""
    # deferred here and in the commands below: numpy and the run's modules, so that `red --help` and a
    # manifest's error answer in a quarter of a second
    from red_runtime.apps.launch import SETUP_ERRORS, launch, open_run

    phases = Phases()
    try:
        doc, fed = read_manifest(manifest)
        location = out or (run_location(fed) if fed.spec.storage.uri else f"runs/{fed.name}")
        run = open_run(fed, doc, location, resume, mlflow)
    except SETUP_ERRORS as err:
        print(f"red: {one_line(err)}", file=sys.stderr)
        return EXIT_INVALID
    code = launch(fed, doc, run, [ConsoleSink()], address, resume, mlflow, phases=phases)
    if code == 0 and fed.spec.sweep is None:
        print(f"red: results in {location}/ (metrics.jsonl, summary.json, model.pt, metrics.png)", file=sys.stderr)
    return code


def tune_command(manifest: str, args: argparse.Namespace) -> int:
    """Sweep a Federation's spec with Ray Tune: every trial a whole federation; table, CSV, plot, best/."""
    from red_runtime.learn.data import check_references  # deferred: numpy, as in run_command

    try:
        doc, fed = read_manifest(manifest)
        if args.param or fed.spec.sweep is None:
            sweep = parse_sweep(args.param, args.samples, args.metric, args.mode, args.scheduler, args.concurrency)
        else:  # the manifest's own spec.sweep
            sweep = fed.spec.sweep
        doc = without_sweep(doc)
        check_references(fed)
        check_sweep(doc, sweep)
        check_tracking(fed, args.mlflow)
        out = Path(args.out or f"runs/{fed.name}-tune")
        if (out / TRIALS_CSV).exists():
            raise ValueError(f"--out {out}: holds an earlier sweep ({TRIALS_CSV}); choose another folder")
        out.mkdir(parents=True, exist_ok=True)
    except (SpecError, OSError, ValueError, TrackingError) as err:
        print(f"red: {one_line(err)}", file=sys.stderr)
        return EXIT_INVALID

    from red_runtime.tune.progress import TrialProgress  # deferred: Ray Tune and torch, seconds to import
    from red_runtime.tune.tuning import tune_federations

    print(
        f"red: sweeping {fed.name}: {sweep.trials} trials over {', '.join(p.path for p in sweep.params)}, "
        f"{sweep.scheduler} on {sweep.metric} ({sweep.mode})",
        file=sys.stderr,
    )
    try:
        with ray_session(args.address, StopRequest()):
            progress = TrialProgress(sweep.trials, sweep.metric, sweep.mode)
            rows = tune_federations(doc, fed, sweep, out, [progress], args.mlflow)
    except SpecError as err:
        print(f"red: {one_line(err)}", file=sys.stderr)
        return EXIT_INVALID
    best = finish_sweep(rows, sweep, out, title=f"{fed.name}: {sweep.trials} trials")
    if best is None:
        print(f"red: no trial finished; see {out / TRIALS_CSV}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"red: best trial {best.trial}: {sweep.metric} {best.final(sweep.metric):.4f} with "
        + ", ".join(f"{k}={v}" for k, v in best.config.items())
        + f"; results in {out}/ (trials.csv, trials.png, best/)",
        file=sys.stderr,
    )
    return 0


def validate_command(manifest: str, imports: bool = False) -> int:
    """Check a manifest as `red run` does before it starts Ray, running nothing the manifest names: the spec,
    then the data each node gets. A "package.module:name" reference is checked for its form only; with
    `imports`, also that it imports and names something (the module runs on import; nothing is called)."""
    from red_runtime.learn.data import check_partition  # deferred: numpy, as in run_command

    try:
        fed = load_manifest(manifest)
        task = fed.spec.task
        refs = ((task.dataset.name, "spec.task.dataset.name"), (task.model.name, "spec.task.model.name"))
        for ref, field in refs:
            if imports and ":" in ref:
                resolve(ref, field)
        sizes = None if ":" in task.dataset.name else check_partition(task, fed.spec.nodes.count)
    except (SpecError, OSError, ValueError) as err:
        print(f"red: {one_line(err)}", file=sys.stderr)
        return 2
    if sizes is None:
        print(
            f"{manifest}: Federation {fed.name} is valid; what each node gets of {task.dataset.name} is checked when "
            "`red run` loads it (validate calls no code a manifest names)"
        )
    else:
        print(
            f"{manifest}: Federation {fed.name} is valid: {len(sizes)} nodes with {sizes.min()} to {sizes.max()} "
            "training samples each"
        )
    return 0


def fetch_command(
    name: str | None, namespace: str | None, source: str | None, to: str | None, rescore: bool, trust_code: bool
) -> int:
    """Download a run folder (a Federation's, from its storage; or any s3:// or local one) and print its
    final accuracy, and with --evaluate the accuracy of the fetched model measured again on the test set."""

    try:
        fed = None
        if source:
            target = Path(to or Path(source.rstrip("/")).name or "run")
            count = fetch_folder(source, target)
        else:
            api = api_client()
            fed, _ = read_federation(api, namespace or _current_namespace(), name)
            target = Path(to or name)
            count = fetch_federation(api, fed, target)
            source = f"Federation {fed.namespace}/{fed.name}"
        summary = read_summary(target)
    except (FetchError, StorageError, SpecError, OSError, ValueError) as err:
        print(f"red: {one_line(err)}", file=sys.stderr)
        return 1
    accuracy, rounds = summary.get("final_accuracy"), summary.get("rounds_run")
    said = f"final accuracy {accuracy:.4f}" if isinstance(accuracy, float) else "no final accuracy in summary.json"
    print(f"red: fetched {count} files of {source} into {target}/: {said} after {rounds} rounds")
    if rescore:
        try:
            if fed is None:  # the folder's own manifest, which whoever wrote the folder wrote
                fed = load_manifest(str(target / MANIFEST))
                require_trust(fed, str(target), trust_code)
            loss, accuracy = score(fed, target)
        except Exception as err:  # noqa: BLE001 - a model that will not load is a line, not a traceback
            print(f"red: {target}: cannot score its model: {type(err).__name__}: {err}", file=sys.stderr)
            return 2
        print(f"red: {target / 'model.pt'} on the test set: accuracy {accuracy:.4f}, loss {loss:.4f}")
    return 0


def folder_manifest(location: str) -> Federation:
    """The Federation a run folder (local or s3://) says it ran, read on its own."""

    if is_remote(location):
        uri = f"{location.rstrip('/')}/{MANIFEST}"
        return parse_text(Mirror(Path(), location).read(MANIFEST, MAX_FILE_BYTES), uri)[1]
    return load_manifest(str(Path(location) / MANIFEST))


def serve_command(
    run: str,
    host: str,
    port: int,
    replicas: int,
    cpu: float,
    gpu: float,
    address: str | None,
    trust_code: bool,
    token: str | None = None,
) -> int:
    """Serve a finished run's model over HTTP (POST /predict, GET /healthz) until Ctrl-C or SIGTERM; with
    `token`, only to requests that carry it (Authorization: Bearer TOKEN)."""
    from red_runtime.apps.serving import (  # deferred: numpy
        app_options,
        check_run,
        port_free,
        serve_until_stopped,
        token_sha256,
    )

    try:
        if token is not None and (not token.strip() or token != token.strip()):
            raise ValueError("--token: must not be empty or start or end with spaces")
        if not token and address is not None:
            raise ValueError(
                f"--address {address}: a shared cluster's Serve may listen beyond this machine; give --token"
            )
        if not token and not _loopback(host):
            raise ValueError(f"--host {host}: other machines could reach the model; give --token (or RED_SERVE_TOKEN)")
        # Replicas run in Ray's worker processes, which have a directory of their own.
        location = run if is_remote(run) else str(Path(run).resolve())
        args = {"run": location, "replicas": replicas, "cpu": cpu, "gpu": gpu, "trustCode": trust_code}
        if token:
            args["tokenSha256"] = token_sha256(token)
        options = app_options(args)
        check_run(location)
        require_trust(folder_manifest(location), run, trust_code)  # before Ray starts, not in its replicas
    except (OSError, ValueError, StorageError, SpecError) as err:
        print(f"red: {one_line(err)}", file=sys.stderr)
        return 2
    if address is None and not port_free(host, port):
        print(f"red: --port {port}: {host}:{port} is in use (pick another with --port)", file=sys.stderr)
        return 2
    return serve_until_stopped(options, host, port, address, label=run)


def _loopback(host: str) -> bool:
    """Whether `host` is this machine only: localhost, or a loopback address (not a name that starts "127.")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _current_namespace() -> str:
    from kubernetes import config  # deferred: the Kubernetes client, only when no namespace is given

    try:
        return config.list_kube_config_contexts()[1]["context"].get("namespace") or "default"
    except (config.ConfigException, KeyError, TypeError):
        return "default"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="red", description="Federated learning on Ray and Kubernetes")
    parser.add_argument("--version", action="version", version=f"red {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a Federation manifest on an embedded (or given) Ray")
    run.add_argument("file", help="Federation YAML, as kubectl apply takes it")
    run.add_argument("--out", help="run folder (default runs/<name>/)")
    run.add_argument("--address", help="connect to this Ray cluster instead of starting one")
    run.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint (spec.checkpoint.every > 0)"
    )
    tune = sub.add_parser("tune", help="sweep a Federation's hyperparameters with Ray Tune, one federation per trial")
    tune.add_argument("file", help="Federation YAML")
    tune.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="PATH=SPEC",
        help="a spec path and its values: loguniform:LOW:HIGH, uniform:LOW:HIGH, randint:LOW:HIGH (inclusive), "
        "choice:A,B,C or grid:A,B,C, e.g. task.train.lr=loguniform:1e-3:0.3 (repeatable)",
    )
    tune.add_argument("--samples", type=int, default=8, help="trials to draw (each grid value multiplies them)")
    tune.add_argument("--metric", default="accuracy", help="accuracy or loss (default accuracy)")
    tune.add_argument("--mode", default="max", help="max or min (default max)")
    tune.add_argument("--scheduler", default="asha", help="asha (stops weak trials early) or fifo")
    tune.add_argument("--concurrency", type=int, default=0, help="trials at once (default: as many as fit)")
    tune.add_argument("--out", help="sweep folder (default runs/<name>-tune/)")
    tune.add_argument("--address", help="connect to this Ray cluster instead of starting one")
    tune.add_argument("--mlflow", metavar="URI", help="track each trial as an MLflow run on this server")
    run.add_argument("--mlflow", metavar="URI", help="track the run on this MLflow server (spec.tracking.mlflow.uri)")
    check = sub.add_parser("validate", help="check a Federation manifest without running it")
    check.add_argument("file")
    check.add_argument(
        "--import",
        dest="imports",
        action="store_true",
        help="also import the dataset and model references (their modules run; nothing is called)",
    )
    fetch = sub.add_parser("fetch", help="download a Federation's model, metrics and checkpoints")
    fetch.add_argument("name", nargs="?", help="the Federation (read from the current kubeconfig's cluster)")
    fetch.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    fetch.add_argument("--from", dest="source", help="a run folder instead: s3://bucket/prefix or a local path")
    fetch.add_argument("--to", help="where to put it (default: ./NAME)")
    fetch.add_argument("--evaluate", action="store_true", help="score the fetched model on the test set again")
    trust = "import the dataset and model code the folder's federation.yaml names (only if you trust its writer)"
    fetch.add_argument("--trust-code", action="store_true", help=trust)
    srv = sub.add_parser("serve", help="serve a finished run's model over HTTP with Ray Serve")
    srv.add_argument("run", help="the run folder (runs/NAME, or s3://bucket/prefix/NAME)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    srv.add_argument("--replicas", type=int, default=1, help="model replicas (default 1)")
    srv.add_argument("--cpu", type=float, default=1.0, help="CPUs per replica (default 1)")
    srv.add_argument("--gpu", type=float, default=0.0, help="GPUs per replica (default 0)")
    srv.add_argument("--address", help="serve on this Ray cluster instead of an embedded one")
    srv.add_argument("--trust-code", action="store_true", help=trust)
    srv.add_argument(
        "--token",
        default=os.environ.get("RED_SERVE_TOKEN") or None,
        help="answer only requests with Authorization: Bearer TOKEN (default $RED_SERVE_TOKEN; needed off 127.0.0.1)",
    )
    from red_operator.run import add_arguments, run_from_args  # deferred: kopf, for the operator command

    add_arguments(sub.add_parser("operator", help="run the Federation operator (kopf) against the current kubeconfig"))
    args = parser.parse_args(argv)
    if args.command == "operator":
        return run_from_args(args)
    if args.command == "run":
        return run_command(args.file, args.out, args.address, args.resume, args.mlflow)
    if args.command == "tune":
        return tune_command(args.file, args)
    if args.command == "serve":
        return serve_command(
            args.run, args.host, args.port, args.replicas, args.cpu, args.gpu, args.address, args.trust_code,
            args.token,
        )  # fmt: skip
    if args.command == "fetch":
        if bool(args.name) == bool(args.source):
            parser.error("fetch takes a Federation NAME or --from LOCATION")
        return fetch_command(args.name, args.namespace, args.source, args.to, args.evaluate, args.trust_code)
    return validate_command(args.file, args.imports)


def console() -> None:
    """The `red` command: main, then an exit that skips the interpreter's teardown of torch, Ray's client and
    the rest (a second and more after a run), once the output is flushed. Everything a command writes is
    closed by the time main returns, and the Ray it started is shut down."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    console()
