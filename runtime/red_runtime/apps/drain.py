"""The Ray Pods' preStop hook: the head's asks the driver to stop after its current round and waits until it
has; a worker's waits while the node actors it hosts still serve that driver.

A Pod goes for many reasons (Kueue preempting its Workload, `spec.suspend`, a node drain), and the kubelet
runs this hook before it signals the container. The driver sees STOP_FILE, finishes or abandons the round
within its grace period, writes a checkpoint to the Federation's storage and reports; the next attempt
resumes after that checkpoint. The round and the checkpoint need the node actors in the worker Pods, which
are going too (`ray start` stops Ray at once on SIGTERM): their hook (`--actors`) holds the signal back until
the driver has let its actors go. Each returns once there is nothing to wait for, or after `--timeout`
seconds, so the Pods' termination grace period must be longer than that.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from red_api.names import DRIVER_MODULE
from red_runtime.engine.stopping import STOP_FILE

# Ray titles an actor's worker process after its class: `ray::NodeHost`, `ray::NodeHost.train`, ...
NODE_ACTOR = b"ray::NodeHost"


def _processes(proc: Path) -> list[tuple[int, list[bytes]]]:
    """This container's processes and their command lines, this process excluded."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            found.append((int(entry.name), (entry / "cmdline").read_bytes().split(b"\0")))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def drivers(proc: Path = Path("/proc")) -> list[int]:
    """The pids of this container's drivers (`python -m red_runtime.apps.launch ...`)."""
    return [pid for pid, args in _processes(proc) if b"-m" in args and DRIVER_MODULE.encode() in args]


def node_actors(proc: Path = Path("/proc")) -> list[int]:
    """The pids of the node actors (NodeHost) that this container's Ray runs."""
    return [pid for pid, args in _processes(proc) if args and args[0].startswith(NODE_ACTOR)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited: its parent has yet to reap it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def drain(timeout_s: float, stop_file: Path = STOP_FILE, poll_s: float = 0.2, proc: Path = Path("/proc")) -> list[int]:
    """Ask every driver to stop and wait up to `timeout_s` for them to exit; returns those still running."""
    running = drivers(proc)
    if running:
        stop_file.write_text(f"preStop at {time.time():.0f}\n")
    return wait_gone(running, timeout_s, poll_s)


def wait_gone(pids: list[int], timeout_s: float, poll_s: float = 0.2) -> list[int]:
    """Wait up to `timeout_s` for `pids` to exit; returns those still running."""
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        time.sleep(poll_s)
        pids = [p for p in pids if alive(p)]
    return pids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m red_runtime.apps.drain", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=25.0, help="seconds to wait (default 25)")
    parser.add_argument(
        "--actors", action="store_true", help="a worker Pod: wait while its node actors run, ask nothing"
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    what = "node actor" if args.actors else "driver"
    left = wait_gone(node_actors(), args.timeout) if args.actors else drain(args.timeout)
    took = time.monotonic() - began
    if left:
        print(f"red drain: {what} {left} still running after {took:.0f}s", file=sys.stderr)
    else:
        print(f"red drain: no {what} running ({took:.1f}s)", file=sys.stderr)
    return 0  # a failing preStop hook only adds an Event: the Pod goes either way


if __name__ == "__main__":
    sys.exit(main())
