"""Local training and evaluation of one virtual node: plain PyTorch, no Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from red_api.spec import Train
from red_runtime.learn.data import Arrays, Rows
from red_runtime.learn.models import get_flat, parameter_slices, set_flat


@dataclass
class LocalState:
    """What a virtual node keeps between rounds inside its actor: its data as Rows (indices) where the actor
    built it, taken as arrays only while it trains or evaluates."""

    train: Arrays | Rows
    eval: Arrays | Rows | None = None
    test: Arrays | Rows | None = None
    optimizer_state: dict[str, Any] | None = None
    params: np.ndarray | None = None  # own model, for decentralised topologies
    control: np.ndarray | None = None  # own control variate (SCAFFOLD)
    personal: np.ndarray | None = None  # own values of the layers kept local (FedPer, FedBN)
    residual: np.ndarray | None = None  # what compression left out of the last update (error feedback)
    rounds_trained: int = 0


def local_splits(data: Arrays | Rows, roles: frozenset[str], seed: int, index: int) -> LocalState:
    """Hold out a share of a node's data for the eval and test roles; the rest trains."""
    held = {role: max(1, len(data) // 7) if role in roles and len(data) >= 4 else 0 for role in ("eval", "test")}
    if not any(held.values()):
        return LocalState(train=data)  # nothing held out: keep the arrays, no copy
    order = np.random.default_rng([seed, 4, index]).permutation(len(data))
    eval_idx = order[: held["eval"]]
    test_idx = order[held["eval"] : held["eval"] + held["test"]]
    train_idx = order[held["eval"] + held["test"] :]
    return LocalState(
        train=data.take(np.sort(train_idx)),
        eval=data.take(np.sort(eval_idx)) if held["eval"] else None,
        test=data.take(np.sort(test_idx)) if held["test"] else None,
    )


def make_optimizer(model: nn.Module, cfg: Train) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weightDecay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weightDecay)


def train_local(
    model: nn.Module,
    start: np.ndarray,
    state: LocalState,
    cfg: Train,
    generator: torch.Generator,
    device: torch.device,
    proximal_mu: float = 0.0,
    correction: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Train from `start` on the node's data; returns the new flat parameters and the mean loss.

    `correction` (flat, get_flat's layout) is added to every gradient: SCAFFOLD's c - c_i.
    """
    set_flat(model, start)
    model.train()
    optimizer = make_optimizer(model, cfg)
    if state.optimizer_state is not None:
        optimizer.load_state_dict(state.optimizer_state)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    drift = []
    if correction is not None:
        vec = torch.from_numpy(np.asarray(correction, dtype=np.float32)).to(device)
        drift = [(p, vec[where].view_as(p)) for p, where in parameter_slices(model)]
    data = state.train.arrays()
    x = torch.from_numpy(data.x).to(device)
    y = torch.from_numpy(data.y).to(device)
    loss_fn = nn.CrossEntropyLoss()
    total, batches = 0.0, 0
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(y), generator=generator).to(device)
        for start_at in range(0, len(y), cfg.batchSize):
            idx = perm[start_at : start_at + cfg.batchSize]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
                loss = loss + 0.5 * proximal_mu * prox
            loss.backward()
            for p, c in drift:
                if p.grad is not None:
                    p.grad.add_(c)
            optimizer.step()
            total += float(loss.detach())
            batches += 1
    if optimizer.state:
        state.optimizer_state = optimizer.state_dict()
    state.rounds_trained += 1
    return get_flat(model), total / max(1, batches)


def local_steps(samples: int, cfg: Train) -> int:
    """Optimizer steps one round of train_local takes on `samples` examples."""
    return cfg.epochs * max(1, math.ceil(samples / cfg.batchSize))


@torch.no_grad()
def evaluate(model: nn.Module, params: np.ndarray, data: Arrays | Rows, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of `params` on `data`."""
    data = data.arrays()
    set_flat(model, params)
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss, correct = 0.0, 0
    for start in range(0, len(data), 4096):
        x = torch.from_numpy(data.x[start : start + 4096]).to(device)
        y = torch.from_numpy(data.y[start : start + 4096]).to(device)
        out = model(x)
        loss += float(loss_fn(out, y))
        correct += int((out.argmax(dim=1) == y).sum())
    return loss / len(data), correct / len(data)
