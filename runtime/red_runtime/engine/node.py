"""The node host: one Ray actor that runs any number of virtual federation nodes.

Each virtual node keeps its data partition, optimizer state and (for decentralised topologies) its
own model inside the actor between rounds; one torch model object is reused for all of them, so a
thousand nodes cost a thousand partitions, not a thousand Python processes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
import torch

from red_api.catalog import CATALOG
from red_api.spec import MODELS, FederationSpec
from red_runtime.engine.messages import readable
from red_runtime.engine.placement import slot_nodes
from red_runtime.engine.topology import manager_name, node_id
from red_runtime.learn import vectorized
from red_runtime.learn.adversaries import attack_generator, chosen, flipped_labels, poisoned
from red_runtime.learn.compression import dense_bytes, with_error_feedback
from red_runtime.learn.data import Arrays, DataSource
from red_runtime.learn.models import build_model, get_flat, local_indices
from red_runtime.learn.privacy import clip_update, counted
from red_runtime.learn.stragglers import hold_back, slow_nodes
from red_runtime.learn.strategies import Update
from red_runtime.learn.strategies.qfedavg import START_LOSS
from red_runtime.learn.strategies.scaffold import split
from red_runtime.learn.training import LocalState, evaluate, local_splits, local_steps, train_local

# What a checkpoint keeps of each virtual node (LocalState fields): its own model (decentralised), optimizer
# moments, SCAFFOLD variate, local layers and compression error.
KEPT_STATE = ("params", "optimizer_state", "control", "personal", "residual")

log = logging.getLogger("red.node")


def pick_device() -> torch.device:
    """The GPU Ray assigned to this actor, if any (Ray sets CUDA_VISIBLE_DEVICES to it)."""
    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def round_generator(seed: int, index: int, round_no: int, *turn: int) -> torch.Generator:
    """A node's shuffling RNG for one round (and turn, where a node trains more than once in it): the
    same on any actor, so placement never changes results."""
    state = np.random.SeedSequence([seed, index, round_no, *turn]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclasses.dataclass
class Prepared:
    """A node's round up to its training: what _after_training needs of what came before it."""

    index: int
    state: LocalState
    received: np.ndarray
    start: np.ndarray  # the model it trains from: the received one with its own layers put in
    result: dict[str, Any]
    update_metrics: dict[str, float]
    server_control: np.ndarray | None
    own_control: np.ndarray | None
    correction: np.ndarray | None  # SCAFFOLD's c - c_i, added to every gradient
    generator: torch.Generator
    began: float  # perf_counter when its round began here


class PoolFlusher:
    """Sums the updates bound for one receiver and posts them, with their nodes' result rows.

    Besides the flush at the end, a timer thread flushes shortly before the round's deadline, while the
    actor may still be busy with a slow node: the updates that were ready by then arrive, and only the
    slow node misses the round.
    """

    def __init__(self, host: NodeHost, round_no: int, deadline: float):
        self.host = host
        self.round_no = round_no
        self.pooled: dict[str, tuple[Update, list[dict[str, Any]]]] = {}
        self.posts: list[Any] = []
        self._lock = threading.Lock()
        budget = deadline - time.time()
        # Early enough that the posts reach the topology manager before the server collects.
        margin = min(1.0, 0.1 * budget)
        self._timer = threading.Timer(max(0.0, budget - margin), self.flush)
        self._timer.daemon = True
        self._timer.start()

    def add(self, dst: str, update: Update, result: dict[str, Any], pooled: bool) -> None:
        with self._lock:
            if not pooled:
                self.posts.append(self.host._post(self.round_no, list(update.nodes), [dst], update, [result]))
                return
            acc, rows = self.pooled.setdefault(dst, (Update(np.zeros_like(update.params), 0.0), []))
            acc.params += update.params
            acc.weight += update.weight
            acc.nodes += update.nodes
            rows.append(result)

    def flush(self) -> None:
        with self._lock:
            for dst, (acc, rows) in self.pooled.items():
                self.posts.append(self.host._post(self.round_no, list(acc.nodes), [dst], acc, rows))
            self.pooled.clear()

    def close(self) -> list[Any]:
        """The last flush; returns every post made, to wait on."""
        self._timer.cancel()
        self.flush()
        return self.posts


