"""Split a labelled pool among federation nodes: iid, Dirichlet label skew, k labels each, skewed sizes.

Pure functions of (labels, node count, spec, seed): the same seed gives the same split on every
machine, so a node's data is found from its index alone, never from its actor or its name.
"""

from __future__ import annotations

import numpy as np

from red_api.spec import Partition


def split(labels: np.ndarray, nodes: int, spec: Partition, seed: int) -> list[np.ndarray]:
    """Indices into `labels` for each node; every node gets at least one sample when possible."""
    rng = np.random.default_rng([seed, 0x9A57])
    if spec.kind == "iid":
        parts = np.array_split(rng.permutation(len(labels)), nodes)
    elif spec.kind == "dirichlet":
        parts = _dirichlet(labels, nodes, spec.alpha, rng)
    elif spec.kind == "labels":
        parts = _k_labels(labels, nodes, spec.labels, rng)
    else:
        parts = _quantity(len(labels), nodes, spec.alpha, rng)
    return _fill_empty([np.sort(np.asarray(p, dtype=np.int64)) for p in parts])


def class_counts(nodes: int, samples: int, classes: int, spec: Partition, seed: int) -> np.ndarray:
    """How many samples of each class every node holds, for generated data (shape nodes x classes)."""
    rng = np.random.default_rng([seed, 0x9A57])
    if spec.kind == "dirichlet":
        shares = rng.dirichlet(np.full(classes, spec.alpha), size=nodes)
    elif spec.kind == "labels":
        shares = np.zeros((nodes, classes))
        for node, owned in enumerate(_label_sets(nodes, classes, spec.labels, rng)):
            shares[node, owned] = 1.0 / len(owned)
    else:
        shares = np.full((nodes, classes), 1.0 / classes)
    sizes = np.full(nodes, samples)
    if spec.kind == "quantity":
        sizes = np.maximum(1, np.round(rng.dirichlet(np.full(nodes, spec.alpha)) * samples * nodes))
    counts = np.floor(shares * sizes[:, None]).astype(np.int64)
    # Hand the rounding remainder to each node's most likely classes so sizes add up exactly.
    for node in range(nodes):
        short = int(sizes[node] - counts[node].sum())
        if short:
            counts[node, np.argsort(-shares[node], kind="stable")[:short]] += 1
    return counts


def _dirichlet(labels, nodes, alpha, rng) -> list[list[int]]:
    parts: list[list[int]] = [[] for _ in range(nodes)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cuts = (np.cumsum(rng.dirichlet(np.full(nodes, alpha))) * len(idx)).astype(int)[:-1]
        for node, chunk in enumerate(np.split(idx, cuts)):
            parts[node].extend(chunk.tolist())
    return parts


def _label_sets(nodes, classes, k, rng) -> list[np.ndarray]:
    k = min(k, classes)
    order = rng.permutation(classes)
    # Node i takes k consecutive classes of a shuffled cycle, so every class has an owner once
    # nodes * k >= classes, and owners are spread evenly.
    return [order[(np.arange(k) + i * k) % classes] for i in range(nodes)]


def _k_labels(labels, nodes, k, rng) -> list[list[int]]:
    classes = np.unique(labels)
    owners: dict[int, list[int]] = {int(c): [] for c in classes}
    for node, owned in enumerate(_label_sets(nodes, len(classes), k, rng)):
        for c in owned:
            owners[int(classes[c])].append(node)
    parts: list[list[int]] = [[] for _ in range(nodes)]
    for cls, holders in owners.items():
        if not holders:
            continue
        idx = rng.permutation(np.flatnonzero(labels == cls))
        for holder, chunk in zip(holders, np.array_split(idx, len(holders))):
            parts[holder].extend(chunk.tolist())
    return parts


def _quantity(total, nodes, alpha, rng) -> list[np.ndarray]:
    cuts = (np.cumsum(rng.dirichlet(np.full(nodes, alpha))) * total).astype(int)[:-1]
    return np.split(rng.permutation(total), cuts)


def _fill_empty(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Move one sample from the largest part to each empty one: a node with no data cannot train."""
    for i, part in enumerate(parts):
        if len(part) == 0:
            donor = max(range(len(parts)), key=lambda j: len(parts[j]))
            if len(parts[donor]) < 2:
                break
            parts[i], parts[donor] = parts[donor][-1:], parts[donor][:-1]
    return parts
