"""The status sink's promises: coalesced patches, survival of an API outage, only the driver's fields.

The patch function here is a plain callable recording bodies; the same sink against a real API server
is exercised by the cluster tests.
"""

import threading
import time

import pytest

from red_runtime.reporting import HEALTHY, NodeStatus, RoundReport, RunInfo, Summary
from red_runtime.status_sink import DRIVER_FIELDS, StatusSink

pytestmark = pytest.mark.unit


class Recorder:
    def __init__(self, fail_until: float = 0.0):
        self.bodies = []
        self.fail_until = fail_until
        self.lock = threading.Lock()

    def __call__(self, body):
        if time.monotonic() < self.fail_until:
            raise ConnectionError("API server away")
        with self.lock:
            self.bodies.append(body)


def info(rounds=50):
    return RunInfo(name="f", namespace="ns", rounds=rounds, nodes=2, slots=1, topology="star", algorithm="fedavg")


def report(r, rounds=50):
    return RoundReport(
        round=r, rounds=rounds, loss=1.0 / r, accuracy=r / rounds, nodes_healthy=2, nodes_total=2, seconds=0.01
    )


NODES = [NodeStatus(id="node-0", state=HEALTHY), NodeStatus(id="node-1", state=HEALTHY)]
SUMMARY = Summary(
    name="f",
    rounds_run=50,
    final_accuracy=1.0,
    final_loss=0.02,
    seconds_per_round=0.01,
    nodes=2,
    slots=1,
    startup_seconds=1,
)


def test_bursts_are_coalesced_and_the_latest_state_lands():
    rec = Recorder()
    sink = StatusSink(rec, min_interval_s=0.2)
    sink.started(info(), NODES)
    for r in range(1, 51):
        sink.round_done(report(r), NODES)
    sink.finished(SUMMARY, None, None)
    sink.close()
    assert len(rec.bodies) < 10  # fifty rounds in a burst, a handful of patches
    last = rec.bodies[-1]
    assert last["progress"] == "50/50" and last["round"] == 50
    assert last["nodesReady"] == "2/2" and last["metrics"]["accuracy"] == 1.0
    assert [n["id"] for n in last["nodes"]] == ["node-0", "node-1"]
    assert last["completionTime"]


def test_an_api_outage_never_blocks_training_and_the_final_status_lands():
    rec = Recorder(fail_until=time.monotonic() + 2.0)
    sink = StatusSink(rec, min_interval_s=0.05, max_backoff_s=0.5)
    began = time.monotonic()
    sink.started(info(3), NODES)
    for r in (1, 2, 3):
        sink.round_done(report(r, 3), NODES)
    assert time.monotonic() - began < 1.0  # the hooks returned while every patch was failing
    sink.finished(SUMMARY, None, None)
    sink.close()
    assert rec.bodies and rec.bodies[-1]["progress"] == "3/3" and rec.bodies[-1]["completionTime"]


def test_only_driver_fields_are_written():
    rec = Recorder()
    sink = StatusSink(rec, min_interval_s=0.01)
    sink.started(info(), NODES)
    sink.round_done(report(1), NODES)
    sink.checkpointed(1, "/ckpt/round-1.pt")
    sink.failed("boom")
    sink.close()
    written = {k for body in rec.bodies for k in body}
    assert written <= set(DRIVER_FIELDS)
    assert not written & {"phase", "conditions", "observedGeneration", "rayJobName", "rayClusterName"}
    assert rec.bodies[-1]["driverError"] == "boom" and rec.bodies[-1]["lastCheckpoint"]["round"] == 1


def test_a_users_error_inside_a_node_actor_reads_as_the_users_own():
    from ray.exceptions import RayTaskError

    from red_runtime.driver import failure_reason

    cause = RuntimeError("loss diverged")
    wrapped = RayTaskError("NodeHost.train_round", "Traceback ...\n" * 200, cause)
    assert failure_reason(wrapped) == "RuntimeError: loss diverged (in NodeHost.train_round)"
    assert failure_reason(wrapped.as_instanceof_cause()).startswith("RuntimeError: loss diverged")
    assert failure_reason(KeyboardInterrupt()) == "interrupted"
    assert failure_reason(ValueError("x")) == "ValueError: x"
