"""The federation driver: the same code in a RayJob on Kubernetes and under `red run` on a laptop.

It validates everything it can before reserving anything, then holds one placement group (a bundle
for the topology manager, one per node-actor slot), runs the rounds through the topology's schema,
evaluates each round's model on the held-out test set, and reports. SIGINT and SIGTERM ask it to stop
after the round in flight (see stopping.py); the placement group and the actors go on every exit path.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayTaskError

from red_api.catalog import CATALOG
from red_api.spec import Federation, SpecError
from red_runtime.engine.checkpointer import Checkpointer
from red_runtime.engine.compute import FederationCompute
from red_runtime.engine.events import FAILED, HEALTHY, NodeStatus, Reporter, RoundReport, RunInfo, Summary
from red_runtime.engine.health import HealthMonitor, SlotGone
from red_runtime.engine.phases import Phases
from red_runtime.engine.placement import SlotPlan, plan_slots
from red_runtime.engine.pool import NodePool
from red_runtime.engine.rounds import Context, RoundOutcome, schema_for
from red_runtime.engine.session import RayStart, ray_session
from red_runtime.engine.stopping import EXIT_FAILED, EXIT_INVALID, Interrupted, RoundAbandoned, StopRequest
from red_runtime.engine.topology import build_graph, node_id, relink
from red_runtime.learn.adversaries import chosen
from red_runtime.learn.data import DataSource
from red_runtime.learn.models import Tensor, buffer_indices, build_model, get_flat, layer_names, layout
from red_runtime.learn.privacy import published, summary_metrics
from red_runtime.learn.strategies import make_strategy
from red_runtime.learn.training import evaluate

log = logging.getLogger("red.driver")
# How long an actor may take to start, or to come back after a crash, before it counts as gone. A start
# imports torch and builds the node's data: minutes on a loaded machine, and no sign of ill health. A restart
# is a start, often on a Pod that KubeRay is still replacing (a lost worker), so it gets as long.
STARTUP_TIMEOUT_S = float(os.environ.get("RED_STARTUP_TIMEOUT_S", "300"))


@dataclass
class Prepared:
    """Everything checked and built before any Ray resource is reserved."""

    source: DataSource
    model: torch.nn.Module
    params: np.ndarray
    plan: SlotPlan
    layout: tuple[Tensor, ...] = ()  # the flat vector's names, shapes and buffers


@dataclass(frozen=True)
class Reservation:
    """Ray resources reserved for the federation by its caller (a sweep trial): a placement group holding
    `plan`'s bundles, which the caller removes."""

    pg: object
    plan: SlotPlan


class Diverged(RuntimeError):
    """The global model's loss stopped being a number."""


def cluster_machines() -> list[dict[str, float]]:
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def prepare(fed: Federation, machines: list[dict[str, float]], plan: SlotPlan | None = None) -> Prepared:
    """Plan the slots and build the data and model; raises SpecError naming the field on what cannot run.

    Only Red's own checks become SpecError: an error raised by a user's dataset factory or model class is
    a failure of the run, reported as that error, not as an invalid manifest.
    """
    spec = fed.spec
    try:
        plan = plan or plan_slots(spec, machines)
        build_graph(spec.topology, spec.nodes.count, spec.task.seed)
    except ValueError as err:
        raise SpecError([str(err)]) from err
    source = DataSource(spec.task, spec.nodes.count)
    model = build_model(spec.task.model, source.input_shape, source.classes, spec.task.seed)
    check_personal_layers(model, spec.task.model.personal)
    return Prepared(source=source, model=model, params=get_flat(model), plan=plan, layout=layout(model))


def check_personal_layers(model: torch.nn.Module, personal: tuple[str, ...]) -> None:
    known = layer_names(model)
    problems = [
        f"spec.task.model.personal[{i}]: {name!r}: no such layer in the model (layers: {', '.join(known)})"
        for i, name in enumerate(personal)
        if name not in known
    ]
    if problems:
        raise SpecError(problems)


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


