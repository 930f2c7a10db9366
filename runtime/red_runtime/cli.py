"""`red`: run a Federation manifest locally, or check one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from red_runtime.spec import SpecError, load_manifest

EXIT_INVALID = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def run_command(manifest: str, out: str | None, address: str | None) -> int:
    """Run one Federation to completion; the exit code says how it ended."""
    from red_runtime.driver import Driver, check_references, ray_session
    from red_runtime.outputs import ConsoleSink, RunFolderSink
    from red_runtime.reporting import Reporter

    try:
        fed = load_manifest(manifest)
        check_references(fed)
    except (SpecError, OSError, ValueError) as err:
        print(f"red: {err}", file=sys.stderr)
        return EXIT_INVALID
    folder = Path(out) if out else Path("runs") / fed.name
    try:
        with ray_session(address):
            reporter = Reporter([ConsoleSink(), RunFolderSink(folder)])
            Driver(fed, reporter).run()
    except KeyboardInterrupt:
        print("red: interrupted; placement group removed and Ray shut down", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValueError as err:
        print(f"red: invalid Federation: {err}", file=sys.stderr)
        return EXIT_INVALID
    except Exception as err:
        print(f"red: federation {fed.name} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"red: results in {folder}/ (metrics.jsonl, summary.json, model.pt, metrics.png)", file=sys.stderr)
    return 0


def validate_command(manifest: str) -> int:
    try:
        fed = load_manifest(manifest)
    except (SpecError, OSError) as err:
        print(f"red: {err}", file=sys.stderr)
        return EXIT_INVALID
    print(f"{manifest}: Federation {fed.name} is valid")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="red", description="Federated learning on Ray and Kubernetes")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a Federation manifest on an embedded (or given) Ray")
    run.add_argument("file", help="Federation YAML, as kubectl apply takes it")
    run.add_argument("--out", help="run folder (default runs/<name>/)")
    run.add_argument("--address", help="connect to this Ray cluster instead of starting one")
    check = sub.add_parser("validate", help="check a Federation manifest without running it")
    check.add_argument("file")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run_command(args.file, args.out, args.address)
    return validate_command(args.file)


if __name__ == "__main__":
    sys.exit(main())
