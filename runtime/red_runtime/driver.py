"""The federation driver: the same code in a RayJob on Kubernetes and under `red run` on a laptop.

It validates everything it can before reserving anything, then builds one placement group (a bundle
for the topology manager, one per node-actor slot), runs the rounds through the topology's schema,
evaluates each round's model on the held-out test set, and reports. The placement group and the
actors are removed on every exit path, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from red_runtime.data import DataSource
from red_runtime.imports import resolve
from red_runtime.models import build_model, get_flat
from red_runtime.placement import SlotPlan, plan_slots
from red_runtime.pool import NodePool
from red_runtime.privacy import epsilon
from red_runtime.reporting import (
    FAILED,
    HEALTHY,
    STRAGGLING,
    NodeStatus,
    Reporter,
    RoundReport,
    RunInfo,
    Summary,
    now_iso,
)
from red_runtime.schemas import SCHEMAS, Context, RoundOutcome
from red_runtime.spec import Federation
from red_runtime.strategies import make_strategy
from red_runtime.topology import TopologyManager, build_graph, node_id
from red_runtime.training import evaluate

log = logging.getLogger("red.driver")
EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 1, 2, 130
PLACEMENT_TIMEOUT_S = float(os.environ.get("RED_PLACEMENT_TIMEOUT_S", "120"))


@dataclass
class Prepared:
    """Everything checked and built before any Ray resource is reserved."""

    source: DataSource
    model: torch.nn.Module
    params: np.ndarray
    plan: SlotPlan


def cluster_machines() -> list[dict[str, float]]:
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def check_references(fed: Federation) -> None:
    """Import the user's dataset and model references now, so a typo fails before Ray starts."""
    task = fed.spec.task
    for ref, path in (
        (task.dataset.name, "spec.task.dataset.name"),
        (task.model.name, "spec.task.model.name"),
    ):
        if ":" in ref:
            resolve(ref, path)


def prepare(fed: Federation, machines: list[dict[str, float]]) -> Prepared:
    """Resolve the dataset and model and plan the slots; raises ValueError naming the field on bad input."""
    spec = fed.spec
    source = DataSource(spec.task, spec.nodes.count)
    model = build_model(spec.task.model, source.input_shape, source.classes, spec.task.seed)
    plan = plan_slots(spec, machines)
    build_graph(spec.topology, spec.nodes.count, spec.task.seed)
    return Prepared(source=source, model=model, params=get_flat(model), plan=plan)


def sample_nodes(fed: Federation, round_no: int, exclude: set[int]) -> list[int]:
    """The nodes that train this round: `algorithm.fraction` of the live ones, seeded by round."""
    spec = fed.spec
    live = np.array([i for i in range(spec.nodes.count) if i not in exclude])
    if spec.algorithm.fraction >= 1.0:
        return live.tolist()
    k = min(len(live), max(spec.algorithm.minNodes, math.ceil(spec.algorithm.fraction * spec.nodes.count)))
    rng = np.random.default_rng([spec.task.seed, 7, round_no])
    return sorted(rng.choice(live, size=k, replace=False).tolist())


def weighted(results: list[dict], key: str, weight: str) -> float | None:
    rows = [r for r in results if key in r]
    total = sum(r[weight] for r in rows)
    return sum(r[key] * r[weight] for r in rows) / total if total else None


