"""The run folder, local or s3://: metrics, summary, model, plot, checkpoints, the manifest, and TensorBoard
event files under tensorboard/ (written by red_runtime.report.tracking)."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from red_api.names import CHECKPOINTS, MANIFEST, METRICS, MODEL, SUMMARY
from red_runtime import strict_json
from red_runtime.engine.events import NodeStatus, RoundReport, RunInfo, Sink, Summary
from red_runtime.files import atomic_write
from red_runtime.report.plot import plot_history, warm_plotting
from red_runtime.report.storage import Mirror, MirrorSink, is_remote
from red_runtime.report.tracking import TensorBoardSink


class RunFolderSink(Sink):
    """metrics.jsonl (one object per round), summary.json, model.pt, nodes.json and metrics.png."""

    def __init__(self, out: Path, resume: bool = False):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.history: list[dict[str, Any]] = []
        metrics = self.out / METRICS
        if resume and metrics.exists():
            self.history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        self._metrics = open(metrics, "a" if resume else "w", encoding="utf-8")  # noqa: SIM115 (open for the run)

    def started(self, info: RunInfo, nodes: list[NodeStatus]) -> None:
        # matplotlib's import (about half a second) goes on while the rounds run, where the driver mostly waits,
        # rather than after the last one; finished's own import waits for it.
        threading.Thread(target=warm_plotting, name="red-import-matplotlib", daemon=True).start()
        # A resumed run drops rounds after its checkpoint: they are about to be run again.
        kept = [h for h in self.history if h["round"] <= info.resumed_from]
        if len(kept) != len(self.history):
            self.history = kept
            self._metrics.close()
            (self.out / METRICS).write_text("".join(strict_json.dumps(h) + "\n" for h in kept))
            self._metrics = open(self.out / METRICS, "a", encoding="utf-8")  # noqa: SIM115

    def round_done(self, report: RoundReport, nodes: list[NodeStatus]) -> None:
        row = report.as_dict()
        self.history.append(row)
        self._metrics.write(strict_json.dumps(row) + "\n")
        self._metrics.flush()
        self.nodes_changed(nodes)  # lastRound and lastSeen move every round

    def finished(self, summary: Summary, params: Any, model: Any) -> None:
        import torch  # deferred: torch, for the one sink that writes a model

        from red_runtime.learn.models import set_flat

        began = time.perf_counter()
        set_flat(model, params)
        torch.save(model.state_dict(), self.out / MODEL)
        plot_history(self.history, self.out / "metrics.png", title=summary.name)
        if summary.phases:  # the summary is written last, so that it counts its own folder's writing
            spent = time.perf_counter() - began
            for name in ("write", "total"):
                summary.phases[name] = round(summary.phases.get(name, 0.0) + spent, 3)
        atomic_write(self.out / SUMMARY, strict_json.dumps(summary.as_dict(), indent=2).encode())

    def nodes_changed(self, nodes: list[NodeStatus]) -> None:
        atomic_write(self.out / "nodes.json", strict_json.dumps([n.as_dict() for n in nodes], indent=2).encode())

    def close(self) -> None:
        self._metrics.close()


def plain_manifest(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A Federation as a user would apply it again: no status, no server-side metadata."""
    meta = doc.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "namespace") if k in meta}
    return {"apiVersion": doc.get("apiVersion"), "kind": doc.get("kind"), "metadata": kept, "spec": doc.get("spec")}


class RunFolder:
    """Where a run writes: a local folder, or for an s3:// location a local copy that a Mirror keeps in step
    with it (pulled before a resumed run, pushed as it goes and once more at the end)."""

    def __init__(
        self,
        location: str | os.PathLike,
        resume: bool,
        staging: Path | None = None,
        manifest: Mapping[str, Any] | None = None,
    ):
        self.location = str(location)
        self.mirror = None
        self.folder = Path(location)
        if is_remote(self.location):
            self.folder = Path(staging or tempfile.mkdtemp(prefix="red-run-"))
            self.mirror = Mirror(self.folder, self.location)
            # A StorageError here stops the run before any work.
            if resume:
                self.mirror.pull()
            else:
                self.mirror.check()
        self.sinks: list[Sink] = [RunFolderSink(self.folder, resume=resume), TensorBoardSink(self.folder)]
        if manifest is not None:  # the folder says what made it: `red fetch --evaluate` rebuilds the model
            atomic_write(self.folder / MANIFEST, yaml.safe_dump(plain_manifest(manifest), sort_keys=False).encode())
        if self.mirror:
            self.sinks.append(MirrorSink(self.mirror))

    def checkpoints(self, path: str = "") -> Path:
        """The checkpoints' folder: spec.checkpoint.path inside this run folder (red_api refuses one that
        would leave it), else CHECKPOINTS."""
        return self.folder / (path or CHECKPOINTS)

    def finish(self) -> None:
        """The last push, whose failure the caller reports (a sink's failure is only logged)."""
        if self.mirror:
            self.mirror.push()
