"""Training many virtual nodes at once: one batched computation over their stacked parameters.

`train_many` does what `training.train_local` does for each node, for all of them together: the model's
forward runs under `torch.func.vmap` with `functional_call` over parameters stacked along a new first
dimension, and SGD's or Adam's update is applied to the stacked parameters and optimizer moments with the
same arithmetic as torch.optim. Each node shuffles with its own generator, drawing exactly what the serial
loop draws, so the results agree with train_local to float rounding. Nodes of unequal size train in
lockstep with masks: a node whose epoch has ended idles (its parameters and moments untouched) while the
others finish theirs. Plain PyTorch, no Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from red_runtime.models import layout
from red_runtime.spec import Train
from red_runtime.training import LocalState, make_optimizer

# What one group may stack: its parameters, gradients, two optimizer moments and the update's temporaries,
# about six copies of the model per node. A group larger than this trains as several.
MAX_STACK_BYTES = 256 * 2**20
# Nodes in one group take at least this share of its longest node's steps, so that at most a fifth of the
# lockstep computation is spent on padding for nodes that have already finished.
SLACK = 0.8
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


def fits(saved: dict[str, Any] | None, cfg: Train) -> bool:
    """Whether a node's saved optimizer state is one `cfg`'s optimizer would carry on from unchanged (the serial
    loop's load_state_dict would restore other settings, such as a checkpoint's older learning rate)."""
    if saved is None:
        return True
    groups = saved.get("param_groups", [])
    if len(groups) != 1:
        return False
    reference = make_optimizer(nn.Linear(1, 1), cfg).param_groups[0]
    if any(groups[0].get(key) != value for key, value in reference.items() if key != "params"):
        return False
    expected = {"momentum_buffer"} if cfg.optimizer == "sgd" else {"step", "exp_avg", "exp_avg_sq"}
    return all(set(entry) == expected for entry in saved.get("state", {}).values())


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
    steps = [math.ceil(n / cfg.batchSize) for n in sizes]
    model.train()
    results: list[tuple[np.ndarray, float] | None] = [None] * len(jobs)
    moments: list[dict[str, dict[str, torch.Tensor]] | None] = [None] * len(jobs)
    for members in groups(steps, group_limit(model)):
        trained = _train_group(model, [jobs[i] for i in members], [orders[i] for i in members], cfg, device)
        for i, (params, loss, state) in zip(members, trained):
            results[i], moments[i] = (params, loss), state
    for job, state in zip(jobs, moments):
        if state:
            job.state.optimizer_state = _state_dict(model, cfg, state)
        job.state.rounds_trained += 1
    return results  # type: ignore[return-value]


def _schedule(
    orders: list[list[torch.Tensor]], offsets: list[int], batch: int
) -> tuple[torch.Tensor, torch.Tensor, list[int], list[bool]]:
    """Every lockstep step's sample indices into the concatenated data, [steps, nodes, batch], a mask of
    those that are real (not padding), each step's width (its widest real batch), and whether every node
    has a minibatch in it (so that the update needs no mask).

    A node's epoch e occupies steps e*S to (e+1)*S, S its group's longest epoch: a node whose epoch is
    shorter idles until the others finish, so a later epoch starts at the same step for all.
    """
    longest = max(math.ceil(len(order[0]) / batch) for order in orders)
    span = longest * batch
    epochs = len(orders[0])
    index = np.zeros((epochs, longest, len(orders), batch), dtype=np.int64)
    real = np.zeros_like(index, dtype=bool)
    for k, (order, offset) in enumerate(zip(orders, offsets)):
        for e, perm in enumerate(order):
            padded = np.full(span, offset, dtype=np.int64)  # padding points at a real sample: finite values
            padded[: len(perm)] = perm.numpy() + offset
            mask = np.arange(span) < len(perm)
            index[e, :, k] = padded.reshape(longest, batch)
            real[e, :, k] = mask.reshape(longest, batch)
    index = index.reshape(epochs * longest, len(orders), batch)
    real = real.reshape(epochs * longest, len(orders), batch)
    counts = real.sum(axis=2)
    widths = [int(w) for w in counts.max(axis=1)]
    everyone = [bool(c) for c in (counts > 0).all(axis=1)]
    return torch.from_numpy(index), torch.from_numpy(real), widths, everyone


def _train_group(
    model: nn.Module, jobs: list[Job], orders: list[list[torch.Tensor]], cfg: Train, device: torch.device
) -> list[tuple[np.ndarray, float, dict[str, dict[str, torch.Tensor]]]]:
    """Train one lockstep group; per node its flat parameters, mean loss and optimizer moments by name."""
    k = len(jobs)
    sizes = [len(job.state.train) for job in jobs]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    x = torch.cat([torch.from_numpy(job.state.train.x) for job in jobs]).to(device)
    y = torch.cat([torch.from_numpy(job.state.train.y) for job in jobs]).to(device)
    index, real, widths, everyone = _schedule(orders, offsets, cfg.batchSize)
    index, real = index.to(device), real.to(device)
    tensors = layout(model)
    starts = torch.from_numpy(np.stack([np.asarray(job.start, dtype=np.float32) for job in jobs])).to(device)
    params = {t.name: starts[:, t.where].reshape(k, *t.shape).clone().requires_grad_(True) for t in tensors}
    opt = _Optimizer(cfg, params, [job.state.optimizer_state for job in jobs], device)
    forward = vmap(lambda p, xb: functional_call(model, p, (xb,)))
    loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
    batches = torch.zeros(k, dtype=torch.float64, device=device)
    for t, (width, full) in enumerate(zip(widths, everyone)):
        idx, mask = index[t, :, :width], real[t, :, :width].float()
        out = forward(params, x[idx])
        ce = F.cross_entropy(out.flatten(0, 1), y[idx].flatten(), reduction="none").view(k, width)
        count = mask.sum(dim=1)
        # The mean over each node's real samples: CrossEntropyLoss's mean over its minibatch.
        loss = (ce * mask).sum(dim=1) / count.clamp(min=1)
        grads = torch.autograd.grad(loss.sum(), list(params.values()), allow_unused=True)
        active = count > 0
        with torch.no_grad():
            opt.step(dict(zip(params, grads)), None if full else active)
        loss_sum += loss.detach().double() * active
        batches += active
    flat = torch.cat([p.detach().reshape(k, -1) for p in params.values()], dim=1).cpu().numpy()
    losses = (loss_sum / batches.clamp(min=1)).tolist()
    return [(flat[i].copy(), losses[i], opt.node_state(i)) for i in range(k)]


class _Optimizer:
    """torch.optim's SGD (dampening 0, not Nesterov) or Adam (not AMSGrad) over stacked parameters: the same
    arithmetic, in the same order, as their single-tensor implementations, with the step masked to the nodes
    that had a minibatch in it."""

    def __init__(
        self,
        cfg: Train,
        params: dict[str, torch.Tensor],
        saved: list[dict[str, Any] | None],
        device: torch.device,
    ):
        self.cfg = cfg
        self.params = params
        self.moments: dict[str, dict[str, torch.Tensor]] = {}
        names = list(params)
        if cfg.optimizer == "sgd" and cfg.momentum == 0:
            kinds: tuple[str, ...] = ()
        elif cfg.optimizer == "sgd":
            kinds = ("momentum_buffer",)
        else:
            kinds = ("exp_avg", "exp_avg_sq")
        # A node with no saved moment starts from zeros: momentum * 0 + grad is grad, as torch's first step.
        for kind in kinds:
            self.moments[kind] = {
                name: torch.stack([_saved(s, i, kind, p[0], device) for s in saved])
                for i, (name, p) in enumerate(params.items())
            }
        self.adam = cfg.optimizer == "adam"
        # Adam's step counts, per node and parameter; doubles, as torch works out its bias correction in Python.
        self.steps = {
            name: torch.tensor(
                [float(_entry(s, i).get("step", 0.0)) for s in saved], dtype=torch.float64, device=device
            )
            for i, name in enumerate(names)
        }
        # Which parameters each node has state for (a parameter torch never saw a gradient for has none).
        self.seen = {
            name: torch.tensor([bool(_entry(s, i)) for s in saved], device=device) for i, name in enumerate(names)
        }

    def step(self, grads: dict[str, torch.Tensor | None], active: torch.Tensor | None) -> None:
        cfg = self.cfg
        for name, p in self.params.items():
            grad = grads[name]
            if grad is None:
                continue  # torch skips a parameter without a gradient: no decay, no state
            if cfg.weightDecay != 0:
                grad = grad.add(p, alpha=cfg.weightDecay)
            news = self._adam(name, p, grad, active) if self.adam else self._sgd(name, p, grad)
            on = torch.ones_like(self.seen[name]) if active is None else active
            self.seen[name] |= on
            for tensor, new in news:
                tensor.copy_(new if active is None else torch.where(_across(active, new), new, tensor))

    def _sgd(self, name: str, p: torch.Tensor, grad: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.cfg.momentum == 0:
            return [(p, p.add(grad, alpha=-self.cfg.lr))]
        buf = self.moments["momentum_buffer"][name]
        new_buf = buf.mul(self.cfg.momentum).add(grad)
        return [(buf, new_buf), (p, p.add(new_buf, alpha=-self.cfg.lr))]

    def _adam(
        self, name: str, p: torch.Tensor, grad: torch.Tensor, active: torch.Tensor | None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        beta1, beta2 = ADAM_BETAS
        steps = self.steps[name]
        steps += 1 if active is None else active.double()
        m, v = self.moments["exp_avg"][name], self.moments["exp_avg_sq"][name]
        new_m = m.lerp(grad, 1 - beta1)
        new_v = v.mul(beta2).addcmul(grad, grad, value=1 - beta2)
        counted = steps.clamp(min=1)  # an idle node's count may still be 0; its result is masked away
        step_size = (self.cfg.lr / (1 - beta1**counted)).float()
        correction2 = (1 - beta2**counted).sqrt().float()
        denom = (new_v.sqrt() / _across(correction2, new_v)).add(ADAM_EPS)
        new_p = p - _across(step_size, p) * new_m / denom
        return [(m, new_m), (v, new_v), (p, new_p)]

    def node_state(self, i: int) -> dict[str, dict[str, torch.Tensor]]:
        """Node i's optimizer state by parameter name, as torch.optim keeps it (empty for plain SGD)."""
        out = {}
        for name in self.params:
            if not self.moments or not bool(self.seen[name][i]):
                continue
            entry = {kind: tensors[name][i].clone() for kind, tensors in self.moments.items()}
            if self.adam:
                # torch keeps Adam's step as a float32 scalar on the CPU.
                entry = {"step": torch.tensor(float(self.steps[name][i]), dtype=torch.float32), **entry}
            out[name] = entry
        return out


def _entry(saved: dict[str, Any] | None, i: int) -> dict[str, Any]:
    return {} if saved is None else saved.get("state", {}).get(i, {})


def _saved(saved: dict[str, Any] | None, i: int, kind: str, like: torch.Tensor, device: torch.device) -> torch.Tensor:
    value = _entry(saved, i).get(kind)
    if value is None:
        return torch.zeros_like(like, device=device)
    return value.detach().to(device=device, dtype=like.dtype).reshape(like.shape)


def _across(per_node: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-node vector shaped to broadcast over a stacked tensor."""
    return per_node.view(-1, *([1] * (like.dim() - 1)))


def _state_dict(model: nn.Module, cfg: Train, moments: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
    """One node's moments as the state_dict of the optimizer train_local builds, so that either path can
    resume from what the other saved (and a checkpoint holds the same thing whichever wrote it)."""
    optimizer = make_optimizer(model, cfg)
    by_name = dict(model.named_parameters())
    for name, entry in moments.items():
        optimizer.state[by_name[name]] = entry
    return optimizer.state_dict()
