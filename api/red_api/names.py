"""Names that Red's parts agree on: the API's group and kind, the run folder's files, where a Federation keeps
them on Kubernetes (claim, mount, URIs), the driver's module, and the name patterns Kubernetes enforces.

The operator reads these without importing the runtime; the runtime writes what they name.
"""

from __future__ import annotations

import re
from typing import Protocol

API_GROUP = "red.dev"
VERSION = "v1alpha1"
API_VERSION = f"{API_GROUP}/{VERSION}"
KIND = "Federation"
PLURAL = "federations"
# The Ray that Red pins (pyproject.toml) and that its runtime image carries; KubeRay needs it stated on the
# RayCluster (spec.rayVersion) to turn on Ray's token authentication.
RAY_VERSION = "2.60.0"
DEFAULT_IMAGE = "ghcr.io/red-dev/red-runtime:0.1.0"
# The RayJob's entrypoint (red_operator.builders) and what the Pods' preStop hook looks for (red_runtime.apps.drain).
DRIVER_MODULE = "red_runtime.apps.launch"
DRAIN_MODULE = "red_runtime.apps.drain"
# The Ray Serve application that loads a run folder's model (red_runtime.apps.serving).
SERVE_IMPORT_PATH = "red_runtime.apps.serving:build_app"
# How long Serve's proxy gives a request (queueing and the batch included) before it answers 408: `red serve`
# and the RayService's serveConfigV2 alike.
SERVE_REQUEST_TIMEOUT_S = 60.0

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# The run folder's files; status.artifacts and `red fetch` name them too.
MODEL = "model.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
MANIFEST = "federation.yaml"

# Where the head Pod mounts the Federation's claim, and the volume it comes from.
STORAGE_MOUNT = "/red/storage"
STORAGE_VOLUME = "red-storage"
PVC = "pvc://"


class _Stored(Protocol):
    """What the layout needs of a Federation (red_api.spec.Federation)."""

    name: str
    spec: object


def join(location: str, *parts: str) -> str:
    return "/".join([str(location).rstrip("/"), *parts])


def claim_name(fed: _Stored) -> str:
    """The claim a Federation keeps its folder on: the one it names, else `<name>-storage`, the operator's."""
    return fed.spec.storage.claim.claimName or f"{fed.name}-storage"


def owns_claim(fed: _Stored) -> bool:
    """Whether the operator creates (and, with retain: false, deletes) the claim."""
    return not fed.spec.storage.uri and not fed.spec.storage.claim.claimName


def run_location(fed: _Stored) -> str:
    """Where the driver in the head Pod writes: a folder on the mounted claim, or an s3:// folder."""
    if fed.spec.storage.uri:
        return join(fed.spec.storage.uri, fed.name)
    return f"{STORAGE_MOUNT}/{fed.name}"


def artifacts_base(fed: _Stored) -> str:
    """The run folder as a URI anyone can read: pvc://claim/name or s3://bucket/prefix/name."""
    if fed.spec.storage.uri:
        return join(fed.spec.storage.uri, fed.name)
    return f"{PVC}{claim_name(fed)}/{fed.name}"


def is_checkpoint_file(name: str) -> bool:
    """Whether a file name is a checkpoint's (`round-000012-<owner>.pt` and its .json): what a mirror of the run
    folder deletes once the checkpointer has pruned it, in whichever folder spec.checkpoint.path names."""
    return re.fullmatch(r"round-\d{6}-[0-9a-f]+\.(pt|json)", name) is not None


def artifact_uris(base: str, checkpoints: str = "") -> dict[str, str]:
    """status.artifacts: the model, the metrics and the checkpoint folder (spec.checkpoint.path, a folder
    inside the run folder; CHECKPOINTS if empty) under a run folder's URI."""
    folder = join(base, checkpoints or CHECKPOINTS) + "/"
    return {"model": join(base, MODEL), "metrics": join(base, METRICS), "checkpoint": folder}