class Driver:
    def __init__(self, fed: Federation, reporter: Reporter):
        self.fed = fed
        self.spec = fed.spec
        self.reporter = reporter
        res = self.spec.nodes.resources
        self.nodes = [NodeStatus(id=node_id(i), gpu=res.gpu) for i in range(self.spec.nodes.count)]
        self.pg = None
        self.pool: NodePool | None = None
        self.manager = None

    def run(self) -> Summary:
        began = time.monotonic()
        prepared = prepare(self.fed, cluster_machines())
        torch.set_num_threads(1)  # the node actors own the cores
        test_set = prepared.source.test_set()
        try:
            ctx = self._start(prepared)
            schema = SCHEMAS[self.spec.topology.kind](ctx)
            startup = time.monotonic() - began
            info = RunInfo(
                name=self.fed.name,
                namespace=self.fed.namespace,
                rounds=self.spec.rounds,
                nodes=self.spec.nodes.count,
                slots=prepared.plan.slots,
                topology=self.spec.topology.kind,
                algorithm=self.spec.algorithm.name,
                startup_seconds=startup,
            )
            self.reporter.started(info, self.nodes)
            return self._rounds(schema, ctx, prepared, test_set, info)
        except BaseException as err:
            self.reporter.failed(
                f"{type(err).__name__}: {err}" if not isinstance(err, KeyboardInterrupt) else "interrupted"
            )
            raise
        finally:
            self.stop()
            self.reporter.close()

    def _start(self, prepared: Prepared) -> Context:
        spec = self.spec
        self.pg = placement_group(prepared.plan.bundles, strategy=spec.placement.strategy, name=f"red-{self.fed.name}")
        ready, _ = ray.wait([self.pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            raise RuntimeError(
                f"placement group of {len(prepared.plan.bundles)} bundles ({prepared.plan.node_bundle} per node "
                f"actor, strategy {spec.placement.strategy}) was not placed within {PLACEMENT_TIMEOUT_S:.0f}s"
            )
        graph = build_graph(spec.topology, spec.nodes.count, spec.task.seed)
        for status in self.nodes:
            status.bundle = 1 + int(status.id.split("-")[1]) % prepared.plan.slots
        self.manager = (
            ray.remote(TopologyManager)
            .options(
                num_cpus=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=0),
            )
            .remote([tuple(e) for e in graph.edges], list(graph.nodes), spec.topology.kind)
        )
        self.pool = NodePool(spec, prepared.plan, self.pg, self.manager)
        sizes = dict(zip([node_id(i) for i in range(spec.nodes.count)], prepared.source.node_sizes().tolist()))
        return Context(
            spec=spec,
            pool=self.pool,
            manager=self.manager,
            graph=graph,
            strategy=make_strategy(spec.algorithm.name, dict(spec.algorithm.options)),
            params=prepared.params,
            sizes=sizes,
        )

    def _rounds(self, schema, ctx: Context, prepared: Prepared, test_set, info: RunInfo) -> Summary:
        spec = self.spec
        device = torch.device("cpu")
        seconds: list[float] = []
        history: list[dict] = []
        loss = accuracy = float("nan")
        stopped_early = False
        rounds_run = 0
        for round_no in range(1, spec.rounds + 1):
            started = time.monotonic()
            failed = {i for i, n in enumerate(self.nodes) if n.state == FAILED}
            outcome = schema.run_round(round_no, sample_nodes(self.fed, round_no, failed))
            loss, accuracy = evaluate(prepared.model, outcome.params, test_set, device)
            seconds.append(time.monotonic() - started)
            rounds_run = round_no
            before = [n.state for n in self.nodes]
            self._mark_nodes(round_no, outcome)
            if before != [n.state for n in self.nodes]:
                self.reporter.nodes_changed(self.nodes)
            metrics = {"train_loss": weighted(outcome.results, "train_loss", "samples")}
            metrics["eval_loss"] = weighted(outcome.results, "eval_loss", "eval_samples")
            metrics["eval_accuracy"] = weighted(outcome.results, "eval_accuracy", "eval_samples")
            metrics.update(outcome.extra)
            if spec.algorithm.privacy is not None:
                metrics["epsilon"] = epsilon(round_no, spec.algorithm.fraction, spec.algorithm.privacy)
            report = RoundReport(
                round=round_no,
                rounds=spec.rounds,
                loss=loss,
                accuracy=accuracy,
                nodes_healthy=sum(n.state == HEALTHY for n in self.nodes),
                nodes_total=len(self.nodes),
                seconds=seconds[-1],
                metrics={k: v for k, v in metrics.items() if v is not None},
            )
            history.append(report.as_dict())
            self.reporter.round_done(report, self.nodes)
            if spec.algorithm.targetAccuracy is not None and accuracy >= spec.algorithm.targetAccuracy:
                stopped_early = round_no < spec.rounds
                break
        final = {}
        if "test" in spec.nodes.roles:
            final = self._test_role(ctx.params)
        summary = Summary(
            name=self.fed.name,
            rounds_run=rounds_run,
            final_accuracy=accuracy,
            final_loss=loss,
            seconds_per_round=statistics.median(seconds),
            nodes=spec.nodes.count,
            slots=prepared.plan.slots,
            startup_seconds=info.startup_seconds,
            stopped_early=stopped_early,
            actors_started=len(ctx.pool.actors),
            metrics=final,
            history=history,
        )
        self.reporter.finished(summary, ctx.params, prepared.model)
        return summary

    def _mark_nodes(self, round_no: int, outcome: RoundOutcome) -> None:
        seen = now_iso()
        for r in outcome.results:
            status = self.nodes[r["index"]]
            status.state, status.lastRound, status.lastSeen = HEALTHY, round_no, seen
        for i in outcome.straggling:
            self.nodes[i].state = STRAGGLING
        for i in outcome.failed:
            self.nodes[i].state = FAILED

    def _test_role(self, params: np.ndarray) -> dict[str, float]:
        """Nodes with the test role evaluate the final model on their own held-out split."""
        assert self.pool is not None
        ref = ray.put(params)
        by_slot = self.pool.by_slot([i for i, n in enumerate(self.nodes) if n.state == HEALTHY])
        parts = ray.get([self.pool.actor(s).test.remote(idx, ref) for s, idx in by_slot.items()])
        count = sum(p["count"] for p in parts)
        if not count:
            return {}
        return {
            "node_test_loss": sum(p["loss_sum"] for p in parts) / count,
            "node_test_accuracy": sum(p["correct"] for p in parts) / count,
        }

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        if self.manager is not None:
            ray.kill(self.manager, no_restart=True)
            self.manager = None
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None


@contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Connect to `address`, or start an embedded Ray sized to this machine; always shut down."""
    if ray.is_initialized():
        yield
        return
    # "local" always starts a fresh Ray, even when another one runs on this machine.
    kwargs = (
        {"address": address}
        if address
        else {"address": "local", "num_cpus": os.cpu_count(), "include_dashboard": False}
    )
    ray.init(logging_level=logging.WARNING, log_to_driver=True, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def execute(fed: Federation, sinks: list, address: str | None) -> int:
    """Run `fed` to the end on Ray at `address` (embedded if None); the exit code says how it ended."""
    from red_runtime.reporting import Reporter

    try:
        with ray_session(address):
            Driver(fed, Reporter(sinks)).run()
    except KeyboardInterrupt:
        print("red: interrupted; placement group removed and Ray shut down", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValueError as err:
        print(f"red: invalid Federation: {err}", file=sys.stderr)
        return EXIT_INVALID
    except Exception as err:
        print(f"red: federation {fed.name} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def main(argv: list[str] | None = None) -> int:
    """The RayJob entrypoint: read the Federation from the API server and report into its status."""
    from red_runtime.kube import api_client, parse_ref, patch_status, read_federation
    from red_runtime.outputs import ConsoleSink, RunFolderSink
    from red_runtime.spec import SpecError
    from red_runtime.status_sink import StatusSink

    parser = argparse.ArgumentParser(prog="python -m red_runtime.driver", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--federation", default=os.environ.get("RED_FEDERATION"), help="NAMESPACE/NAME to run")
    source.add_argument("--manifest", help="a Federation YAML file (no status reporting)")
    parser.add_argument("--out", default=None, help="run folder (default /tmp/red/<name>)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray address (default: embedded)")
    args = parser.parse_args(argv)
    sinks: list = [ConsoleSink(stream=sys.stdout)]
    try:
        if args.manifest:
            from red_runtime.spec import load_manifest

            fed = load_manifest(args.manifest)
        else:
            namespace, name = parse_ref(args.federation)
            api = api_client()
            fed, _ = read_federation(api, namespace, name)
            sinks.append(StatusSink(lambda body: patch_status(api, namespace, name, body)))
        check_references(fed)
    except (SpecError, ValueError) as err:
        print(f"red: {err}", file=sys.stderr)
        return EXIT_INVALID
    sinks.append(RunFolderSink(Path(args.out or f"/tmp/red/{fed.name}")))
    return execute(fed, sinks, args.address)


if __name__ == "__main__":
    sys.exit(main())