def restarting(actor_id: str | None) -> bool:
    """Whether Ray is bringing an actor back although a call to it failed as dead: calls fail so while its
    node is lost and Ray restarts it elsewhere (a deleted worker Pod). The GCS knows which it is."""
    from ray.util.state import get_actor

    try:
        info = get_actor(actor_id) if actor_id else None
    except Exception:  # noqa: BLE001 - no answer: take Ray's word that it died
        return False
    return info is not None and info.state in ("RESTARTING", "PENDING_CREATION", "DEPENDENCIES_UNREADY", "ALIVE")


class Driver:
    """Runs the rounds. What it holds on Ray, node health and checkpoints each have their own class."""

    def __init__(
        self,
        fed: Federation,
        reporter: Reporter,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        stop: StopRequest | None = None,
        reserved: Reservation | None = None,
        phases: Phases | None = None,
    ):
        self.fed = fed
        self.phases = phases or Phases()
        self.reserved = reserved
        self.spec = fed.spec
        self.reporter = reporter
        self.stop = stop or StopRequest()
        res = self.spec.nodes.resources
        attackers = chosen(self.spec.nodes.adversaries, self.spec.task.seed, self.spec.nodes.count)
        attack = self.spec.nodes.adversaries.attack
        self.nodes = [
            NodeStatus(id=node_id(i), gpu=res.gpu, attack=attack if i in attackers else None)
            for i in range(self.spec.nodes.count)
        ]
        # The run folder's (apps.launch resolves spec.checkpoint.path inside it); None keeps no checkpoints.
        self.checkpoints = Checkpointer(fed, Path(checkpoint_dir) if checkpoint_dir else None)
        self.resume = resume
        self.history: list[dict] = []

    def run(self) -> Summary:
        began = time.monotonic()
        reserved = self.reserved
        with self.phases.timing("data"):
            prepared = prepare(self.fed, cluster_machines(), reserved.plan if reserved else None)
        self.checkpoints.layout = prepared.layout  # checkpoints keep the model by name
        torch.set_num_threads(1)  # the node actors own the cores while a round runs
        graph = build_graph(self.spec.topology, self.spec.nodes.count, self.spec.task.seed)
        try:
            pg = reserved.pg if reserved else None
            with FederationCompute(self.spec, self.fed.name, prepared.plan, graph, pg) as compute:
                # Round 1's actors start (torch's import, their nodes' data) while the driver builds its test set.
                actors_began = time.perf_counter()
                early = [] if self.resume else self._start_actors(compute.pool)
                with self.phases.timing("data"):
                    test_set = prepared.source.test_set()
                ctx = self._context(compute, prepared, graph)
                health = HealthMonitor(self.nodes, ctx.pool.nodes_in, ctx.pool.slot_of, self._pinger(ctx.pool))
                try:
                    for slot in early:
                        health.started(slot)
                except RoundAbandoned as err:  # stopped while they started, and the grace ran out
                    raise self._stopped(err) from None
                self.phases.add("actors", time.perf_counter() - actors_began)
                schema = schema_for(self.spec.topology.kind, CATALOG[self.spec.algorithm.name].asynchronous)(ctx)
                first_round = self._restore(ctx, schema, health) + 1
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
                return self._rounds(schema, ctx, health, prepared, test_set, info, first_round)
        except KeyboardInterrupt as err:
            self.reporter.stopped(str(err) if isinstance(err, Interrupted) else self.stop.describe())
            raise
        except BaseException as err:
            self.reporter.failed(failure_reason(err))
            raise
        finally:
            self.reporter.close()

    def _start_actors(self, pool: NodePool) -> list[int]:
        """Create the actors of round 1's sampled nodes, all at once, without waiting for them."""
        slots = list(pool.by_slot(sample_nodes(self.fed, 1, set())))
        for slot in slots:
            pool.actor(slot)
        return slots

    def _context(self, compute: FederationCompute, prepared: Prepared, graph) -> Context:
        spec = self.spec
        for i, status in enumerate(self.nodes):
            status.bundle = 1 + i % prepared.plan.slots
        ids = [node_id(i) for i in range(spec.nodes.count)]
        return Context(
            spec=spec,
            pool=compute.pool,
            manager=compute.manager,
            graph=graph,
            strategy=make_strategy(
                spec.algorithm.name,
                dict(spec.algorithm.options),
                spec.task.train.lr,
                spec.nodes.count,
                buffer_indices(prepared.layout),
            ),
            params=prepared.params,
            sizes=dict(zip(ids, prepared.source.node_sizes().tolist())),
            stop=self.stop,
        )

    def _pinger(self, pool: NodePool):
        def ping(slot: int, startup: bool = False) -> str:
            """The actor's incarnation, waiting while Ray starts or restarts it; SlotGone once Ray gave up."""
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            ref = pool.actor(slot).ping.remote()
            while True:
                try:
                    return ray.get(ref, timeout=min(0.5, max(0.01, deadline - time.monotonic())))
                except GetTimeoutError:
                    pass
                except ActorUnavailableError:  # restarting: not dead, not back yet
                    ref = pool.actor(slot).ping.remote()
                except ActorDiedError as err:
                    if not (err.preempted or restarting(err.actor_id)):
                        raise SlotGone(str(err)) from err
                    ref = pool.actor(slot).ping.remote()
                if self.stop.requested and self.stop.grace_left() <= 0:
                    raise RoundAbandoned(f"node actor slot {slot} did not answer before the stop")
                if time.monotonic() > deadline:
                    what = "did not start" if startup else "not back"
                    raise SlotGone(f"node actor slot {slot} {what} within {STARTUP_TIMEOUT_S:.0f}s")
                time.sleep(0.1)

        return ping

    def _restore(self, ctx: Context, schema, health: HealthMonitor) -> int:
        """Continue from the newest readable checkpoint; returns the last round it holds (0: none)."""
        ckpt = self.checkpoints.load() if self.resume else None
        if ckpt is None:
            return 0
        ctx.params = ckpt.params
        ctx.strategy.load_state_dict(ckpt.strategy)
        self.history = list(ckpt.history)
        slots = ctx.pool.plan.slots
        for i, saved in enumerate(ckpt.nodes):
            # This attempt may have another slot plan: where a node lives now is not where it lived then. Who
            # attacks follows this spec, as the node actors do.
            self.nodes[i] = NodeStatus.from_dict({**saved, "bundle": 1 + i % slots, "attack": self.nodes[i].attack})
        Checkpointer.restore_nodes(ckpt, ctx.pool)
        failed = [n.id for n in self.nodes if n.state == FAILED]
        if failed:
            self._relink(ctx, schema, failed)
        schema.resumed()
        log.info("resumed %s after round %d from %s", self.fed.name, ckpt.round, self.checkpoints.folder)
        return ckpt.round

    def _rounds(
        self, schema, ctx: Context, health: HealthMonitor, prepared: Prepared, test_set, info: RunInfo, first: int
    ) -> Summary:
        """Rounds `first`..spec.rounds, each run, evaluated, reported and checkpointed, until the last, the
        target accuracy, a stop request or divergence; then the summary."""
        spec = self.spec
        report = None
        stopped_early = False
        abandoned = None
        for round_no in range(first, spec.rounds + 1):
            if self.stop.requested:
                break
            try:
                outcome, started = self._run_round(schema, ctx, health, round_no)
            except RoundAbandoned as err:
                abandoned = err
                break
            report = self._record_round(schema, ctx, health, prepared, test_set, round_no, outcome, started)
            reached = spec.algorithm.targetAccuracy is not None and report.accuracy >= spec.algorithm.targetAccuracy
            self._checkpoint_if_due(ctx, health, round_no, last=reached or round_no == spec.rounds)
            self._check_divergence(round_no, report.loss)
            if reached:
                stopped_early = round_no < spec.rounds
                break
        schema.finished()
        if self.stop.requested:
            raise self._stopped(abandoned)
        return self._finish(ctx, prepared, info, report, stopped_early)

    def _run_round(self, schema, ctx: Context, health: HealthMonitor, round_no: int) -> tuple[RoundOutcome, float]:
        """The round's outcome and when its clock started. The actors it samples are started first, all at
        once, and waited for: start-up (a torch import) never counts against its deadline, nor in its seconds."""
        sampled = sample_nodes(self.fed, round_no, health.failed_indices())
        new = [s for s in ctx.pool.by_slot(sampled) if s not in ctx.pool.actors]
        with self.phases.timing("actors"):
            for slot in new:
                ctx.pool.actor(slot)
            for slot in new:
                health.started(slot)
        started = time.monotonic()
        with self.phases.timing("rounds"):
            return schema.run_round(round_no, sampled), started

    def _record_round(
        self, schema, ctx: Context, health: HealthMonitor, prepared: Prepared, test_set, round_no: int,
        outcome: RoundOutcome, started: float,
    ) -> RoundReport:  # fmt: skip
        """Evaluate the round's model, account for the nodes' health (relinking around the gone), report."""
        with self.phases.timing("evaluate"):
            loss, accuracy = self._evaluate(prepared.model, outcome.params, test_set)
        before = [(n.state, n.restarts) for n in self.nodes]
        gone = health.round_done(round_no, outcome.results, outcome.straggling, outcome.failed)
        if gone:
            self._relink(ctx, schema, gone)
        if before != [(n.state, n.restarts) for n in self.nodes]:
            self.reporter.nodes_changed(self.nodes)
        report = RoundReport(
            round=round_no,
            rounds=self.spec.rounds,
            loss=loss,
            accuracy=accuracy,
            nodes_healthy=sum(n.state == HEALTHY for n in self.nodes),
            nodes_total=len(self.nodes),
            seconds=time.monotonic() - started,
            metrics=self._round_metrics(round_no, outcome),
            node_losses=self._node_losses(outcome),
        )
        self.history.append(report.as_dict())
        self.reporter.round_done(report, self.nodes)
        return report

    def _checkpoint_if_due(self, ctx: Context, health: HealthMonitor, round_no: int, last: bool) -> None:
        """A checkpoint per spec.checkpoint.every, and always after the last round or on a stop request."""
        stopping = self.stop.requested
        if self.checkpoints.due(round_no, last or stopping, stopping=stopping):
            state = ctx.strategy.state_dict()
            path = self.checkpoints.save(
                round_no, ctx.params, state, self.history, self.nodes, ctx.pool, health.dead_slots
            )
            self.reporter.checkpointed(round_no, str(path))

    def _check_divergence(self, round_no: int, loss: float) -> None:
        if not math.isfinite(loss) and self.spec.faultTolerance.divergence == "fail":
            raise Diverged(
                f"round {round_no}: the global model's test loss is {loss} (training diverged); lower "
                "spec.task.train.lr, or set spec.faultTolerance.divergence: continue to keep going"
            )

    def _finish(
        self, ctx: Context, prepared: Prepared, info: RunInfo, report: RoundReport | None, stopped_early: bool
    ) -> Summary:
        """The summary of a run that ended (a resumed one that had nothing left: its last recorded round), the
        test role's metrics in it, as every sink hears it."""
        loss = accuracy = float("nan")
        if report is not None:
            loss, accuracy = report.loss, report.accuracy
        elif self.history:
            loss, accuracy = self.history[-1]["loss"], self.history[-1]["accuracy"]
        with self.phases.timing("evaluate"):
            final = self._test_role(ctx)
        summary = Summary(
            name=self.fed.name,
            rounds_run=self.history[-1]["round"] if self.history else 0,
            final_accuracy=accuracy,
            final_loss=loss,
            seconds_per_round=statistics.median([h["seconds"] for h in self.history] or [0.0]),
            nodes=self.spec.nodes.count,
            slots=info.slots,
            startup_seconds=info.startup_seconds,
            stopped_early=stopped_early,
            actors_started=len(ctx.pool.actors),
            metrics=final,
            history=list(self.history),
            phases=self.phases.as_dict(),
        )
        self.reporter.finished(summary, ctx.params, prepared.model)
        return summary

    def _stopped(self, abandoned: RoundAbandoned | None) -> Interrupted:
        done = self.history[-1]["round"] if self.history else 0
        how = f"(round {done + 1} abandoned: {abandoned}) " if abandoned else ""
        kept = (
            f"; checkpoint of round {self.checkpoints.last_round} kept, resume to continue"
            if self.checkpoints.last_round
            else ""
        )
        return self.stop.interrupted(f"stopped by signal {self.stop.name} {how}after round {done}{kept}")

    def _evaluate(self, model: torch.nn.Module, params: np.ndarray, test_set) -> tuple[float, float]:
        """The round's model on the held-out test set, on every core: the node actors are idle meanwhile."""
        threads = torch.get_num_threads()
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        try:
            return evaluate(model, params, test_set, torch.device("cpu"))
        finally:
            torch.set_num_threads(threads)

    def _round_metrics(self, round_no: int, outcome: RoundOutcome) -> dict[str, float]:
        spec = self.spec
        metrics = {
            "train_loss": weighted(outcome.results, "train_loss", "samples"),
            "eval_loss": weighted(outcome.results, "eval_loss", "eval_samples"),
            "eval_accuracy": weighted(outcome.results, "eval_accuracy", "eval_samples"),
            # What the round's updates and models took on the wire, compressed where spec.communication says.
            "bytes_up": float(sum(r.get("bytes_up", 0) for r in outcome.results)),
            "bytes_down": float(sum(r.get("bytes_down", 0) for r in outcome.results)),
            **outcome.extra,
        }
        return published(metrics, spec.algorithm, round_no)

    def _node_losses(self, outcome: RoundOutcome) -> dict[str, float]:
        """Each trained node's train loss, for the run's own charts; none under privacy (see RoundReport)."""
        if self.spec.algorithm.privacy is not None:
            return {}
        return {node_id(r["index"]): float(r["train_loss"]) for r in outcome.results if "train_loss" in r}

    def _relink(self, ctx: Context, schema, gone: list[str]) -> None:
        """Failed nodes leave the graph; the topology manager learns the re-linked one."""
        ctx.graph = relink(ctx.graph, self.spec.topology.kind, gone)
        ray.get(ctx.manager.set_edges.remote([tuple(e) for e in ctx.graph.edges], list(ctx.graph.nodes)))
        schema.graph_changed()
        log.warning("nodes %s failed for good and left the federation", ", ".join(gone))

    def _test_role(self, ctx: Context) -> dict:
        """Nodes with the test role evaluate the final model on their own held-out split. Under privacy
        those figures come from raw node data, so the summary states the privacy spent instead."""
        if self.spec.algorithm.privacy is not None:
            return summary_metrics(self.history)
        if "test" not in self.spec.nodes.roles:
            return {}
        ref = ray.put(ctx.params)
        by_slot = ctx.pool.by_slot([i for i, n in enumerate(self.nodes) if n.state == HEALTHY])
        parts = ray.get([ctx.pool.actor(s).test.remote(idx, ref) for s, idx in by_slot.items()])
        count = sum(p["count"] for p in parts)
        if not count:
            return {}
        out = {
            "node_test_loss": sum(p["loss_sum"] for p in parts) / count,
            "node_test_accuracy": sum(p["correct"] for p in parts) / count,
        }
        if self.spec.task.model.personalised:
            out["personal_test_loss"] = sum(p["personal_loss_sum"] for p in parts) / count
            out["personal_test_accuracy"] = sum(p["personal_correct"] for p in parts) / count
        return out


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


