"""How rounds end on a real Ray: a slow node, a diverging model, a quorum that mixing misses, an early stop
that is checkpointed, a resume onto another slot plan, and errors from user code."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from red_api.spec import parse_manifest
from red_runtime.engine.checkpoint import rounds_in
from red_runtime.engine.driver import Diverged, Driver
from red_runtime.engine.events import Reporter
from red_runtime.engine.rounds import QuorumError
from red_runtime.report.run_folder import RunFolderSink
from tests.runtime.conftest import Recorder, example, run

pytestmark = pytest.mark.ray

SLOW_MODEL = """
import os, time
import numpy as np
from torch import nn


class SlowLast(nn.Module):
    '''The fourth node an actor trains (the last of its four) sleeps through the round's deadline, once.'''

    trained = 0

    def __init__(self, input_shape, classes):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), classes))

    def train(self, mode=True):
        if mode:
            SlowLast.trained += 1
            if SlowLast.trained == 4:
                try:
                    os.close(os.open(os.environ["RED_TEST_SLOW_FLAG"], os.O_CREAT | os.O_EXCL))
                    time.sleep(float(os.environ["RED_TEST_SLOW_S"]))
                except FileExistsError:
                    pass
        return super().train(mode)

    def forward(self, x):
        return self.net(x)
"""


def test_a_slow_node_costs_only_its_own_update(tmp_path):
    """Eight nodes on two actors; one actor's last node sleeps past the deadline. Its three earlier
    updates were pooled with it; they must still arrive, so seven of eight nodes count in round 1."""
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    doc = example(
        rounds=3,
        **{
            "task.model": {"name": "slowmodel:SlowLast"},
            "task.train": {"epochs": 1},
            "faultTolerance.roundTimeoutSeconds": 10,
        },
    )
    manifest = tmp_path / "fed.yaml"
    manifest.write_text(json.dumps(doc))
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "RED_TEST_SLOW_FLAG": str(tmp_path / "slept"),
        "RED_TEST_SLOW_S": "25",
    }
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "red_runtime.apps.cli", "run", str(manifest), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "slept").exists(), "one node slept through round 1"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["nodes_healthy"] == 7, rows[0]


def test_a_diverging_run_fails_as_diverged_naming_what_to_change(run_federation):
    doc = example(rounds=6, **{"task.train": {"epochs": 2, "lr": 1e12}})
    rec = Recorder()
    with pytest.raises(Diverged, match=r"round \d+: the global model's test loss is (nan|inf) .*spec.task.train.lr"):
        Driver(parse_manifest(doc), Reporter([rec])).run()
    assert rec.failure.startswith("Diverged: ")


def test_a_diverging_run_may_continue_and_writes_strict_json(ray_cluster, tmp_path):
    doc = example(rounds=3, **{"task.train": {"epochs": 2, "lr": 1e12}, "faultTolerance.divergence": "continue"})
    Driver(parse_manifest(doc), Reporter([RunFolderSink(tmp_path)])).run()

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    rows = [json.loads(line, parse_constant=refuse) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[-1]["loss"] is None
    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)
    assert summary["final_loss"] is None and summary["rounds_run"] == 3


def test_a_decentralised_round_nobody_mixes_in_fails_the_quorum(ray_cluster, monkeypatch):
    """The mixing phase gets what is left of the round's one deadline; if no node mixes in time the round
    fails its quorum by name instead of dividing by zero."""
    from red_runtime.engine.rounds import base

    real = base.gather
    phases = []

    def second_phase_times_out(calls, deadline, stop):
        phases.append(len(calls))
        if len(phases) % 2 == 0:  # every mixing phase: as if its deadline passed with nothing back
            return base.Gathered(results={}, straggling=set(calls), failed=set())
        return real(calls, deadline, stop)

    monkeypatch.setattr("red_runtime.engine.rounds.decentralized.gather", second_phase_times_out)
    with pytest.raises(QuorumError, match=r"round 1: 0 of 8 node updates arrived, below the quorum"):
        run(example(rounds=2, topology={"kind": "ring"}))


def test_an_early_stop_is_checkpointed(run_federation, tmp_path):
    doc = example(rounds=50, checkpoint={"every": 100}, **{"algorithm.targetAccuracy": 0.5})
    rec = run(doc, checkpoints=tmp_path)
    assert rec.summary.stopped_early
    assert rounds_in(tmp_path, "digits-star") == [rec.summary.rounds_run]


def test_a_resume_onto_fewer_slots_reports_where_nodes_live_now(ray_cluster, tmp_path):
    ckpt = {"every": 1}
    run(example(rounds=2, checkpoint=ckpt), checkpoints=tmp_path)  # two slots: bundles 1, 2, 1, 2, ...
    one_slot = example(rounds=3, checkpoint=ckpt, **{"nodes.resources": {"cpu": 2}})
    rec = Recorder()
    Driver(parse_manifest(one_slot), Reporter([rec]), checkpoint_dir=tmp_path, resume=True).run()
    assert rec.info.resumed_from == 2 and rec.info.slots == 1
    assert [n.bundle for n in rec.nodes] == [1] * 8


USER_ERROR = """
import numpy as np
from torch import nn


class Picky(nn.Module):
    def __init__(self, input_shape, classes):
        super().__init__()
        self.net = nn.Linear(int(np.prod(input_shape)), classes)

    def forward(self, x):
        if self.training:
            raise ValueError("batch too small for my taste")
        return self.net(x.flatten(1))
"""


def test_a_value_error_in_user_code_is_a_failure_not_an_invalid_federation(tmp_path):
    (tmp_path / "picky.py").write_text(USER_ERROR)
    manifest = tmp_path / "fed.yaml"
    manifest.write_text(json.dumps(example(rounds=2, **{"task.model": {"name": "picky:Picky"}})))
    proc = subprocess.run(
        [sys.executable, "-m", "red_runtime.apps.cli", "run", str(manifest), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "ValueError: batch too small for my taste" in proc.stderr
    assert "invalid Federation" not in proc.stderr


THREADS_SEEN: list[int] = []


class ThreadProbe(torch.nn.Module):
    def __init__(self, input_shape, classes):
        super().__init__()
        self.net = torch.nn.Linear(int(np.prod(input_shape)), classes)

    def forward(self, x):
        if not self.training:
            THREADS_SEEN.append(torch.get_num_threads())
        return self.net(x.flatten(1))


def test_the_global_evaluation_uses_every_core(run_federation):
    THREADS_SEEN.clear()
    run(example(rounds=2, **{"task.model": {"name": "tests.runtime.test_rounds:ThreadProbe"}}))
    # This process is the driver: what it saw is the global evaluation (actors record in their own).
    assert THREADS_SEEN and min(THREADS_SEEN) == len(os.sched_getaffinity(0)) > 1
