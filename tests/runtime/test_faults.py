"""Fault tolerance with real faults on a real Ray: killed and paused node actors, a killed driver."""

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import ray
import torch
import yaml

from red_api.spec import parse_manifest
from red_runtime.engine.driver import Driver
from red_runtime.engine.events import FAILED, HEALTHY, RESTARTING, STRAGGLING, Reporter
from red_runtime.engine.rounds import QuorumError
from tests.runtime.conftest import Recorder, example, rounds_done

pytestmark = pytest.mark.ray


class Saboteur(Recorder):
    """After round `at`, sends `sig` to the process of node-actor slot `slot` (and records node states)."""

    def __init__(self, name, at, slot=1, sig=signal.SIGKILL, resume_after=None, delay=0.02):
        super().__init__()
        self.name, self.at, self.slot, self.sig = name, at, slot, sig
        self.resume_after, self.delay = resume_after, delay
        self.states = []

    def round_done(self, report, nodes):
        super().round_done(report, nodes)
        self.states.append([(n.state, n.restarts) for n in nodes])
        if report.round == self.at:
            pid = ray.get(ray.get_actor(f"red-{self.name}-slot-{self.slot}").info.remote())["pid"]
            threading.Timer(self.delay, os.kill, (pid, self.sig)).start()  # lands while the next round runs
            if self.resume_after is not None:
                threading.Timer(self.resume_after, os.kill, (pid, signal.SIGCONT)).start()


def run_with(doc, sink):
    Driver(parse_manifest(doc), Reporter([sink])).run()
    return sink


def test_a_killed_node_actor_restarts_and_the_federation_finishes(run_federation):
    doc = example(rounds=10)
    calm = run_federation(copy.deepcopy(doc))
    hit = run_with(doc, Saboteur("digits-star", at=3))
    assert hit.summary.rounds_run == 10
    odd = [n for i, n in enumerate(hit.nodes) if i % 2 == 1]  # slot 1 hosts nodes 1, 3, 5, 7
    assert all(n.restarts == 1 and n.state == HEALTHY for n in odd)
    assert all(n.restarts == 0 for i, n in enumerate(hit.nodes) if i % 2 == 0)
    assert any(state == RESTARTING for round_states in hit.states for state, _ in round_states)
    assert abs(hit.summary.final_accuracy - calm.summary.final_accuracy) <= 0.02


def test_a_node_out_of_restarts_fails_and_the_ring_closes_around_it(ray_cluster):
    doc = example(rounds=8, topology={"kind": "ring"}, **{"faultTolerance.maxNodeRestarts": 0})
    hit = run_with(doc, Saboteur("digits-star", at=2))
    assert hit.summary.rounds_run == 8
    assert [n.state for n in hit.nodes] == [HEALTHY, FAILED] * 4
    assert hit.reports[-1].nodes_healthy == 4
    assert hit.summary.final_accuracy > 0.8  # the even nodes kept learning on the closed ring


def test_too_few_nodes_left_fails_naming_the_quorum(ray_cluster):
    doc = example(rounds=8, **{"faultTolerance.maxNodeRestarts": 0, "algorithm.minNodes": 6})
    sink = Saboteur("digits-star", at=2)
    with pytest.raises(
        QuorumError, match=r"round \d+: 4 of [48] node updates arrived, below the quorum spec.algorithm.minNodes=6"
    ):
        run_with(doc, sink)
    assert "minNodes=6" in sink.failure


def test_a_paused_node_straggles_and_rounds_keep_their_deadline(ray_cluster):
    # Generous numbers: this machine is shared (2 cores, a control plane beside), and a healthy round must
    # never miss the deadline; the point is that no round waits for the paused node.
    deadline_s, pause_s = 10, 25
    doc = example(rounds=10, **{"faultTolerance.roundTimeoutSeconds": deadline_s, "algorithm.minNodes": 4})
    sink = run_with(doc, Saboteur("digits-star", at=2, sig=signal.SIGSTOP, resume_after=pause_s))
    assert sink.summary.rounds_run == 10
    straggled = [r for r, states in enumerate(sink.states, 1) if any(s == STRAGGLING for s, _ in states)]
    assert straggled, "the paused node was never marked Straggling"
    # While its actor was stopped, rounds closed at the deadline instead of waiting out the pause.
    assert all(sink.reports[r - 1].seconds < deadline_s + 5 < pause_s for r in straggled)
    assert all(sink.reports[r - 1].nodes_healthy == 4 for r in straggled)
    assert sink.reports[-1].nodes_healthy == 8  # it caught up once resumed


def red_run(manifest, out, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "red_runtime.apps.cli", "run", str(manifest), "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.parametrize(
    "overrides",
    [
        # server optimiser moments and per-node SGD momentum must both survive the restart
        {"algorithm": {"name": "fedadam"}, "task.train": {"epochs": 2, "lr": 0.05, "momentum": 0.9}},
        # every node's own model must survive in a decentralised topology
        {"topology": {"kind": "ring"}},
        # SCAFFOLD's server control variate and every node's own must survive
        {"algorithm": {"name": "scaffold"}, "task.partition": {"kind": "dirichlet", "alpha": 0.1}},
    ],
    ids=["star-fedadam-momentum", "ring", "star-scaffold"],
)
def test_a_killed_driver_resumes_and_ends_with_the_same_model(tmp_path, overrides):
    doc = example(rounds=8, checkpoint={"every": 1, "keep": 3}, **overrides)
    manifest = tmp_path / "fed.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert red_run(manifest, whole).wait(timeout=300) == 0

    proc = red_run(manifest, broken)
    deadline = time.monotonic() + 180
    while rounds_done(broken) < 4:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its embedded Ray die at once, like a lost Pod
    proc.wait()
    ckpts = sorted((broken / "checkpoints").glob("round-*.pt"))
    assert len(ckpts) >= 2
    newest = ckpts[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a torn write
    resumed_from = int(ckpts[-2].stem.split("-")[1])

    again = red_run(manifest, broken, "--resume")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"resuming after round {resumed_from}" in err
    rows = [json.loads(line) for line in (broken / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == list(range(1, 9))
    a, b = torch.load(whole / "model.pt"), torch.load(broken / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
