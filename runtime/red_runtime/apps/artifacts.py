"""Loading what a run left behind, safely: its summary and its model (red_api.names says where it is kept).

A Federation keeps its run folder (checkpoints/, metrics.jsonl, summary.json, model.pt, metrics.png,
nodes.json) in a folder named after it: on its claim, mounted at STORAGE_MOUNT in the head Pod, or under
its s3:// prefix. Status and `red fetch` name these places as URIs: pvc://CLAIM/PATH or s3://BUCKET/KEY.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from red_api.names import MODEL, SUMMARY
from red_api.spec import Federation


def code_references(fed: Federation) -> list[tuple[str, str]]:
    """The "package.module:name" references a Federation names (its dataset factory, its model class), with
    their fields: what loading its model imports and runs."""
    task = fed.spec.task
    refs = (("spec.task.dataset.name", task.dataset.name), ("spec.task.model.name", task.model.name))
    return [(field, ref) for field, ref in refs if ":" in ref]


def require_trust(fed: Federation, where: str, trust_code: bool | list[str]) -> None:
    """Refuse to load a run folder's model when its federation.yaml names code and the user did not say to
    trust it: a folder on shared storage may have been written by anyone who can write there. `trust_code`
    True trusts any; a list trusts those references only (what the Federation being served names itself)."""
    refs = code_references(fed)
    trusted = trust_code is True or (isinstance(trust_code, list) and all(ref in trust_code for _, ref in refs))
    if refs and not trusted:
        named = "; ".join(f"{field}: {ref!r}" for field, ref in refs)
        raise ValueError(
            f"{where}: its federation.yaml names code that loading the model would import and run ({named}); "
            "pass --trust-code if you trust whoever wrote it"
        )


def read_summary(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / SUMMARY).read_text())


def load_model(fed: Federation, folder: Path):
    """The final global model of a run folder, rebuilt from the spec. The state dict is read with
    weights_only=True: a file from shared storage can hold tensors only, never code."""
    import torch  # deferred here and below: torch and numpy, which `red fetch` without --evaluate never needs

    from red_runtime.learn.data import DataSource
    from red_runtime.learn.models import build_model

    spec = fed.spec
    source = DataSource(spec.task, spec.nodes.count)
    model = build_model(spec.task.model, source.input_shape, source.classes, spec.task.seed)
    state = torch.load(Path(folder) / MODEL, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model, source


def score(fed: Federation, folder: Path) -> tuple[float, float]:
    """Loss and accuracy of a run folder's model on the Federation's test set, as the driver measured them."""
    import torch  # deferred: torch, as in load_model

    from red_runtime.learn.models import get_flat
    from red_runtime.learn.training import evaluate

    model, source = load_model(fed, folder)
    return evaluate(model, get_flat(model), source.test_set(), torch.device("cpu"))
