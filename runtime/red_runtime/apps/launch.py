"""The one launch sequence: check a Federation, open its run folder, and run it (or its sweep) into it.

`red run` calls `open_run` and `launch`; so does the RayJob's entrypoint (`main`, run as
`python -m red_runtime.apps.launch`), which reads the Federation from the API server and reports into its
status. Torch-free until Ray is starting: the checks fail in a fraction of a second, and the driver's
imports (torch, about two seconds) then overlap Ray's start.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from red_api.manifest import read_manifest
from red_api.spec import Federation, SpecError
from red_runtime.engine.phases import Phases
from red_runtime.engine.session import RayStart
from red_runtime.engine.stopping import EXIT_FAILED, EXIT_INVALID, STOP_FILE
from red_runtime.learn.data import check_references
from red_runtime.report.console import ConsoleSink
from red_runtime.report.kube import api_client, parse_ref, patch_status, read_federation
from red_runtime.report.run_folder import RunFolder
from red_runtime.report.status_sink import StatusSink
from red_runtime.report.storage import StorageError
from red_runtime.report.tracking import TrackingError, check_tracking, tracking_sinks

# What a bad manifest, folder or tracking server raises before anything starts: one line, exit 2.
SETUP_ERRORS = (SpecError, OSError, ValueError, StorageError, TrackingError)


def open_run(
    fed: Federation,
    doc: Mapping[str, Any],
    location: str,
    resume: bool,
    mlflow: str | None = None,
    staging: Path | None = None,
) -> RunFolder:
    """Everything checked before Ray starts: the references the spec names, its tracking server, and the run
    folder at `location` (local or s3://; `staging` is where an s3:// one is written first)."""
    check_references(fed)
    check_tracking(fed, mlflow)
    return RunFolder(location, resume, staging=staging, manifest=doc)


def launch(
    fed: Federation,
    doc: Mapping[str, Any],
    run: RunFolder,
    sinks: list,
    address: str | None,
    resume: bool,
    mlflow: str | None = None,
    status: StatusSink | None = None,
    stop_file: Path | None = None,
    phases: Phases | None = None,
) -> int:
    """Run `fed` into `run` on Ray at `address` (embedded if None), or its spec.sweep (the best trial's model
    on top); the exit code says how it ended. With `stop_file`, its appearance stops the run as a SIGTERM
    would (the head Pod's preStop hook)."""
    if fed.spec.sweep is not None:
        from red_runtime.tune.tuning import execute_sweep  # deferred: Ray Tune, only for a sweep

        return execute_sweep(fed, doc, status, address, run, mlflow)
    ray_start = RayStart(address).begin()
    from red_runtime.engine.driver import execute  # deferred: torch and Ray import while Ray starts

    run.sinks.extend(tracking_sinks(fed, run.folder, mlflow))  # spec.tracking.mlflow, or `mlflow`
    checkpoints = run.checkpoints(fed.spec.checkpoint.path)
    code = execute(fed, [*sinks, *run.sinks], address, checkpoints, resume, stop_file, ray_start, phases)
    try:
        run.finish()  # the last push to object storage failing fails the run
    except StorageError as err:
        print(f"red: {err}", file=sys.stderr)
        return code or EXIT_FAILED
    return code


def main(argv: list[str] | None = None) -> int:
    """The RayJob's entrypoint: read the Federation from the API server and report into its status."""
    parser = argparse.ArgumentParser(prog="python -m red_runtime.apps.launch", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--federation", default=os.environ.get("RED_FEDERATION"), help="NAMESPACE/NAME to run")
    source.add_argument("--manifest", help="a Federation YAML file (no status reporting)")
    parser.add_argument("--out", default=None, help="run folder or s3:// folder (default /tmp/red/<name>)")
    parser.add_argument("--artifacts-uri", default=None, help="the run folder as status.artifacts names it")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray address (default: embedded)")
    args = parser.parse_args(argv)
    # The RayJob's log is where an operator looks: warnings (a status patch that failed, a node that
    # left) go there with the logger's name.
    logging.basicConfig(level=logging.WARNING, format="red %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sinks: list = [ConsoleSink(stream=sys.stdout)]
    status = None
    try:
        if args.manifest:
            doc, fed = read_manifest(args.manifest)
        else:
            namespace, name = parse_ref(args.federation)
            api = api_client()
            fed, doc = read_federation(api, namespace, name)
        staging = Path(f"/tmp/red/{fed.name}")
        location = args.out or str(staging)
        # A retried RayJob continues from the newest checkpoint on the Federation's storage (a claim, or
        # pulled from its s3:// folder).
        run = open_run(fed, doc, location, resume=True, staging=staging)
        if not args.manifest:
            report = functools.partial(patch_status, api, namespace, name)
            artifacts = args.artifacts_uri or location
            status = StatusSink(report, artifacts=artifacts, checkpoints=fed.spec.checkpoint.path)
            sinks.append(status)
    except SETUP_ERRORS as err:
        print(f"red: {err}", file=sys.stderr)
        return EXIT_INVALID
    # On Kubernetes (--federation) the head Pod's preStop hook asks for a stop through STOP_FILE.
    stop_file = STOP_FILE if status else None
    return launch(fed, doc, run, sinks, args.address, resume=True, status=status, stop_file=stop_file)


if __name__ == "__main__":
    sys.exit(main())
