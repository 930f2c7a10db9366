"""Training many virtual nodes at once: one batched computation over their stacked parameters.

`train_many` does what `training.train_local` does for each node, for all of them together: the model's
forward runs under `torch.func.vmap` with `functional_call` over parameters stacked along a new first
dimension, and SGD's or Adam's update is applied to the stacked parameters and optimizer moments with the
same arithmetic as torch.optim. Each node shuffles with its own generator, drawing exactly what the serial
loop draws, so the results agree with train_local to float rounding. Nodes are bucketed by their steps per
epoch into lockstep groups of like sizes; within a group, masks take care of the rest: a partial last
minibatch, and a node whose epoch has ended idles (its parameters and moments untouched) while the others
finish theirs. Plain PyTorch, no Ray.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from red_api.spec import Train
from red_runtime.learn.models import layout
from red_runtime.learn.training import LocalState, make_optimizer

# What one group may stack: its parameters, gradients, two optimizer moments and the update's temporaries,
# about six copies of the model per node. A group larger than this trains as several.
MAX_STACK_BYTES = 256 * 2**20
# Nodes in one group take at least this share of its longest node's steps, so that at most a fifth of the
# lockstep computation is spent on padding for nodes that have already finished.
SLACK = 0.8
# When `auto` vectorises, measured with bench/bench_vectorize.py on a loaded 2-core AMD EPYC with one torch
# thread (an actor with cpu: 1 has one), MLPs on 64 samples per node, batch 32, SGD. A batched step saves the
# serial loop's per-step overhead (zero_grad, optimizer.step, autograd's bookkeeping: about half a millisecond)
# but none of its arithmetic, and its stacked tensors fall out of cache. So on a CPU it pays off for small models
# and several nodes: with parameters x batch up to about a million, 1.3-2x at 4 nodes and 1.4-5x at 10 to 50
# (digits' 64-64-10 MLP: 1.5-2x, 3-3.3x, 4.7-5.2x; the built-in CNN: 1.5-1.8x, 1.4-1.8x, 2.1-2.2x); at 1.6
# million (784-64-10) it breaks even, and the reference 784-128-10 MLP (3.3 million) runs at 0.6-1.3x, mostly
# below 1; at 2 nodes it is about even or slower for any model.
AUTO_CPU_NODES = 4
AUTO_CPU_WORK = 2**20
# On a GPU the serial loop launches a few small kernels per step and node, so batching pays off from two nodes
# for any model that fits (not measured with this code: the benchmark machine has no GPU).
AUTO_GPU_NODES = 2
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which make_optimizer keeps
ADAM_EPS = 1e-8


@dataclass
class Job:
    """One node to train: where it starts, its state (data, optimizer moments) and its shuffling RNG."""

    start: np.ndarray
    state: LocalState
    generator: torch.Generator


def unsupported(model: nn.Module) -> str | None:
    """Why `model` cannot be trained with stacked parameters, or None if it can (as far as its structure
    tells: whether its forward runs under vmap only trying it shows)."""
    if any(True for _ in model.buffers()):
        return "it has buffers (such as running statistics), which its forward changes in place"
    if not all(p.requires_grad for p in model.parameters()):
        return "some of its parameters are frozen"
    # Shared (tied) parameters appear twice in the flat vector but once among the parameters.
    if [t.name for t in layout(model)] != [name for name, _ in model.named_parameters()]:
        return "its parameters are shared between layers"
    return None


def auto_group(model: nn.Module, cfg: Train, device: torch.device) -> int | None:
    """Under `auto`, the fewest nodes a lockstep group needs for vectorising it to pay off; None: it never does."""
    if device.type != "cpu":
        return AUTO_GPU_NODES
    work = sum(p.numel() for p in model.parameters()) * cfg.batchSize
    return AUTO_CPU_NODES if work <= AUTO_CPU_WORK else None


def fits(saved: dict[str, Any] | None, cfg: Train, count: int) -> bool:
    """Whether a node's saved optimizer state is one `cfg`'s optimizer carries on from unchanged, for a model of
    `count` parameters (the serial loop's load_state_dict would restore other settings, such as a checkpoint's
    older learning rate, and the stacked update keeps one step count per node)."""
    if saved is None:
        return True
    groups = saved.get("param_groups", [])
    if len(groups) != 1:
        return False
    if any(groups[0].get(key) != value for key, value in _settings(cfg).items()):
        return False
    entries = saved.get("state", {})
    if sorted(entries) != list(range(count)):
        return False
    expected = {"momentum_buffer"} if cfg.optimizer == "sgd" else {"step", "exp_avg", "exp_avg_sq"}
    if any(set(entry) != expected for entry in entries.values()):
        return False
    return cfg.optimizer == "sgd" or len({float(entry["step"]) for entry in entries.values()}) == 1


@functools.cache
def _settings(cfg: Train) -> dict[str, Any]:
    """The param group settings of the optimizer train_local builds for `cfg` (read only: cached)."""
    group = make_optimizer(nn.Linear(1, 1), cfg).param_groups[0]
    return {key: value for key, value in group.items() if key != "params"}


def groups(steps: list[int], limit: int) -> list[list[int]]:
    """Indices into `steps` (each node's optimizer steps per epoch) gathered into lockstep groups of at most
    `limit`: longest first, each group's nodes within SLACK of its longest."""
    order = sorted(range(len(steps)), key=lambda i: -steps[i])
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < limit and steps[i] >= SLACK * steps[out[-1][0]]:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def steps_per_epoch(samples: int, cfg: Train) -> int:
    return math.ceil(samples / cfg.batchSize)


def group_limit(model: nn.Module) -> int:
    values = sum(p.numel() for p in model.parameters())
    return max(1, MAX_STACK_BYTES // (6 * 4 * max(1, values)))


def train_many(model: nn.Module, jobs: list[Job], cfg: Train, device: torch.device) -> list[tuple[np.ndarray, float]]:
    """train_local for every job, batched; returns each node's new flat parameters and mean loss, in order.

    Each job's generator is used up as train_local would use it. The jobs' states change only once every node
    has trained: if this raises (a forward that vmap cannot run), they are as they were, and the caller can
    train them serially from the same starts with fresh generators.
    """
    sizes = [len(job.state.train) for job in jobs]
    if not all(sizes):
        raise ValueError("a node without training data has nothing to vectorise")
    # One randperm per epoch from each node's own generator, as the serial loop draws them.
    orders = [[torch.randperm(n, generator=job.generator) for _ in range(cfg.epochs)] for n, job in zip(sizes, jobs)]
    steps = [steps_per_epoch(n, cfg) for n in sizes]
    model.train()
    results: list[tuple[np.ndarray, float] | None] = [None] * len(jobs)
    states: list[dict[int, dict[str, torch.Tensor]] | None] = [None] * len(jobs)
    for members in groups(steps, group_limit(model)):
        trained = _train_group(model, [jobs[i] for i in members], [orders[i] for i in members], cfg, device)
        for i, (params, loss, state) in zip(members, trained):
            results[i], states[i] = (params, loss), state
    # What train_local's optimizer.state_dict() holds, so that either path resumes from what the other saved.
    param_groups = make_optimizer(model, cfg).state_dict()["param_groups"]
    for job, state in zip(jobs, states):
        if state:  # plain SGD keeps no state, and train_local then leaves optimizer_state as it was
            job.state.optimizer_state = {"state": state, "param_groups": copy.deepcopy(param_groups)}
        job.state.rounds_trained += 1
    return results  # type: ignore[return-value]


@dataclass
class _Schedule:
    """Every lockstep step's sample indices into a group's concatenated data, [steps, nodes, batch], and a mask
    of those that are real (not padding); per step, its width (its widest real minibatch), whether every node
    has a minibatch in it (so that the update needs no mask) and whether none is padded (no mask at all)."""

    index: torch.Tensor
    real: torch.Tensor
    widths: list[int]
    everyone: list[bool]
    dense: list[bool]


def _schedule(orders: list[list[torch.Tensor]], offsets: list[int], batch: int) -> _Schedule:
    """A node's epoch e occupies steps e*S to (e+1)*S, S the group's longest epoch: a node whose epoch is
    shorter idles until the others finish, so that every epoch starts at the same step for all."""
    longest = max(math.ceil(len(order[0]) / batch) for order in orders)
    span = longest * batch
    epochs = len(orders[0])
    index = np.zeros((epochs, longest, len(orders), batch), dtype=np.int64)
    real = np.zeros_like(index, dtype=bool)
    for k, (order, offset) in enumerate(zip(orders, offsets)):
        for e, perm in enumerate(order):
            padded = np.full(span, offset, dtype=np.int64)  # padding points at a real sample: finite values
            padded[: len(perm)] = perm.numpy() + offset
            index[e, :, k] = padded.reshape(longest, batch)
            real[e, :, k] = (np.arange(span) < len(perm)).reshape(longest, batch)
    index = index.reshape(epochs * longest, len(orders), batch)
    real = real.reshape(epochs * longest, len(orders), batch)
    counts = real.sum(axis=2)
    widths = counts.max(axis=1)
    return _Schedule(
        torch.from_numpy(index),
        torch.from_numpy(real),
        [int(w) for w in widths],
        [bool(c) for c in (counts > 0).all(axis=1)],
        [bool(d) for d in (counts == widths[:, None]).all(axis=1)],
    )


def _train_group(
    model: nn.Module, jobs: list[Job], orders: list[list[torch.Tensor]], cfg: Train, device: torch.device
) -> list[tuple[np.ndarray, float, dict[int, dict[str, torch.Tensor]]]]:
    """Train one lockstep group; per node its flat parameters, mean loss and optimizer state (state_dict's)."""
    k = len(jobs)
    sizes = [len(job.state.train) for job in jobs]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    data = [job.state.train.arrays() for job in jobs]
    x = torch.cat([torch.from_numpy(d.x) for d in data]).to(device)
    y = torch.cat([torch.from_numpy(d.y) for d in data]).to(device)
    plan = _schedule(orders, offsets, cfg.batchSize)
    index, real = plan.index.to(device), plan.real.to(device)
    starts = torch.from_numpy(np.stack([np.asarray(job.start, dtype=np.float32) for job in jobs])).to(device)
    tensors = layout(model)
    params = {t.name: starts[:, t.where].reshape(k, *t.shape).clone().requires_grad_(True) for t in tensors}
    leaves = list(params.values())
    opt = _Optimizer(cfg, leaves, [job.state.optimizer_state for job in jobs])
    forward = vmap(lambda p, xb: functional_call(model, p, (xb,)))
    loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
    batches = torch.zeros(k, dtype=torch.float64, device=device)
    for t, width in enumerate(plan.widths):
        idx = index[t, :, :width]
        out = forward(params, x[idx])
        ce = F.cross_entropy(out.flatten(0, 1), y[idx].flatten(), reduction="none").view(k, width)
        if plan.dense[t]:
            loss, active = ce.mean(dim=1), None
        else:
            # The mean over each node's real samples: CrossEntropyLoss's mean over its minibatch.
            mask = real[t, :, :width].float()
            count = mask.sum(dim=1)
            loss, active = (ce * mask).sum(dim=1) / count.clamp(min=1), count > 0
        grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True)
        if any(g is None for g in grads):
            # torch.optim would skip such a parameter and keep no state for it; one step count per node cannot.
            raise ValueError("a parameter the forward does not use has no gradient")
        with torch.no_grad():
            opt.step(list(grads), None if plan.everyone[t] else active)
        loss_sum += loss.detach().double() if active is None else loss.detach().double() * active
        batches += 1 if active is None else active
    flat = torch.cat([p.detach().reshape(k, -1) for p in leaves], dim=1).cpu().numpy()
    losses = (loss_sum / batches.clamp(min=1)).tolist()
    return [(flat[i].copy(), losses[i], opt.node_state(i)) for i in range(k)]


class _Optimizer:
    """torch.optim's SGD (dampening 0, not Nesterov) or Adam (not AMSGrad) over stacked parameters: the same
    arithmetic, in the same order, as their single-tensor implementations, stepping only the nodes that had a
    minibatch in the step."""

    def __init__(self, cfg: Train, params: list[torch.Tensor], saved: list[dict[str, Any] | None]):
        self.cfg = cfg
        self.params = params
        self.adam = cfg.optimizer == "adam"
        if self.adam:
            kinds: tuple[str, ...] = ("exp_avg", "exp_avg_sq")
        else:
            kinds = ("momentum_buffer",) if cfg.momentum != 0 else ()
        # A node with no saved moment starts from zeros: momentum * 0 + grad is grad, as torch's first step.
        self.moments = {kind: [_stacked(saved, i, kind, p) for i, p in enumerate(params)] for kind in kinds}
        # Adam's step count per node (fits() saw it is the same for every parameter); doubles, as torch works
        # its bias correction out in Python.
        self.steps = torch.tensor(
            [float(_entry(s, 0).get("step", 0.0)) for s in saved], dtype=torch.float64, device=params[0].device
        )

    def step(self, grads: list[torch.Tensor], active: torch.Tensor | None) -> None:
        """One step, in place, of the nodes `active` marks (None: every node)."""
        idle = None if active is None else ~active
        if self.adam:
            self.steps += 1 if active is None else active.double()
            beta1, beta2 = ADAM_BETAS
            counted = self.steps.clamp(min=1)  # an idle node's count may still be 0; its values are put back
            step_size = (self.cfg.lr / (1 - beta1**counted)).float()
            correction2 = (1 - beta2**counted).sqrt().float()
        for i, (p, grad) in enumerate(zip(self.params, grads)):
            touched = [p, *(tensors[i] for tensors in self.moments.values())]
            # In place for all, then the few idle nodes put back: cheaper than building every new value apart.
            kept = None if idle is None else [t[idle].clone() for t in touched]
            if self.cfg.weightDecay != 0:
                grad = grad.add(p, alpha=self.cfg.weightDecay)
            if self.adam:
                m, v = self.moments["exp_avg"][i], self.moments["exp_avg_sq"][i]
                m.lerp_(grad, 1 - ADAM_BETAS[0])
                v.mul_(ADAM_BETAS[1]).addcmul_(grad, grad, value=1 - ADAM_BETAS[1])
                denom = v.sqrt().div_(_across(correction2, v)).add_(ADAM_EPS)
                # torch's addcdiv_(m, denom, value=-step_size): (step_size * m) / denom, in that order.
                p.sub_(m.mul(_across(step_size, m)).div_(denom))
            else:
                if self.cfg.momentum != 0:
                    grad = self.moments["momentum_buffer"][i].mul_(self.cfg.momentum).add_(grad)
                p.add_(grad, alpha=-self.cfg.lr)
            for t, old in zip(touched, kept or []):
                t[idle] = old

    def node_state(self, k: int) -> dict[int, dict[str, torch.Tensor]]:
        """Node k's optimizer state as torch.optim's state_dict holds it, by parameter index (empty for plain
        SGD). Copies: a view would keep, and pickle into a checkpoint, the whole group's stack."""
        if not self.moments:
            return {}
        out = {}
        for i in range(len(self.params)):
            entry = {kind: tensors[i][k].clone() for kind, tensors in self.moments.items()}
            if self.adam:
                # torch keeps Adam's step as a float32 scalar on the CPU, first in the entry.
                entry = {"step": torch.tensor(float(self.steps[k]), dtype=torch.float32), **entry}
            out[i] = entry
        return out


def _entry(saved: dict[str, Any] | None, i: int) -> dict[str, Any]:
    return {} if saved is None else saved.get("state", {}).get(i, {})


def _stacked(saved: list[dict[str, Any] | None], i: int, kind: str, like: torch.Tensor) -> torch.Tensor:
    """Parameter i's moment `kind` of every node, stacked like the parameters `like`; zeros where none is saved."""
    if all(_entry(s, i).get(kind) is None for s in saved):
        return torch.zeros_like(like)
    rows = [_entry(s, i).get(kind) for s in saved]
    return torch.stack(
        [torch.zeros_like(like[0]) if r is None else r.detach().to(device=like.device, dtype=like.dtype) for r in rows]
    ).reshape(like.shape)


def _across(per_node: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-node vector shaped to broadcast over a stacked tensor."""
    return per_node.view(-1, *([1] * (like.dim() - 1)))
