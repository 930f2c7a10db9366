"""A Federation in each state GitOps tools meet, with the status the operator computes for it.

The operator's fields come from red_operator.status.compute_status on what KubeRay reports, the driver's
(round, progress, nodesReady) as the driver writes them: the health checks see real operator output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from red_operator.status import Observed, QueueWait, compute_status

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "digits-star.yaml"
NOW = "2026-01-01T00:00:00Z"
CLUSTER = "digits-star-ray"
JOB = "digits-star-1a2b3-1"
READY_CLUSTER = {"status": {"state": "ready", "conditions": [{"type": "RayClusterProvisioned", "status": "True"}]}}
DRIVER = {"round": 7, "rounds": 20, "progress": "7/20", "nodesReady": "8/8"}


def federation(generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"].update(
        namespace="team-a", uid="3f1c2a9e-0000-4000-8000-000000000001", generation=generation, creationTimestamp=NOW
    )
    if status is not None:
        doc["status"] = status
    return doc


def reconciled(obs: Observed, generation: int = 1, driver: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Federation after the driver's report (if any) and then the operator's pass, at `generation`."""
    reported = federation(generation, dict(driver or {}))
    return federation(generation, {**(driver or {}), **compute_status(reported, obs, now=NOW)})


def job(deployment: str, job_status: str = "", reason: str = "", message: str = "") -> dict[str, Any]:
    """A RayJob as KubeRay reports it."""
    status = {"jobDeploymentStatus": deployment, "jobStatus": job_status, "reason": reason, "message": message}
    return {"status": {k: v for k, v in status.items() if v}}


def states() -> dict[str, dict[str, Any]]:
    running = Observed(cluster=READY_CLUSTER, job=job("Running", "RUNNING"), cluster_name=CLUSTER, job_name=JOB)
    stale = reconciled(running, driver=DRIVER)
    stale["metadata"]["generation"] = 2  # the spec was edited; the operator has not seen it yet
    return {
        "new": federation(),
        "provisioning": reconciled(
            Observed(cluster={"status": {"state": ""}}, cluster_name=CLUSTER, job_name=JOB, attempts=1)
        ),
        "running": reconciled(
            Observed(cluster=READY_CLUSTER, job=job("Running", "RUNNING"), cluster_name=CLUSTER, job_name=JOB),
            driver=DRIVER,
        ),
        "succeeded": reconciled(
            Observed(job=job("Complete", "SUCCEEDED"), cluster_name=CLUSTER, job_name=JOB, cluster_released=True),
            driver={**DRIVER, "round": 20, "progress": "20/20", "completionTime": NOW},
        ),
        "failed": reconciled(
            Observed(
                cluster=READY_CLUSTER,
                job=job("Failed", "", "DeadlineExceeded", "the RayJob exceeded activeDeadlineSeconds"),
                cluster_name=CLUSTER,
                job_name=JOB,
                attempts=1,
            )
        ),
        "suspended": reconciled(Observed(cluster_name=CLUSTER, suspended=True)),
        "queued": reconciled(
            Observed(
                cluster={"spec": {"suspend": True}},
                cluster_name=CLUSTER,
                queue="team-a",
                waiting=QueueWait("team-a", "raycluster-digits-star-ray-3c9a1", "Queued", "insufficient quota"),
            )
        ),
        "stale": stale,
    }
