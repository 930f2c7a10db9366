"""Status logic on plain dicts: KubeRay's reports in, phase and conditions out."""

from __future__ import annotations

import pytest

from red_operator.status import (
    OPERATOR_FIELDS,
    Observed,
    changed_fields,
    compute_status,
    job_outcome,
)

pytestmark = pytest.mark.unit

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def body(status=None, generation=3):
    return {"metadata": {"name": "f", "namespace": "ns", "generation": generation}, "status": status or {}}


def job(deployment="", job_status="", reason="", message="", url="", end=None):
    status = {
        "jobDeploymentStatus": deployment,
        "jobStatus": job_status,
        "reason": reason,
        "message": message,
        "dashboardURL": url,
    }
    if end:
        status["endTime"] = end
    return {"metadata": {"name": "f-abcde-1"}, "status": status}


REPORTED = {"round": 20, "rounds": 20, "completionTime": T0}  # the driver's final report


READY_CLUSTER = {"metadata": {"name": "f-ray"}, "status": {"state": "ready"}}


def conditions(status):
    return {c["type"]: c for c in status["conditions"]}


def observed(**kw):
    return Observed(cluster_name="f-ray", job_name="f-abcde-1", attempts=1, **kw)


@pytest.mark.parametrize(
    ("obs", "phase", "reason"),
    [
        (observed(), "Pending", "CreatingCluster"),
        (observed(cluster={"status": {}}), "Provisioning", "ClusterProvisioning"),
        (observed(cluster=READY_CLUSTER), "Provisioning", "CreatingJob"),
        (observed(cluster=READY_CLUSTER, job=job("Initializing")), "Provisioning", "JobInitializing"),
        (observed(cluster=READY_CLUSTER, job=job("Running", "RUNNING")), "Running", "JobRunning"),
        (observed(cluster=READY_CLUSTER, job=job("Complete", "SUCCEEDED")), "Succeeded", "Completed"),
        (observed(job=job("Complete", "SUCCEEDED"), cluster_released=True), "Succeeded", "Completed"),
        (observed(job=job("Failed", "FAILED", "AppFailed", "boom")), "Failed", "AppFailed"),
        (observed(job=job("Failed", "", "SubmissionFailed")), "Failed", "SubmissionFailed"),
        (observed(job=job("ValidationFailed", "", "ValidationFailed")), "Failed", "ValidationFailed"),
        (observed(job=job("Complete", "FAILED")), "Failed", "JobFailed"),
        (observed(job=job("Complete", "STOPPED")), "Failed", "JobStopped"),
        (observed(suspended=True), "Suspended", "Suspended"),
        (observed(invalid="spec.topology.edges: graph is not connected"), "Failed", "InvalidSpec"),
    ],
)
def test_phase_from_kuberay(obs, phase, reason):
    status = compute_status(body(REPORTED), obs, now=T0)
    assert (status["phase"], status["reason"]) == (phase, reason)
    conds = conditions(status)
    assert conds["Ready"]["status"] == ("True" if phase in ("Running", "Succeeded") else "False")
    assert conds["Succeeded"]["status"] == ("True" if phase == "Succeeded" else "False")
    assert conds["Failed"]["status"] == ("True" if phase == "Failed" else "False")
    assert conds["Stalled"]["status"] == conds["Failed"]["status"]  # what kstatus (Flux) reads as Failed
    assert conds["JobRunning"]["status"] == ("True" if phase == "Running" else "False")
    assert set(status) <= set(OPERATOR_FIELDS)


def test_deployment_status_decides_before_job_status():
    # jobStatus may still say RUNNING when KubeRay has already given up on the RayJob.
    outcome = job_outcome(job("Failed", "RUNNING", "DeadlineExceeded", "passed activeDeadlineSeconds"))
    assert (outcome.phase, outcome.reason, outcome.message) == (
        "Failed",
        "DeadlineExceeded",
        "passed activeDeadlineSeconds",
    )
    assert job_outcome(job("Running", "SUCCEEDED")) is None
    assert job_outcome(None) is None


