"""The head Pod's preStop hook: ask the driver to stop after its current round, and wait until it has.

A Pod goes for many reasons (Kueue preempting its Workload, `spec.suspend`, a node drain), and the kubelet
runs this hook before it signals the container. The driver sees STOP_FILE, finishes or abandons the round
within its grace period, writes a checkpoint to the Federation's storage and reports; the next attempt
resumes after that checkpoint. The hook returns once no driver runs, or after `--timeout` seconds, so the
Pod's termination grace period must be longer than that.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from red_runtime.stopping import STOP_FILE

DRIVER_MODULE = "red_runtime.driver"


def drivers(proc: Path = Path("/proc")) -> list[int]:
    """The pids of this container's drivers (`python -m red_runtime.driver ...`), this process excluded."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if b"-m" in args and DRIVER_MODULE.encode() in args:
            found.append(int(entry.name))
    return found


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
    if not running:
        return []
    stop_file.write_text(f"preStop at {time.time():.0f}\n")
    deadline = time.monotonic() + timeout_s
    while running and time.monotonic() < deadline:
        time.sleep(poll_s)
        running = [p for p in running if alive(p)]
    return running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m red_runtime.drain", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=25.0, help="seconds to wait for the driver (default 25)")
    args = parser.parse_args(argv)
    began = time.monotonic()
    left = drain(args.timeout)
    took = time.monotonic() - began
    if left:
        print(f"red drain: driver {left} still running after {took:.0f}s", file=sys.stderr)
    else:
        print(f"red drain: no driver running ({took:.1f}s)", file=sys.stderr)
    return 0  # a failing preStop hook only adds an Event: the Pod goes either way


if __name__ == "__main__":
    sys.exit(main())