class NodeHost:
    def __init__(self, spec: FederationSpec, slot: int, federation: str, threads: int, slots: int):
        torch.set_num_threads(threads)
        self.spec = spec
        self.slot = slot
        self.manager = ray.get_actor(manager_name(federation))
        self.source = DataSource(spec.task, spec.nodes.count)
        self.source.prepare()  # at start-up, outside any round's deadline
        hosted = slot_nodes(slot, spec.nodes.count, slots)
        if self.source.synthetic and not self.source.hold_for(hosted):
            log.info("node actor %d makes its %d nodes' data again at each use (task.dataset.cache)", slot, len(hosted))
        self.device = pick_device()
        self.model = build_model(spec.task.model, self.source.input_shape, self.source.classes, spec.task.seed)
        self.model.to(self.device)
        # Why this actor never trains its nodes together (None: it may), and the reasons already logged.
        self.unbatched = self._unbatched()
        self._said: set[str] = set()
        self._warm_up()
        self.states: dict[int, LocalState] = {}
        self.adversaries = chosen(spec.nodes.adversaries, spec.task.seed, spec.nodes.count)
        self.slow = slow_nodes(spec.nodes.stragglers, spec.task.seed, spec.nodes.count)
        self.local_idx = local_indices(self.model, spec.task.model.personal, spec.task.model.localNorm)
        self.incarnation = uuid.uuid4().hex  # drawn anew by each (re)start; see health.py

    def _warm_up(self) -> None:
        """Pay torch's first-use costs at start-up rather than inside round 1's deadline: the first backward
        (about a second) and the first optimizer (two seconds on an idle 2-core machine, as torch imports its
        compiler stack; three times that under load, which made round 1 miss a 10 s deadline). Both costs are
        the process's, not the model's, so one step of the spec's optimizer on a private two-weight layer pays
        them, and the user's model (whose code may count, log or sleep) runs only on real data."""
        probe = torch.nn.Linear(1, 2).to(self.device)
        blank = Arrays(np.zeros((2, 1), np.float32), np.zeros(2, np.int64))
        train_local(
            probe,
            get_flat(probe),
            LocalState(train=blank),
            dataclasses.replace(self.spec.task.train, epochs=1, batchSize=2),
            torch.Generator().manual_seed(0),
            self.device,
        )
        if self.unbatched is None:  # and vmap's first use
            job = vectorized.Job(get_flat(probe), LocalState(train=blank), torch.Generator().manual_seed(0))
            vectorized.train_many(
                probe, [job], dataclasses.replace(self.spec.task.train, epochs=1, batchSize=2), self.device
            )

    def info(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "pid": os.getpid(),
            "device": str(self.device),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "hosted": sorted(self.states),
            "threads": torch.get_num_threads(),
        }

    def ping(self) -> str:
        """This incarnation's token: a new one means Ray restarted the actor."""
        return self.incarnation

    def export_state(self) -> dict[int, dict[str, Any]]:
        """What a checkpoint must keep of the hosted nodes (KEPT_STATE)."""
        out = {}
        for index, state in self.states.items():
            kept = {name: getattr(state, name) for name in KEPT_STATE}
            if any(v is not None for v in kept.values()):
                out[index] = kept
        return out

    def import_state(self, states: dict[int, dict[str, Any]]) -> int:
        for index, kept in states.items():
            state = self._state(index)
            for name in KEPT_STATE:
                setattr(state, name, kept.get(name))
        return len(states)

    def _state(self, index: int) -> LocalState:
        # Lazy: a virtual node's state is built on its first use and kept for every later round; its data
        # are indices (data.Rows), taken as arrays only while it trains or evaluates.
        if index not in self.states:
            rows = self.source.node_rows(index)
            state = local_splits(rows, self.spec.nodes.roles, self.spec.task.seed, index)
            if index in self.adversaries and self.spec.nodes.adversaries.attack == "labelflip":
                state.train = state.train.relabelled(functools.partial(flipped_labels, classes=self.source.classes))
            self.states[index] = state
        return self.states[index]

    def _sent(self, index: int, round_no: int, start: np.ndarray, trained: np.ndarray) -> np.ndarray:
        """The model a node sends: what it trained, or a simulated attacker's poisoned version of it."""
        if index not in self.adversaries:
            return trained
        rng = attack_generator(self.spec.task.seed, index, round_no)
        return poisoned(self.spec.nodes.adversaries, start, trained, rng)

    def _inbox(self, round_no: int, indices: list[int]) -> dict[int, list[tuple[tuple[str, ...], Any]]]:
        box = ray.get(self.manager.collect.remote(round_no, [node_id(i) for i in indices]))
        return {i: box[node_id(i)] for i in indices}

    def _post(self, round_no: int, srcs: list[str], dsts: list[str], *values: Any) -> Any:
        return self.manager.post.remote(round_no, srcs, dsts, [ray.put(v) for v in values])

    def train(
        self,
        round_no: int,
        indices: list[int],
        upstream: dict[int, str],
        pool: bool,
        proximal_mu: float,
        deadline: float,
    ) -> int:
        """One star/hierarchical round: read the model sent down, train, send updates up.

        With `pool` (linear strategies) the updates bound for one receiver are summed here, so the
        receiver gets one message per flush instead of one per node. Each message carries the result
        rows of the nodes in it, and the pool is flushed just before the round's wall-clock `deadline`,
        so a slow node costs only its own update, not those of every node this actor trained before it.

        Nodes that can be trained together (task.train.vectorize, see _batched) train first as one batch,
        then every node is posted in the order given, the others trained one by one in between. The deadline
        is checked before the batch and before each node, not inside the batch: a batch that runs past the
        deadline loses all its updates, where the serial loop would lose those of the nodes after it.
        Returns how many nodes trained.
        """
        inbox = self._inbox(round_no, indices)
        # A node without messages: a straggler's call for a round the server already closed, nothing to do.
        work = {index: inbox[index][-1][1][0] for index in indices if inbox[index]}
        cache: dict[Any, np.ndarray] = {}

        def received(index: int) -> np.ndarray:
            ref = work[index]
            if ref not in cache:
                cache[ref] = ray.get(ref)
            return cache[ref]

        flusher = PoolFlusher(self, round_no, deadline)
        together = self._train_together(round_no, list(work), proximal_mu, deadline, received)
        trained = 0
        for index in work:
            if time.time() >= deadline:
                break  # the server has closed the round: later updates would be dropped unread
            if index in together:
                prep, params, loss, seconds = together[index]
                prep.began = time.perf_counter() - seconds  # its share of the batch, for stragglers and its row
                update, result = self._after_training(prep, round_no, params, loss)
            else:
                update, result = self._train_node(index, round_no, received(index), proximal_mu)
            flusher.add(upstream[index], update, result, pooled=pool)
            trained += 1
        ray.get(flusher.close())
        return trained

    def _train_together(
        self,
        round_no: int,
        indices: list[int],
        proximal_mu: float,
        deadline: float,
        received: Callable[[int], np.ndarray],
    ) -> dict[int, tuple[Prepared, np.ndarray, float, float]]:
        """Train the nodes _batched picks in one batched computation; per node what _after_training needs and
        the seconds that count as its own (its preparation and its share of the batch). Empty where none is
        picked, or the batch fails: then this actor trains one by one from now on, and says why."""
        chosen = self._batched(indices, proximal_mu)
        if not chosen or time.time() >= deadline:
            return {}
        preps, spent = [], []
        for index in chosen:
            preps.append(self._before_training(index, round_no, received(index)))
            spent.append(time.perf_counter() - preps[-1].began)
        began = time.perf_counter()
        jobs = [vectorized.Job(p.start, p.state, p.generator) for p in preps]
        try:
            trained = vectorized.train_many(self.model, jobs, self.spec.task.train, self.device)
        except Exception as err:  # whatever vmap refuses, the serial loop still trains
            # The states are as they were (train_many changes them only at the end); each node draws its
            # shuffles afresh from a new generator in the serial loop.
            self.unbatched = f"training them together failed: {type(err).__name__}: {err}"
            self._say(self.unbatched)
            return {}
        share = (time.perf_counter() - began) / len(preps)
        return {p.index: (p, params, loss, s + share) for p, (params, loss), s in zip(preps, trained, spent)}

    def _batched(self, indices: list[int], proximal_mu: float) -> list[int]:
        """Which of `indices` to train together (vectorized.py); the others train one by one. Vectorising
        needs plain training: no term or correction that acts on every step."""
        if self.unbatched is not None:
            self._say(self.unbatched)
            return []
        if proximal_mu > 0:
            self._say("FedProx's proximal term acts on every step")
            return []
        if CATALOG[self.spec.algorithm.name].control_variates:
            self._say("SCAFFOLD's correction acts on every gradient")
            return []
        cfg = self.spec.task.train
        count = sum(1 for _ in self.model.parameters())
        fit = []
        for index in indices:
            state = self._state(index)
            if not len(state.train):
                continue
            if vectorized.fits(state.optimizer_state, cfg, count):
                fit.append(index)
            else:
                self._say("a node's saved optimizer state has other settings than task.train (from a checkpoint?)")
        # Under auto, only groups of like-sized nodes large enough to pay off (vectorized.auto_group).
        least = 1 if cfg.vectorize == "always" else vectorized.auto_group(self.model, cfg, self.device)
        if least is None:  # _unbatched has said so already
            return []
        steps = [vectorized.steps_per_epoch(len(self._state(i).train), cfg) for i in fit]
        picked = set()
        for group in vectorized.groups(steps, vectorized.group_limit(self.model)):
            if len(group) >= least:
                picked.update(fit[j] for j in group)
            else:
                self._say(f"fewer than {least} nodes of like size in a call do not pay off")
        return [i for i in indices if i in picked]

    def _unbatched(self) -> str | None:
        """Why this actor never trains its nodes together, or None where it may (decided per call)."""
        cfg = self.spec.task.train
        if cfg.vectorize == "never":
            return "task.train.vectorize is never"
        reason = vectorized.unsupported(self.model)
        if reason is not None:
            return f"the model cannot be vectorised: {reason}"
        if cfg.vectorize == "always":
            return None
        if self.spec.task.model.name not in MODELS:
            # Its forward runs once per step for a whole batch of nodes, not once per node.
            return "auto vectorises the built-in models only (a user's model may count, log or sleep): set always"
        if vectorized.auto_group(self.model, cfg, self.device) is None:
            return "on a CPU this model's parameters times task.train.batchSize are too many for it to pay off"
        return None

    def _say(self, reason: str) -> None:
        """Log once per actor why it trains (some) nodes one by one: a warning where `always` asked otherwise."""
        if reason in self._said or reason == "task.train.vectorize is never":
            return
        self._said.add(reason)
        level = logging.WARNING if self.spec.task.train.vectorize == "always" else logging.INFO
        log.log(level, "node actor %d trains nodes one by one: %s", self.slot, reason)

    def train_async(self, version: int, turn: int, index: int, start_ref: list[Any]) -> tuple[Update, dict[str, Any]]:
        """One asynchronous turn (FedBuff): train node `index` from global model `version` and return its
        change (weight 1) and its result row; the server weighs the change by how stale it has become. The
        turn tells apart a node's trainings from one model, so each shuffles its data afresh."""
        start = ray.get(start_ref[0])
        update, result = self._train_node(index, version + 1, start, 0.0, turn)
        change = update.mean - start.astype(np.float64)
        return Update(params=change, weight=1.0, nodes=update.nodes, metrics=update.metrics), result

    def _train_node(
        self, index: int, round_no: int, received: np.ndarray, proximal_mu: float, *turn: int
    ) -> tuple[Update, dict[str, Any]]:
        """Train one node from what the server sent; returns its update as it goes up, and its result row."""
        prep = self._before_training(index, round_no, received, *turn)
        cfg = self.spec.task.train
        params, loss = train_local(
            self.model, prep.start, prep.state, cfg, prep.generator, self.device, proximal_mu, prep.correction
        )
        return self._after_training(prep, round_no, params, loss)

    def _before_training(self, index: int, round_no: int, received: np.ndarray, *turn: int) -> Prepared:
        """What a node does with the model it received before it trains: its own layers put in, the local
        evaluation, SCAFFOLD's correction, and its shuffling RNG for the round."""
        began = time.perf_counter()
        entry = CATALOG[self.spec.algorithm.name]
        state = self._state(index)
        start, server_control = split(received) if entry.control_variates else (received, None)
        start = self._personalised(start, state)
        result = self._evaluate_local(index, start, state)
        update_metrics = {}
        if entry.start_loss:
            update_metrics[START_LOSS] = evaluate(self.model, start, state.train, self.device)[0]
        own_control = correction = None
        if server_control is not None:
            own_control = np.zeros_like(server_control) if state.control is None else state.control
            correction = server_control - own_control
        gen = round_generator(self.spec.task.seed, index, round_no, *turn)
        return Prepared(
            index, state, received, start, result, update_metrics, server_control, own_control, correction, gen, began
        )

    def _after_training(
        self, prep: Prepared, round_no: int, params: np.ndarray, loss: float
    ) -> tuple[Update, dict[str, Any]]:
        """What a node does with what it trained: a straggler's wait, its own layers and control variate kept,
        clipping, an attacker's poisoning and compression; returns its update as it goes up and its result row."""
        index, state, start, cfg = prep.index, prep.state, prep.start, self.spec.task.train
        privacy = self.spec.algorithm.privacy
        if index in self.slow:
            hold_back(self.spec.nodes.stragglers, prep.began)
        if self.local_idx.size:
            state.personal = params[self.local_idx].copy()
        control_change = None
        if prep.own_control is not None:
            # SCAFFOLD's option II: the drift this node's K steps showed, as its new control variate.
            own_control, server_control = prep.own_control, prep.server_control
            steps = local_steps(len(state.train), cfg)
            new_control = own_control - server_control + (start.astype(np.float64) - params) / (steps * cfg.lr)
            control_change = (new_control - own_control).astype(np.float32)
            state.control = new_control.astype(np.float32)
        weight = float(len(state.train))
        if privacy is not None:
            # Bounded influence: a clipped change, counted (weight 1) only if this node's secret
            # Poisson coin says so; an uncounted node still reports, so who counted stays hidden.
            params = clip_update(params, start, privacy.clip)
            weight = 1.0 if counted(self.spec.algorithm.fraction) else 0.0
        # An attacker sends what it likes: the poisoning comes after the honest protocol, clipping too.
        params = self._sent(index, round_no, start, params)
        compression = self.spec.communication.compression
        if compression.kind == "none":
            sent_bytes = dense_bytes(params.size)
        else:
            params, state.residual, sent_bytes = with_error_feedback(compression, start, params, state.residual)
        if control_change is not None:
            params = np.concatenate([params, control_change])
            sent_bytes += dense_bytes(control_change.size)
        update = Update.single(node_id(index), params, weight)
        update.metrics.update(prep.update_metrics)
        result = prep.result
        result.update(train_loss=loss, samples=len(state.train), seconds=time.perf_counter() - prep.began)
        result.update(bytes_up=sent_bytes, bytes_down=dense_bytes(prep.received.size), incarnation=self.incarnation)
        return update, result

    def _personalised(self, params: np.ndarray, state: LocalState) -> np.ndarray:
        """The global model with this node's own values in the layers it keeps local."""
        if not self.local_idx.size or state.personal is None:
            return params
        own = np.array(params, dtype=np.float32)  # a copy: what the object store gives is read-only
        own[self.local_idx] = state.personal
        return own

    def _evaluate_local(self, index: int, params: np.ndarray, state: LocalState) -> dict[str, Any]:
        result: dict[str, Any] = {"index": index}
        if state.eval is not None:
            loss, acc = evaluate(self.model, params, state.eval, self.device)
            result.update(eval_loss=loss, eval_accuracy=acc, eval_samples=len(state.eval))
        return result

    def gossip_train(
        self,
        round_no: int,
        indices: list[int],
        start_ref: list[Any],
        neighbours: dict[int, list[str]],
        deadline: float,
    ) -> list[dict[str, Any]]:
        """Decentralised phase one: every node trains its own model and sends it to its neighbours.

        Nodes not reached by the round's wall-clock `deadline` sit this round out.
        """
        start = None
        posts, results = [], []
        for index in indices:
            if time.time() >= deadline:
                break
            state = self._state(index)
            if state.params is None:
                start = ray.get(start_ref[0]) if start is None else start
                state.params = np.array(start, dtype=np.float32)
            began = time.perf_counter()
            result = self._evaluate_local(index, state.params, state)
            gen = round_generator(self.spec.task.seed, index, round_no)
            before = state.params
            state.params, loss = train_local(self.model, before, state, self.spec.task.train, gen, self.device)
            if index in self.slow:
                hold_back(self.spec.nodes.stragglers, began)
            sent = self._sent(index, round_no, before, state.params)
            posts.append(self._post(round_no, [node_id(index)], neighbours[index], sent))
            result.update(train_loss=loss, samples=len(state.train), seconds=time.perf_counter() - began)
            # Each neighbour gets the whole model, and each of them sends this node theirs.
            traffic = dense_bytes(sent.size) * len(neighbours[index])
            result.update(bytes_up=traffic, bytes_down=traffic)
            result["incarnation"] = self.incarnation
            results.append(result)
        ray.get(posts)
        return results

    def gossip_mix(self, round_no: int, indices: list[int], weights: dict[int, dict[str, float]]) -> dict[str, Any]:
        """Decentralised phase two: mix own and neighbours' models; return sums for the average model."""
        inbox = self._inbox(round_no, indices)
        total = None
        square_norms = 0.0
        for index in indices:
            state = self._state(index)
            me = node_id(index)
            mixed = weights[index][me] * state.params.astype(np.float64)
            present = weights[index][me]
            models = readable([payload[:1] for _, payload in inbox[index]])
            for (srcs, _), values in zip(inbox[index], models):
                if values is None:  # the neighbour died after sending: as if it sent nothing
                    continue
                src, (model,) = srcs[0], values
                mixed += weights[index][src] * np.asarray(model, dtype=np.float64)
                present += weights[index][src]
            # A neighbour that missed the round sent nothing: renormalise over those that did.
            mixed /= present
            state.params = mixed.astype(np.float32)
            total = mixed if total is None else total + mixed
            square_norms += float(mixed @ mixed)
        return {"sum": total, "square_norms": square_norms, "count": len(indices)}

    def test(self, indices: list[int], params: np.ndarray) -> dict[str, float]:
        """The test role: evaluate the final global model on each node's local test split, and with layers
        kept local also each node's personalised model."""
        sums = {"loss_sum": 0.0, "correct": 0.0, "count": 0, "personal_loss_sum": 0.0, "personal_correct": 0.0}
        for index in indices:
            state = self._state(index)
            if state.test is None:
                continue
            n = len(state.test)
            loss, acc = evaluate(self.model, params, state.test, self.device)
            sums["loss_sum"] += loss * n
            sums["correct"] += acc * n
            sums["count"] += n
            if self.local_idx.size:
                loss, acc = evaluate(self.model, self._personalised(params, state), state.test, self.device)
                sums["personal_loss_sum"] += loss * n
                sums["personal_correct"] += acc * n
        return sums
