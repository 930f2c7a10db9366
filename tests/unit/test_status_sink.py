"""The status sink's promises: coalesced patches, survival of an API outage, only the driver's fields,
strict JSON, bodies tagged with the driver's RayJob, a node list bounded at any federation size.

The patch function here is a plain callable that serialises each body as the API server reads it (no NaN,
no Infinity) and records it; the same sink against a real API server is exercised by the cluster tests.
"""

import json
import math
import threading
import time

import pytest

from red_runtime.engine.events import FAILED, HEALTHY, RESTARTING, NodeStatus, RoundReport, RunInfo, Summary
from red_runtime.report.kube import Superseded, status_patch
from red_runtime.report.status_sink import DRIVER_FIELDS, MAX_LISTED_NODES, StatusSink

pytestmark = pytest.mark.unit


class Recorder:
    def __init__(self, fail_until: float = 0.0):
        self.bodies = []
        self.calls = 0
        self.fail_until = fail_until
        self.lock = threading.Lock()

    def __call__(self, body):
        self.calls += 1
        if time.monotonic() < self.fail_until:
            raise ConnectionError("API server away")
        wire = json.dumps(body, allow_nan=False)  # what the API server accepts: it refuses NaN and Infinity
        with self.lock:
            self.bodies.append(json.loads(wire))


def info(rounds=50):
    return RunInfo(name="f", namespace="ns", rounds=rounds, nodes=2, slots=1, topology="star", algorithm="fedavg")


def report(r, rounds=50):
    return RoundReport(
        round=r, rounds=rounds, loss=1.0 / r, accuracy=r / rounds, nodes_healthy=2, nodes_total=2, seconds=0.01
    )


NODES = [NodeStatus(id="node-0", state=HEALTHY), NodeStatus(id="node-1", state=HEALTHY)]
NO_NODES = {"Healthy": 0, "Pending": 0, "Straggling": 0, "Restarting": 0, "Failed": 0}
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
    # healthy nodes are counted, not listed
    assert last["nodeCounts"] == {**NO_NODES, "Healthy": 2} and last["nodes"] == []
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

    from red_runtime.engine.driver import failure_reason

    cause = RuntimeError("loss diverged")
    wrapped = RayTaskError("NodeHost.train_round", "Traceback ...\n" * 200, cause)
    assert failure_reason(wrapped) == "RuntimeError: loss diverged (in NodeHost.train_round)"
    assert failure_reason(wrapped.as_instanceof_cause()).startswith("RuntimeError: loss diverged")
    assert failure_reason(KeyboardInterrupt()) == "interrupted"
    assert failure_reason(ValueError("x")) == "ValueError: x"


def test_a_nan_loss_and_an_infinite_epsilon_are_sent_as_null():
    """A diverging run: the body is refused today (NaN is not JSON) and the sink would resend it forever."""
    rec = Recorder()
    sink = StatusSink(rec, min_interval_s=0.01, final_flush_s=5)
    sink.started(info(2), NODES)
    nan = RoundReport(
        round=1, rounds=2, loss=math.nan, accuracy=0.1, nodes_healthy=2, nodes_total=2, seconds=0.1,
        metrics={"epsilon": math.inf},
    )  # fmt: skip
    sink.round_done(nan, NODES)
    sink.close()
    assert rec.bodies[-1]["metrics"] == {"loss": None, "accuracy": 0.1, "epsilon": None}
    assert rec.bodies[-1]["progress"] == "1/2"


def test_every_report_names_the_drivers_rayjob(monkeypatch):
    monkeypatch.setenv("RED_RAYJOB", "f-abcde-2")
    rec = Recorder()
    sink = StatusSink(rec, min_interval_s=0.01)
    sink.started(info(), NODES)
    sink.round_done(report(1), NODES)
    sink.close()
    assert rec.bodies and all(body["driverRayJob"] == "f-abcde-2" for body in rec.bodies)
    monkeypatch.delenv("RED_RAYJOB")
    untagged = Recorder()
    sink = StatusSink(untagged, min_interval_s=0.01)
    sink.started(info(), NODES)
    sink.close()
    assert "driverRayJob" not in untagged.bodies[-1]


