"""Local sinks: a live console progress bar and the run folder (metrics, summary, model, plot, and
TensorBoard event files under tensorboard/, written by red_runtime.tracking)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from red_api.names import CHECKPOINTS, MANIFEST, METRICS, MODEL, SUMMARY
from red_runtime import strict_json
from red_runtime.plot import plot_history, warm_plotting
from red_runtime.reporting import NodeStatus, RoundReport, RunInfo, Sink, Summary
from red_runtime.storage import Mirror, MirrorSink, is_remote


class ConsoleSink(Sink):
    """A tqdm bar, one tick per round, with loss, accuracy, healthy nodes and seconds per round."""

    def __init__(self, stream: Any = None):
        self.stream = stream or sys.stderr
        self.bar = None

    def started(self, info: RunInfo, nodes: list[NodeStatus]) -> None:
        from tqdm import tqdm

        resumed = f", resuming after round {info.resumed_from}" if info.resumed_from else ""
        print(
            f"red: {info.name}: {info.nodes} nodes on {info.slots} actor slot(s), {info.topology} topology, "
            f"{info.algorithm}, {info.rounds} rounds (started in {info.startup_seconds:.1f}s{resumed})",
            file=self.stream,
        )
        attackers = [n for n in nodes if n.attack]
        if attackers:
            ids = ", ".join(n.id for n in attackers[:10]) + (" ..." if len(attackers) > 10 else "")
            print(f"red: {len(attackers)} simulated attacker(s), {attackers[0].attack}: {ids}", file=self.stream)
        self.bar = tqdm(
            total=info.rounds,
            initial=info.resumed_from,
            desc=info.name,
            unit="round",
            file=self.stream,
            dynamic_ncols=True,
        )

    def round_done(self, report: RoundReport, nodes: list[NodeStatus]) -> None:
        if self.bar is None:
            return
        self.bar.set_postfix(
            loss=f"{report.loss:.4f}",
            acc=f"{report.accuracy:.4f}",
            nodes=f"{report.nodes_healthy}/{report.nodes_total}",
            s_per_round=f"{report.seconds:.2f}",
            refresh=False,
        )
        self.bar.update(1)

    def finished(self, summary: Summary, params: Any, model: Any) -> None:
        self.close()
        early = " (target accuracy reached)" if summary.stopped_early else ""
        print(
            f"red: {summary.name}: done after {summary.rounds_run} rounds{early}: accuracy "
            f"{summary.final_accuracy:.4f}, loss {summary.final_loss:.4f}, {summary.seconds_per_round:.2f}s/round",
            file=self.stream,
        )

    def failed(self, reason: str) -> None:
        self.close()
        print(f"red: federation failed: {reason}", file=self.stream)

    def stopped(self, reason: str) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def atomic_write(path: Path, data: bytes) -> None:
    """Write then rename, so a reader (or a crash) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
        import torch

        from red_runtime.models import set_flat

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
        from red_runtime.tracking import TensorBoardSink  # here: tracking imports this module's file names

        self.sinks: list[Sink] = [RunFolderSink(self.folder, resume=resume), TensorBoardSink(self.folder)]
        if manifest is not None:  # the folder says what made it: `red fetch --evaluate` rebuilds the model
            atomic_write(self.folder / MANIFEST, yaml.safe_dump(plain_manifest(manifest), sort_keys=False).encode())
        if self.mirror:
            self.sinks.append(MirrorSink(self.mirror))

    @property
    def checkpoints(self) -> Path:
        return self.folder / CHECKPOINTS

    def finish(self) -> None:
        """The last push, whose failure the caller reports (a sink's failure is only logged)."""
        if self.mirror:
            self.mirror.push()
