"""The head Pod's preStop hook and the stop file: a driver asked to stop by the hook stops as after a SIGTERM,
and the SIGTERM that KubeRay sends when it stops the Ray job is not taken for a second, stop-at-once one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from red_api.names import DRIVER_MODULE
from red_api.spec import parse_manifest
from red_runtime.apps import drain
from red_runtime.engine.checkpointer import Checkpointer
from red_runtime.engine.stopping import Interrupted, StopRequest

pytestmark = pytest.mark.unit

# A stand-in driver: its command line reads `python -c ... -m red_runtime.apps.launch`, as a real one's names the
# module; it exits once the stop file exists, as a driver does after its round and checkpoint.
FAKE_DRIVER = (
    "import pathlib, sys, time\nwhile not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.05)\ntime.sleep(0.3)"
)


def test_the_hook_asks_each_driver_to_stop_and_waits_until_it_has(tmp_path: Path):
    stop_file = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, "-c", FAKE_DRIVER, str(stop_file), "-m", "red_runtime.apps.launch"])
    try:
        deadline = time.monotonic() + 10
        while proc.pid not in drain.drivers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.pid in drain.drivers()
        began = time.monotonic()
        assert drain.drain(10, stop_file) == []
        assert stop_file.exists() and proc.poll() is not None
        assert time.monotonic() - began < 9, "it returns as soon as the driver is gone, not at its timeout"
    finally:
        proc.kill()
        proc.wait()


def test_with_no_driver_the_hook_returns_at_once_and_leaves_no_file(tmp_path: Path):
    """A serving head, or one whose driver has finished: nothing to wait for. (A /proc of its own: this
    machine may run drivers of other tests.)"""
    proc = tmp_path / "proc"
    for pid, args in {"7": [b"ray", b"start", b"--head"], "8": [b"python", b"-m", b"ray.dashboard"]}.items():
        (proc / pid).mkdir(parents=True)
        (proc / pid / "cmdline").write_bytes(b"\0".join(args) + b"\0")
    (proc / "self").mkdir()
    began = time.monotonic()
    assert drain.drain(10, tmp_path / "stop", proc=proc) == []
    assert time.monotonic() - began < 5 and not (tmp_path / "stop").exists()
    (proc / "9").mkdir()
    (proc / "9" / "cmdline").write_bytes(b"python\0-m\0" + DRIVER_MODULE.encode() + b"\0--federation\0ns/f\0")
    assert drain.drivers(proc) == [9]
    # A worker Pod's node actors, as Ray titles their processes.
    (proc / "10").mkdir()
    (proc / "10" / "cmdline").write_bytes(b"ray::NodeHost.train\0\0\0")
    assert drain.node_actors(proc) == [10]


def test_a_workers_hook_waits_while_its_node_actors_run(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    began = time.monotonic()
    assert drain.wait_gone([proc.pid], 10) == []
    assert 0.3 < time.monotonic() - began < 9
    proc.wait()


def test_the_stop_file_stops_the_run_and_a_later_sigterm_does_not_stop_it_at_once(tmp_path: Path):
    stop_file = tmp_path / "stop"
    stop_file.write_text("left by an earlier driver")
    with StopRequest(grace_s=10) as stop:
        stop.watch_file(stop_file, every_s=0.02)
        assert not stop_file.exists(), "an earlier driver's request is not this one's"
        time.sleep(0.1)
        assert not stop.requested
        stop_file.write_text("preStop")
        assert stop.wait(5) and stop.name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # KubeRay stopping the Ray job: the stop goes on, in order
        time.sleep(0.05)
        assert not stop.repeated
        with pytest.raises(Interrupted):  # a signal after a signal still stops at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)


def test_a_stop_checkpoints_even_when_checkpoints_are_off(tmp_path: Path):
    fed = parse_manifest({"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": "f"}})
    assert fed.spec.checkpoint.every == 0
    keeper = Checkpointer(fed, tmp_path)
    assert not keeper.due(3, last=True) and not keeper.due(3, last=False)
    assert keeper.due(3, last=True, stopping=True)
    assert not Checkpointer(fed, None).due(3, last=True, stopping=True), "nowhere to write it"