def test_failure_reason_and_message_land_in_the_failed_condition():
    status = compute_status(body(), observed(job=job("Failed", "FAILED", "AppFailed", "driver exited 1")), now=T0)
    failed = conditions(status)["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "AppFailed" and failed["message"] == "driver exited 1"


def test_success_waits_for_the_drivers_final_report():
    """KubeRay may say SUCCEEDED before the driver's last patch lands: ROUND must not be stale next to it."""
    complete = observed(cluster=READY_CLUSTER, job=job("Complete", "SUCCEEDED", end=T0))
    early = compute_status(body({"round": 19, "rounds": 20}), complete, now=T0)
    assert (early["phase"], early["reason"]) == ("Running", "AwaitingDriverReport")
    assert compute_status(body(REPORTED), complete, now=T0)["phase"] == "Succeeded"
    lost = compute_status(body({"round": 19, "rounds": 20}), complete, now=T1)  # five minutes later
    assert lost["phase"] == "Succeeded" and "final report never arrived" in conditions(lost)["Succeeded"]["message"]


def test_the_drivers_error_leads_the_failed_message():
    crashed = observed(job=job("Failed", "FAILED", "AppFailed", "Job entrypoint command failed with exit code 1"))
    status = compute_status(body({"driverError": "RuntimeError: loss is nan"}), crashed, now=T0)
    failed = conditions(status)["Failed"]
    assert failed["reason"] == "AppFailed"
    assert failed["message"].startswith("RuntimeError: loss is nan") and "exit code 1" in failed["message"]


def test_a_driver_stopped_by_signal_is_not_reported_as_a_training_error():
    stopped = observed(job=job("Failed", "FAILED", "AppFailed", "Job entrypoint command failed with exit code 143"))
    reason = "stopped by signal SIGTERM after round 7; checkpoint of round 7 kept, resume to continue"
    status = compute_status(body({"driverStopped": reason}), stopped, now=T0)
    failed = conditions(status)["Failed"]
    assert failed["reason"] == "StoppedBySignal"
    assert failed["message"].startswith(reason)


def test_last_transition_time_is_kept_while_a_condition_holds():
    first = compute_status(body(), observed(cluster=READY_CLUSTER, job=job("Running")), now=T0)
    again = compute_status(body(first), observed(cluster=READY_CLUSTER, job=job("Running")), now=T1)
    assert conditions(again)["Ready"]["lastTransitionTime"] == T0
    assert conditions(again)["ClusterProvisioned"]["lastTransitionTime"] == T0
    finished = body({**again, **REPORTED})
    done = compute_status(finished, observed(cluster=READY_CLUSTER, job=job("Complete", "SUCCEEDED")), now=T1)
    assert conditions(done)["JobRunning"]["lastTransitionTime"] == T1
    assert conditions(done)["Ready"]["lastTransitionTime"] == T0  # still True, now because it succeeded


def test_names_generation_attempts_and_dashboard():
    status = compute_status(
        body(generation=7), observed(cluster=READY_CLUSTER, job=job("Running", url="f-ray-head-svc.ns.svc:8265"))
    )
    assert status["observedGeneration"] == 7
    assert (status["rayClusterName"], status["rayJobName"], status["attempts"]) == ("f-ray", "f-abcde-1", 1)
    assert status["dashboardURL"] == "f-ray-head-svc.ns.svc:8265"
    assert all(c["observedGeneration"] == 7 for c in status["conditions"])


def test_nodes_healthy_comes_from_the_drivers_nodes_ready():
    healthy = compute_status(body({"nodesReady": "8/8"}), observed(cluster=READY_CLUSTER, job=job("Running")))
    sick = compute_status(body({"nodesReady": "7/8"}), observed(cluster=READY_CLUSTER, job=job("Running")))
    assert conditions(healthy)["NodesHealthy"]["status"] == "True"
    assert conditions(sick)["NodesHealthy"]["status"] == "False"
    assert "NodesHealthy" not in conditions(compute_status(body(), observed()))


def test_cluster_released_after_the_job_finished():
    status = compute_status(body(REPORTED), observed(job=job("Complete", "SUCCEEDED"), cluster_released=True))
    assert conditions(status)["ClusterProvisioned"]["reason"] == "ClusterReleased"


def test_only_changed_operator_fields_are_patched():
    previous = {"phase": "Running", "round": 4, "metrics": {"accuracy": 0.9}, "rayJobName": "a"}
    new = {"phase": "Running", "rayJobName": "b", "round": 0}
    assert changed_fields(previous, new) == {"rayJobName": "b"}


def test_every_status_field_written_is_declared_in_the_crd():
    """The API server silently drops a status field that the schema does not declare."""
    from pathlib import Path

    import yaml

    from red_runtime.report.status_sink import DRIVER_FIELDS

    crd = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "federation.yaml").read_text())
    declared = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(OPERATOR_FIELDS) | set(DRIVER_FIELDS) <= set(declared)


def test_a_superseded_attempts_report_is_ignored():
    """The last attempt's driver reported completionTime and driverError; a new RayJob now runs."""
    stale = {"completionTime": T0, "driverError": "RuntimeError: old attempt", "driverRayJob": "f-abcde-0"}
    complete = observed(cluster=READY_CLUSTER, job=job("Complete", "SUCCEEDED", end=T0))
    status = compute_status(body(stale), complete, now=T0)
    assert (status["phase"], status["reason"]) == ("Running", "AwaitingDriverReport")
    failed = compute_status(body(stale), observed(job=job("Failed", "FAILED", "AppFailed", "exit 1")), now=T0)
    assert conditions(failed)["Failed"]["message"] == "exit 1"
    current = {**stale, "driverRayJob": "f-abcde-1"}
    assert compute_status(body(current), complete, now=T0)["phase"] == "Succeeded"
    untagged = {k: v for k, v in stale.items() if k != "driverRayJob"}  # a driver of an older release
    assert compute_status(body(untagged), complete, now=T0)["phase"] == "Succeeded"
