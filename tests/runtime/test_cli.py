"""`red run` as a user runs it: a subprocess with its own embedded Ray."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
import yaml

from tests.runtime.conftest import example, rounds_done

pytestmark = pytest.mark.ray


def red(*args, cwd=None, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "red_runtime.apps.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def write(tmp_path, doc, name="fed.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_run_writes_metrics_summary_model_and_plot(tmp_path):
    out = tmp_path / "out"
    proc = red("run", str(write(tmp_path, example(rounds=3))), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert {"round", "loss", "accuracy", "nodes_healthy", "seconds"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_run"] == 3 and summary["nodes"] == 8
    assert summary["final_accuracy"] == rows[-1]["accuracy"]
    state = torch.load(out / "model.pt")
    assert any(k.endswith("weight") for k in state)
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    nodes = json.loads((out / "nodes.json").read_text())
    assert [n["state"] for n in nodes] == ["Healthy"] * 8 and nodes[0]["lastRound"] == 3
    assert "done after 3 rounds" in proc.stderr


def test_summary_says_where_the_process_time_went(tmp_path):
    out = tmp_path / "out"
    began = time.time()
    proc = red("run", str(write(tmp_path, example(rounds=2))), "--out", str(out))
    wall = time.time() - began
    assert proc.returncode == 0, proc.stderr
    phases = json.loads((out / "summary.json").read_text())["phases"]
    assert set(phases) == {"ray_start", "actors", "data", "rounds", "evaluate", "write", "total"}
    assert all(v > 0 for v in phases.values()), phases
    # Counted from this process's start to summary.json; Ray's shutdown comes after it.
    assert phases["total"] < wall
    # Only the actors' start overlaps another phase (the driver's test set), so the rest adds up to no more.
    assert sum(v for k, v in phases.items() if k not in ("total", "data")) <= phases["total"]


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"topology": {"kind": "torus"}}, "spec.topology.kind"),
        ({"algorithm.name": "fedsgd"}, "spec.algorithm.name"),
        ({"task.dataset": {"name": "mnist"}}, "spec.task.dataset.name"),
        ({"task.model": {"name": "resnet"}}, "spec.task.model.name"),
        ({"task.partition": {"kind": "shards"}}, "spec.task.partition.kind"),
        ({"rounds": 0}, "spec.rounds"),
        ({"nodes.count": 0}, "spec.nodes.count"),
        ({"task.dataset": {"name": "no_such_pkg.data:load"}}, "spec.task.dataset.name"),
        ({"task.model": {"name": "json:NoSuchModel"}}, "spec.task.model.name"),
    ],
)
def test_bad_input_fails_before_ray_starts(tmp_path, overrides, field):
    proc = red("run", str(write(tmp_path, example(**overrides))), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert field in proc.stderr
    assert "Ray" not in proc.stderr and not (tmp_path / "out").exists()


def test_resources_no_bundle_can_hold_fail_before_any_actor(tmp_path):
    proc = red("run", str(write(tmp_path, example(**{"nodes.resources": {"cpu": 64}}))))
    assert proc.returncode == 2
    assert "spec.nodes.resources: 64 cpu" in proc.stderr and "no Ray node can hold one node actor" in proc.stderr
    assert "NodeHost" not in proc.stderr


USER_MODULE = """
import numpy as np
from torch import nn

def blobs(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 600)
    x = rng.standard_normal((600, 5)) + 3.0 * np.eye(3, 5)[y]
    return x, y

class TinyNet(nn.Module):
    def __init__(self, input_shape, classes):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], 16), nn.Tanh(), nn.Linear(16, classes))

    def forward(self, x):
        return self.net(x)
"""


def test_user_dataset_and_model_by_reference(tmp_path):
    (tmp_path / "usermod.py").write_text(USER_MODULE)
    doc = example(rounds=5, **{"task.dataset": {"name": "usermod:blobs"}, "task.model": {"name": "usermod:TinyNet"}})
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = red("run", str(write(tmp_path, doc)), "--out", str(tmp_path / "out"), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out/summary.json").read_text())["final_accuracy"] > 0.8


def start_red(tmp_path, doc, *extra, env=None):
    """`red run` in a session of its own, as a user's shell starts it. Its SIGINT disposition is reset to the
    default, not inherited: a background job of a non-interactive shell starts with SIGINT ignored."""
    return subprocess.Popen(
        [sys.executable, "-m", "red_runtime.apps.cli", "run", str(write(tmp_path, doc)), "--out", str(tmp_path / "out")]
        + list(extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_rounds(proc, out, rounds, timeout=300):
    deadline = time.monotonic() + timeout
    while rounds_done(out) < rounds:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"fewer than {rounds} rounds within {timeout}s"
        time.sleep(0.1)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_cleanly(tmp_path, sig, code):
    out = tmp_path / "out"
    proc = start_red(tmp_path, example(rounds=100000))
    wait_for_rounds(proc, out, 1)
    spawned = psutil.Process(proc.pid).children(recursive=True)
    assert spawned, "an embedded Ray runs under red"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    assert f"stopped by signal {signal.Signals(sig).name}" in err
    assert "placement group removed and Ray shut down" in err
    gone, alive = psutil.wait_procs(spawned, timeout=30)
    assert alive == [], [p.info for p in alive]
    assert rounds_done(out) >= 1, "what ran before the signal is kept"


def test_ctrl_c_stops_cleanly(tmp_path):
    """The README's promise, as a user presses Ctrl-C once."""
    test_a_signal_stops_cleanly(tmp_path, signal.SIGINT, 130)


def test_a_second_signal_stops_at_once(tmp_path):
    # A long round (many epochs) and a grace period longer than the test allows: only the second
    # signal can end this run in time.
    doc = example(rounds=1000, **{"task.train": {"epochs": 2000, "lr": 0.01}})
    env = {**os.environ, "RED_STOP_GRACE_S": "3600"}
    out = tmp_path / "out"
    proc = start_red(tmp_path, doc, env=env)
    wait_for_rounds(proc, out, 1)
    spawned = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1)  # the first signal is recorded; the round goes on
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "stopped at once by a second signal SIGTERM" in err
    gone, alive = psutil.wait_procs(spawned, timeout=30)
    assert alive == [], [p.info for p in alive]


def test_a_sigtermed_run_resumes_to_the_same_model(tmp_path):
    # Checkpoints every 5 rounds: the one the stop writes is off that cadence, so it is the stop's own.
    doc = example(rounds=8, checkpoint={"every": 5, "keep": 2})
    whole = tmp_path / "whole"
    assert red("run", str(write(tmp_path, doc, "whole.yaml")), "--out", str(whole)).returncode == 0
    out = tmp_path / "out"
    proc = start_red(tmp_path, doc)
    wait_for_rounds(proc, out, 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    stopped_after = rounds_done(out)
    assert stopped_after < 8, "the run stopped before its last round"
    assert f"checkpoint of round {stopped_after} kept" in err
    again = red("run", str(tmp_path / "fed.yaml"), "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming after round {stopped_after}" in again.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == list(range(1, 9))
    a, b = torch.load(whole / "model.pt", weights_only=True), torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
