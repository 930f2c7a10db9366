"""The console sink: a live progress bar, one tick per round, and a line when the run starts and ends."""

from __future__ import annotations

import sys
from typing import Any

from red_runtime.engine.events import NodeStatus, RoundReport, RunInfo, Sink, Summary


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