def test_a_superseded_driver_neither_hammers_the_api_nor_waits_at_close():
    calls = []

    def refused(body):
        calls.append(body)
        raise Superseded("ns/f no longer runs RayJob f-abcde-1")

    sink = StatusSink(refused, min_interval_s=0.01, max_backoff_s=5.0, rayjob="f-abcde-1")
    sink.started(info(), NODES)
    time.sleep(0.3)
    sink.round_done(report(1), NODES)
    sink.failed("late")
    began = time.monotonic()
    sink.close()
    assert time.monotonic() - began < 1.0, "its reports cannot land: nothing to wait for"
    assert len(calls) <= 3 and sink.superseded


def test_a_tagged_report_lands_only_while_the_status_names_its_rayjob():
    ops, content_type = status_patch({"round": 3, "completionTime": None, "driverRayJob": "f-abcde-2"})
    assert content_type == "application/json-patch+json"
    assert ops[0] == {"op": "test", "path": "/status/rayJobName", "value": "f-abcde-2"}
    assert {"op": "add", "path": "/status/completionTime", "value": None} in ops
    body, content_type = status_patch({"round": 3})
    assert (body, content_type) == ({"status": {"round": 3}}, "application/merge-patch+json")


def test_the_node_list_is_bounded_at_any_size():
    """100,000 nodes at 110 bytes an entry would pass etcd's 1.5 MiB: only the unwell are listed, capped."""
    nodes = [NodeStatus(id=f"node-{i}", state=HEALTHY, lastRound=3, bundle=i % 64) for i in range(100_000)]
    for i in range(0, 100_000, 200):
        nodes[i] = NodeStatus(id=f"node-{i}", state=FAILED if i % 400 else RESTARTING, restarts=3)
    rec = Recorder()
    sink = StatusSink(rec, min_interval_s=0.01)
    sink.started(info(), nodes)
    sink.close()
    last = rec.bodies[-1]
    assert last["nodesReady"] == "99500/100000"
    assert last["nodeCounts"] == {**NO_NODES, "Healthy": 99_500, "Failed": 250, "Restarting": 250}
    assert len(last["nodes"]) == MAX_LISTED_NODES and last["nodesUnlisted"] == 500 - MAX_LISTED_NODES
    assert all(n["state"] != HEALTHY for n in last["nodes"])
    assert len(json.dumps(last)) < 64 * 1024


def test_a_stop_by_signal_is_reported_as_such_not_as_an_error():
    rec = Recorder()
    sink = StatusSink(rec, min_interval_s=0.01)
    sink.started(info(), NODES)
    sink.round_done(report(3), NODES)
    sink.stopped("stopped by signal SIGTERM after round 3; checkpoint of round 3 kept, resume to continue")
    sink.close()
    last = rec.bodies[-1]
    assert last["driverStopped"].startswith("stopped by signal SIGTERM after round 3")
    assert last["driverError"] is None and last["completionTime"]


def merge_patch(target, patch):
    """RFC 7386, as the API server applies an untagged report: maps merge, null removes."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out


def test_node_counts_stay_true_under_merge_patches():
    rec = Recorder()
    sink = StatusSink(rec, min_interval_s=0.01)
    sink.started(info(), [NodeStatus(id="node-0"), NodeStatus(id="node-1")])  # both Pending
    sink.close()
    sink = StatusSink(rec, min_interval_s=0.01)
    sink.round_done(report(1), NODES)
    sink.close()
    status = {}
    for body in rec.bodies:
        status = merge_patch(status, body)
    assert status["nodeCounts"] == {**NO_NODES, "Healthy": 2}, "no Pending left over from the start"