def execute(
    fed: Federation,
    sinks: list,
    address: str | None,
    checkpoint_dir: Path,
    resume: bool,
    stop_file: Path | None = None,
    ray_start: RayStart | None = None,
    phases: Phases | None = None,
) -> int:
    """Run `fed` to the end on Ray at `address` (embedded if None); the exit code says how it ended. With
    `stop_file`, its appearance stops the run as a SIGTERM would (the head Pod's preStop hook)."""
    stop = StopRequest()
    if stop_file is not None:
        stop.watch_file(stop_file)
    phases = phases or Phases()
    try:
        with ray_session(address, stop, ray_start, phases):
            Driver(fed, Reporter(sinks), checkpoint_dir=checkpoint_dir, resume=resume, stop=stop, phases=phases).run()
    except SpecError as err:
        print(f"red: {err}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt as err:
        # Ray's native code may turn an Interrupted into a plain KeyboardInterrupt: the request knows.
        reason = str(err) if isinstance(err, Interrupted) else stop.describe()
        print(f"red: {reason}; placement group removed and Ray shut down", file=sys.stderr)
        return stop.exit_code
    except Exception as err:
        print(f"red: federation {fed.name} failed: {failure_reason(err)}", file=sys.stderr)
        return EXIT_FAILED
    return 0
