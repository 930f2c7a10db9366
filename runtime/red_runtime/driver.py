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
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from red_runtime import checkpoint
from red_runtime.data import DataSource
from red_runtime.imports import resolve
from red_runtime.models import build_model, get_flat
from red_runtime.placement import SlotPlan, plan_slots
from red_runtime.pool import NodePool
from red_runtime.privacy import epsilon
from red_runtime.reporting import (
    FAILED,
    HEALTHY,
    RESTARTING,
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
from red_runtime.topology import TopologyManager, build_graph, manager_name, node_id, relink
from red_runtime.training import evaluate

log = logging.getLogger("red.driver")
EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 1, 2, 130
PLACEMENT_TIMEOUT_S = float(os.environ.get("RED_PLACEMENT_TIMEOUT_S", "120"))
# How long a crashed actor may take to come back (a restart re-imports torch) before it counts as gone.
HEALTH_TIMEOUT_S = float(os.environ.get("RED_HEALTH_TIMEOUT_S", "60"))


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
    """The nodes that train this round: `algorithm.fraction` of the live ones, seeded by round.

    Under privacy every live node trains and each one's own secret coin decides whether its update
    counts (see privacy.py), so the sampling seen here, and in the nodes' states, reveals nothing.
    """
    spec = fed.spec
    live = np.array([i for i in range(spec.nodes.count) if i not in exclude])
    if spec.algorithm.fraction >= 1.0 or spec.algorithm.privacy is not None:
        return live.tolist()
    k = min(len(live), max(spec.algorithm.minNodes, math.ceil(spec.algorithm.fraction * spec.nodes.count)))
    rng = np.random.default_rng([spec.task.seed, 7, round_no])
    return sorted(rng.choice(live, size=k, replace=False).tolist())


def weighted(results: list[dict], key: str, weight: str) -> float | None:
    rows = [r for r in results if key in r]
    total = sum(r[weight] for r in rows)
    return sum(r[key] * r[weight] for r in rows) / total if total else None


class Driver:
    def __init__(
        self,
        fed: Federation,
        reporter: Reporter,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ):
        self.fed = fed
        self.spec = fed.spec
        self.reporter = reporter
        res = self.spec.nodes.resources
        self.nodes = [NodeStatus(id=node_id(i), gpu=res.gpu) for i in range(self.spec.nodes.count)]
        path = self.spec.checkpoint.path or checkpoint_dir
        self.checkpoint_dir = Path(path) if path else None
        # Whose checkpoints these are: on Kubernetes the Federation's uid, so one re-created under the same
        # name starts afresh instead of resuming its predecessor; locally (`red run`) its name.
        self.checkpoint_owner = fed.uid or fed.name
        self.checkpoint_training = checkpoint.training_digest(fed.spec)
        self.resume = resume
        self.history: list[dict] = []
        self.pids: dict[int, int] = {}  # slot -> process id of the actor incarnation last seen
        self.dead_slots: set[int] = set()
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
            first_round = self._restore(ctx, schema) + 1
            info = RunInfo(
                name=self.fed.name,
                namespace=self.fed.namespace,
                rounds=self.spec.rounds,
                nodes=self.spec.nodes.count,
                slots=prepared.plan.slots,
                topology=self.spec.topology.kind,
                algorithm=self.spec.algorithm.name,
                startup_seconds=time.monotonic() - began,
                resumed_from=first_round - 1,
            )
            self.reporter.started(info, self.nodes)
            return self._rounds(schema, ctx, prepared, test_set, info, first_round)
        except BaseException as err:
            self.reporter.failed(failure_reason(err))
            raise
        finally:
            self.stop()
            self.reporter.close()

    def _start(self, prepared: Prepared) -> Context:
        spec = self.spec
        plan = prepared.plan
        self.pg = placement_group(plan.bundles, strategy=spec.placement.strategy, name=f"red-{self.fed.name}")
        ready, _ = ray.wait([self.pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            raise RuntimeError(
                f"placement group of {len(plan.bundles)} bundles ({plan.node_bundle} per node actor, strategy "
                f"{spec.placement.strategy}) was not placed within {PLACEMENT_TIMEOUT_S:.0f}s"
            )
        graph = build_graph(spec.topology, spec.nodes.count, spec.task.seed)
        for i, status in enumerate(self.nodes):
            status.bundle = 1 + i % plan.slots
        self.manager = (
            ray.remote(TopologyManager)
            .options(
                name=manager_name(self.fed.name),
                num_cpus=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=0),
            )
            .remote([tuple(e) for e in graph.edges], list(graph.nodes), spec.topology.kind)
        )
        self.pool = NodePool(spec, plan, self.pg, self.fed.name)
        ids = [node_id(i) for i in range(spec.nodes.count)]
        return Context(
            spec=spec,
            pool=self.pool,
            manager=self.manager,
            graph=graph,
            strategy=make_strategy(spec.algorithm.name, dict(spec.algorithm.options)),
            params=prepared.params,
            sizes=dict(zip(ids, prepared.source.node_sizes().tolist())),
        )

    def _restore(self, ctx: Context, schema) -> int:
        """Continue from the newest readable checkpoint; returns the last round it holds (0: none)."""
        if not (self.resume and self.checkpoint_dir):
            return 0
        ckpt = checkpoint.latest(self.checkpoint_dir, self.checkpoint_owner, self.checkpoint_training)
        if ckpt is None:
            return 0
        ctx.params = ckpt.params
        ctx.strategy.load_state_dict(ckpt.strategy)
        self.history = list(ckpt.history)
        self.nodes = [NodeStatus.from_dict(n) for n in ckpt.nodes]
        assert self.pool is not None
        by_slot: dict[int, dict] = {}
        for index, kept in ckpt.node_states.items():
            by_slot.setdefault(self.pool.slot_of(index), {})[index] = kept
        ray.get([self.pool.actor(slot).import_state.remote(states) for slot, states in by_slot.items()])
        failed = [n.id for n in self.nodes if n.state == FAILED]
        if failed:
            self._relink(ctx, schema, failed)
        schema.resumed()
        log.info("resumed %s after round %d from %s", self.fed.name, ckpt.round, self.checkpoint_dir)
        return ckpt.round

    def _rounds(self, schema, ctx: Context, prepared: Prepared, test_set, info: RunInfo, first: int) -> Summary:
        spec = self.spec
        device = torch.device("cpu")
        loss = accuracy = float("nan")
        stopped_early = False
        for round_no in range(first, spec.rounds + 1):
            started = time.monotonic()
            failed = {i for i, n in enumerate(self.nodes) if n.state == FAILED}
            sampled = sample_nodes(self.fed, round_no, failed)
            self._start_actors(sampled)
            outcome = schema.run_round(round_no, sampled)
            loss, accuracy = evaluate(prepared.model, outcome.params, test_set, device)
            before = [(n.state, n.restarts) for n in self.nodes]
            self._mark_nodes(round_no, outcome)
            self._check_health(ctx, schema, outcome)
            if before != [(n.state, n.restarts) for n in self.nodes]:
                self.reporter.nodes_changed(self.nodes)
            report = RoundReport(
                round=round_no,
                rounds=spec.rounds,
                loss=loss,
                accuracy=accuracy,
                nodes_healthy=sum(n.state == HEALTHY for n in self.nodes),
                nodes_total=len(self.nodes),
                seconds=time.monotonic() - started,
                metrics=self._round_metrics(round_no, outcome),
            )
            self.history.append(report.as_dict())
            self.reporter.round_done(report, self.nodes)
            self._maybe_checkpoint(round_no, ctx)
            if spec.algorithm.targetAccuracy is not None and accuracy >= spec.algorithm.targetAccuracy:
                stopped_early = round_no < spec.rounds
                break
        if first > spec.rounds and self.history:
            loss, accuracy = self.history[-1]["loss"], self.history[-1]["accuracy"]
        final = self._test_role(ctx.params) if "test" in spec.nodes.roles else {}
        summary = Summary(
            name=self.fed.name,
            rounds_run=self.history[-1]["round"] if self.history else 0,
            final_accuracy=accuracy,
            final_loss=loss,
            seconds_per_round=statistics.median([h["seconds"] for h in self.history] or [0.0]),
            nodes=spec.nodes.count,
            slots=info.slots,
            startup_seconds=info.startup_seconds,
            stopped_early=stopped_early,
            actors_started=len(ctx.pool.actors),
            metrics=final,
            history=list(self.history),
        )
        self.reporter.finished(summary, ctx.params, prepared.model)
        return summary

    def _round_metrics(self, round_no: int, outcome: RoundOutcome) -> dict[str, float]:
        spec = self.spec
        metrics = {
            "train_loss": weighted(outcome.results, "train_loss", "samples"),
            "eval_loss": weighted(outcome.results, "eval_loss", "eval_samples"),
            "eval_accuracy": weighted(outcome.results, "eval_accuracy", "eval_samples"),
            **outcome.extra,
        }
        if spec.algorithm.privacy is not None:
            metrics["epsilon"] = epsilon(round_no, spec.algorithm.fraction, spec.algorithm.privacy)
        return {k: v for k, v in metrics.items() if v is not None}

    def _mark_nodes(self, round_no: int, outcome: RoundOutcome) -> None:
        seen = now_iso()
        for r in outcome.results:
            status = self.nodes[r["index"]]
            status.state, status.lastRound, status.lastSeen = HEALTHY, round_no, seen
        for i in outcome.straggling:
            self.nodes[i].state = STRAGGLING

    def _check_health(self, ctx: Context, schema, outcome: RoundOutcome) -> None:
        """Count restarts from the actors' process ids; ping actors that died mid-round.

        Ray restarts a crashed actor up to `maxNodeRestarts` times; its nodes are Restarting until
        they report again. An actor Ray gave up on takes its nodes out of the federation for good.
        """
        assert self.pool is not None
        pool = self.pool
        for r in outcome.results:
            self._saw_pid(pool.slot_of(r["index"]), r["pid"])
        crashed = {pool.slot_of(i) for i in outcome.failed}
        gone = []
        for slot in sorted(crashed - self.dead_slots):
            try:
                pid = self._ping(slot)
            except (ActorDiedError, GetTimeoutError):
                self.dead_slots.add(slot)
                for i in pool.nodes_in(slot):
                    self.nodes[i].state = FAILED
                    gone.append(node_id(i))
                continue
            self._saw_pid(slot, pid)
        if gone:
            self._relink(ctx, schema, gone)

    def _start_actors(self, sampled: list[int]) -> None:
        """Start the actors this round needs and wait until they answer, so that start-up (a torch
        import) never counts against the round's deadline. Slots no sampled node uses stay unstarted."""
        assert self.pool is not None
        new = [s for s in self.pool.by_slot(sampled) if s not in self.pool.actors]
        for slot in new:
            self.pool.actor(slot)
        for slot in new:
            self._saw_pid(slot, self._ping(slot))

    def _ping(self, slot: int) -> int:
        """The actor's process id, waiting while Ray restarts it; ActorDiedError once Ray gave up."""
        assert self.pool is not None
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while True:
            try:
                return ray.get(self.pool.actor(slot).ping.remote(), timeout=max(0.1, deadline - time.monotonic()))
            except ActorUnavailableError as err:  # restarting: not dead, not back yet
                if time.monotonic() > deadline:
                    raise GetTimeoutError(f"node actor slot {slot} not back within {HEALTH_TIMEOUT_S}s") from err
                time.sleep(0.2)

    def _saw_pid(self, slot: int, pid: int) -> None:
        assert self.pool is not None
        known = self.pids.get(slot)
        self.pids[slot] = pid
        if known is not None and known != pid:
            for i in self.pool.nodes_in(slot):
                self.nodes[i].restarts += 1
                if self.nodes[i].state != FAILED:
                    self.nodes[i].state = RESTARTING

    def _relink(self, ctx: Context, schema, gone: list[str]) -> None:
        """Failed nodes leave the graph; the topology manager learns the re-linked one."""
        ctx.graph = relink(ctx.graph, self.spec.topology.kind, gone)
        ray.get(self.manager.set_edges.remote([tuple(e) for e in ctx.graph.edges], list(ctx.graph.nodes)))
        schema.graph_changed()
        log.warning("nodes %s failed for good and left the federation", ", ".join(gone))

    def _maybe_checkpoint(self, round_no: int, ctx: Context) -> None:
        every = self.spec.checkpoint.every
        if not (self.checkpoint_dir and every and (round_no % every == 0 or round_no == self.spec.rounds)):
            return
        assert self.pool is not None
        node_states: dict[int, dict] = {}
        live = [a for s, a in self.pool.actors.items() if s not in self.dead_slots]
        for states in ray.get([a.export_state.remote() for a in live]):
            node_states.update(states)
        ckpt = checkpoint.Checkpoint(
            round=round_no,
            params=ctx.params,
            strategy=ctx.strategy.state_dict(),
            history=list(self.history),
            nodes=[n.as_dict() for n in self.nodes],
            node_states=node_states,
            federation=self.checkpoint_owner,
            training=self.checkpoint_training,
        )
        path = checkpoint.save(self.checkpoint_dir, ckpt, self.spec.checkpoint.keep)
        self.reporter.checkpointed(round_no, str(path))

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


def failure_reason(err: BaseException) -> str:
    """What a user reads in the Failed condition: for an error raised inside a node actor, the user's own
    exception (and where), not Ray's wrapper, whose remote traceback would crowd out the message."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    cause = getattr(err, "cause", None) if isinstance(err, RayTaskError) else None
    if cause is not None:
        # Ray re-raises a remote error as a class that is both RayTaskError and the cause's type; that
        # instance is built by the cause's constructor and may lack the wrapper's fields (function_name).
        where = getattr(err, "function_name", None)
        return f"{type(cause).__name__}: {cause}" + (f" (in {where})" if where else "")
    return f"{type(err).__name__}: {err}"


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


def execute(fed: Federation, sinks: list, address: str | None, checkpoint_dir: Path, resume: bool) -> int:
    """Run `fed` to the end on Ray at `address` (embedded if None); the exit code says how it ended."""
    from red_runtime.reporting import Reporter

    try:
        with ray_session(address):
            Driver(fed, Reporter(sinks), checkpoint_dir=checkpoint_dir, resume=resume).run()
    except KeyboardInterrupt:
        print("red: interrupted; placement group removed and Ray shut down", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValueError as err:
        print(f"red: invalid Federation: {err}", file=sys.stderr)
        return EXIT_INVALID
    except Exception as err:
        print(f"red: federation {fed.name} failed: {failure_reason(err)}", file=sys.stderr)
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
    # The RayJob's log is where an operator looks: warnings (a status patch that failed, a node that
    # left) go there with the logger's name.
    logging.basicConfig(level=logging.WARNING, format="red %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
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
    out = Path(args.out or f"/tmp/red/{fed.name}")
    sinks.append(RunFolderSink(out, resume=True))
    # A retried RayJob continues from the newest checkpoint (spec.checkpoint.path, a mounted volume).
    return execute(fed, sinks, args.address, out / "checkpoints", resume=True)


if __name__ == "__main__":
    sys.exit(main())
