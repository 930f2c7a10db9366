"""What a run leaves behind, where it is kept on Kubernetes, and how to load it safely.

A Federation keeps its run folder (checkpoints/, metrics.jsonl, summary.json, model.pt, metrics.png,
nodes.json) in a folder named after it: on its claim, mounted at STORAGE_MOUNT in the head Pod, or under
its s3:// prefix. Status and `red fetch` name these places as URIs: pvc://CLAIM/PATH or s3://BUCKET/KEY.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from red_runtime.outputs import CHECKPOINTS, METRICS, MODEL, SUMMARY
from red_runtime.spec import Federation
from red_runtime.storage import join

STORAGE_MOUNT = "/red/storage"
PVC = "pvc://"


def claim_name(fed: Federation) -> str:
    """The claim a Federation keeps its folder on: the one it names, else `<name>-storage`, the operator's."""
    return fed.spec.storage.claim.claimName or f"{fed.name}-storage"


def owns_claim(fed: Federation) -> bool:
    """Whether the operator creates (and, with retain: false, deletes) the claim."""
    return not fed.spec.storage.uri and not fed.spec.storage.claim.claimName


def run_location(fed: Federation) -> str:
    """Where the driver in the head Pod writes: a folder on the mounted claim, or an s3:// folder."""
    if fed.spec.storage.uri:
        return join(fed.spec.storage.uri, fed.name)
    return f"{STORAGE_MOUNT}/{fed.name}"


def artifacts_base(fed: Federation) -> str:
    """The run folder as a URI anyone can read: pvc://claim/name or s3://bucket/prefix/name."""
    if fed.spec.storage.uri:
        return join(fed.spec.storage.uri, fed.name)
    return f"{PVC}{claim_name(fed)}/{fed.name}"


def artifact_uris(base: str) -> dict[str, str]:
    """status.artifacts: the model, the metrics and the checkpoint folder under a run folder's URI."""
    return {"model": join(base, MODEL), "metrics": join(base, METRICS), "checkpoint": join(base, CHECKPOINTS) + "/"}


def read_summary(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / SUMMARY).read_text())


def load_model(fed: Federation, folder: Path):
    """The final global model of a run folder, rebuilt from the spec. The state dict is read with
    weights_only=True: a file from shared storage can hold tensors only, never code."""
    import torch

    from red_runtime.data import DataSource
    from red_runtime.models import build_model

    spec = fed.spec
    source = DataSource(spec.task, spec.nodes.count)
    model = build_model(spec.task.model, source.input_shape, source.classes, spec.task.seed)
    state = torch.load(Path(folder) / MODEL, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model, source


def score(fed: Federation, folder: Path) -> tuple[float, float]:
    """Loss and accuracy of a run folder's model on the Federation's test set, as the driver measured them."""
    import torch

    from red_runtime.models import get_flat
    from red_runtime.training import evaluate

    model, source = load_model(fed, folder)
    return evaluate(model, get_flat(model), source.test_set(), torch.device("cpu"))
