"""Datasets: scikit-learn's bundled digits, seeded synthetic data, or a user's factory.

A `DataSource` is cheap to build anywhere (driver or node actor). What an actor keeps of a node between
rounds does not grow with the data: `Rows`, an index into the one pooled array the actor holds, or into
the node's generated data, which is made again from (seed, node) at each use unless the actor holds it
(`task.dataset.cache`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property, partial

import numpy as np

from red_api.spec import Federation, Partition, SpecError, Task
from red_runtime.learn import partition
from red_runtime.learn.references import resolve

# Under task.dataset.cache auto, an actor holds its nodes' generated data when all of it takes at most this:
# a thousand reference nodes (512 x 784 floats each) in two actors are held, ten thousand are made again.
AUTO_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class Arrays:
    x: np.ndarray  # float32, shape (n, *input_shape)
    y: np.ndarray  # int64, shape (n,)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> Arrays:
        return Arrays(self.x[idx], self.y[idx])

    def arrays(self) -> Arrays:
        return self

    def relabelled(self, relabel: Callable[[np.ndarray], np.ndarray]) -> Arrays:
        return Arrays(self.x, relabel(self.y))


@dataclass(frozen=True, eq=False)
class Rows:
    """Rows `idx` of the arrays `load` gives, taken only while a node trains or evaluates (`arrays()`).

    A node's share of a pooled dataset is an index into the one copy its actor holds; a generated node's
    data comes from `DataSource.generated`, held or made again. Either way a node costs its indices.
    """

    load: Callable[[], Arrays]
    idx: np.ndarray | slice
    relabel: Callable[[np.ndarray], np.ndarray] | None = None  # labelflip's training labels

    def __len__(self) -> int:
        if isinstance(self.idx, slice):
            return self.idx.stop - self.idx.start
        return len(self.idx)

    def take(self, idx: np.ndarray) -> Rows:
        own = np.arange(self.idx.start, self.idx.stop) if isinstance(self.idx, slice) else self.idx
        return replace(self, idx=own[idx])

    def arrays(self) -> Arrays:
        base = self.load()
        y = base.y[self.idx]
        return Arrays(base.x[self.idx], y if self.relabel is None else self.relabel(y))

    def relabelled(self, relabel: Callable[[np.ndarray], np.ndarray]) -> Rows:
        return replace(self, relabel=relabel)


def holds_generated(cache: str, nbytes: int) -> bool:
    """Whether an actor holds generated node data taking `nbytes` between rounds (task.dataset.cache)."""
    return cache == "always" or (cache == "auto" and nbytes <= AUTO_CACHE_BYTES)


def load_digits_pool() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 digits shipped inside scikit-learn (no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return x, digits.target.astype(np.int64)


def _user_pool(ref: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    factory = resolve(ref, "spec.task.dataset.name")
    x, y = factory(seed)
    return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)


class DataSource:
    """Test set and per-node partitions for one Federation's task, deterministic in the seed."""

    def __init__(self, task: Task, nodes: int):
        self.task = task
        self.nodes = nodes
        self.synthetic = task.dataset.name == "synthetic"
        self.hold = task.dataset.cache == "always"  # generated node data, once made (see hold_for)
        self._held: dict[int, Arrays] = {}
        self._last: tuple[int, Arrays] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.task.dataset.features,) if self.synthetic else tuple(self._pool[0].shape[1:])

    @property
    def classes(self) -> int:
        return self.task.dataset.classes if self.synthetic else int(self._pool[1].max()) + 1

    def prepare(self) -> None:
        """Load what every node's data is cut from (the pool and its split, or the mixture's centres)."""
        _ = (self._class_counts, self._class_means) if self.synthetic else self._partitions

    def test_set(self) -> Arrays:
        if self.synthetic:
            c = self.task.dataset.classes
            per_class = max(1, 2000 // c)
            return self._generate(np.full(c, per_class), np.random.default_rng([self.task.seed, 3]))
        x, y = self._pool
        return Arrays(x, y).take(self._test_train_split[0])

    def node_data(self, index: int) -> Arrays:
        if self.synthetic:
            counts = self._class_counts[index]
            return self._generate(counts, np.random.default_rng([self.task.seed, 2, index]))
        x, y = self._pool
        train_idx = self._test_train_split[1]
        return Arrays(x, y).take(train_idx[self._partitions[index]])

    def node_rows(self, index: int) -> Rows:
        """What a node actor keeps of node `index`'s training data: indices, not the data."""
        if self.synthetic:
            return Rows(partial(self.generated, index), slice(0, int(self._class_counts[index].sum())))
        return Rows(self.pool, self._test_train_split[1][self._partitions[index]])

    def pool(self) -> Arrays:
        """The pooled dataset, one copy per process, which every node's Rows index."""
        return self._pool_arrays

    def generated(self, index: int) -> Arrays:
        """Node `index`'s generated data: held, or made again. The node used last is kept either way, so a
        node's evaluation and training in one round make it once."""
        if index in self._held:
            return self._held[index]
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        data = self.node_data(index)
        if self.hold:
            self._held[index] = data
        else:
            self._last = (index, data)
        return data

    def hold_for(self, hosted: list[int]) -> bool:
        """Decide whether this actor holds the generated data of the nodes it hosts (task.dataset.cache), and if
        so make it now: at start-up, so that a node's first round costs what its later ones do."""
        if self.synthetic:
            samples = int(self._class_counts[hosted].sum()) if hosted else 0
            self.hold = holds_generated(self.task.dataset.cache, samples * (4 * self.task.dataset.features + 8))
            if self.hold:
                for index in hosted:
                    self.generated(index)
        return self.hold

    def node_sizes(self) -> np.ndarray:
        if self.synthetic:
            return self._class_counts.sum(axis=1)
        return np.array([len(p) for p in self._partitions])

    def train_labels(self) -> np.ndarray:
        """The labels that the partition divides among the nodes (the pool without its test set)."""
        if self.synthetic:
            return np.repeat(np.arange(self.task.dataset.classes), self._class_counts.sum(axis=0))
        return self._pool[1][self._test_train_split[1]]

    @cached_property
    def _pool(self) -> tuple[np.ndarray, np.ndarray]:
        if self.task.dataset.name == "digits":
            return load_digits_pool()
        return _user_pool(self.task.dataset.name, self.task.seed)

    @cached_property
    def _pool_arrays(self) -> Arrays:
        return Arrays(*self._pool)

    @cached_property
    def _test_train_split(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.model_selection import train_test_split

        y = self._pool[1]
        train, test = train_test_split(
            np.arange(len(y)),
            test_size=self.task.dataset.testFraction,
            random_state=self.task.seed,
            stratify=y if np.bincount(y).min() >= 2 else None,
        )
        return np.sort(test), np.sort(train)

    @cached_property
    def _partitions(self) -> list[np.ndarray]:
        return partition.split(self.train_labels(), self.nodes, self.task.partition, self.task.seed)

    @cached_property
    def _class_counts(self) -> np.ndarray:
        d = self.task.dataset
        return partition.class_counts(self.nodes, d.samplesPerNode, d.classes, self.task.partition, self.task.seed)

    @cached_property
    def _class_means(self) -> np.ndarray:
        # A Gaussian mixture with one centre per class: learnable, and label skew is easy to express.
        d = self.task.dataset
        rng = np.random.default_rng([self.task.seed, 1])
        return (rng.standard_normal((d.classes, d.features)) * (3.0 / np.sqrt(d.features))).astype(np.float32)

    def _generate(self, counts: np.ndarray, rng: np.random.Generator) -> Arrays:
        y = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
        y = y[rng.permutation(len(y))]
        x = rng.standard_normal((len(y), self.task.dataset.features), dtype=np.float32)
        x += self._class_means[y]  # in place: a thousand nodes' data is most of a run's memory
        return Arrays(x, y)


def _describe(spec: Partition) -> str:
    return {
        "iid": "iid",
        "dirichlet": f"dirichlet (alpha {spec.alpha})",
        "labels": f"labels ({spec.labels} classes per node)",
        "quantity": f"quantity (alpha {spec.alpha})",
    }[spec.kind]


def check_partition(task: Task, nodes: int) -> np.ndarray:
    """Each node's number of training samples; SpecError if the split leaves a node without any.

    The spec alone cannot tell, since how many samples there are (and a user dataset's classes) is known
    only once the data is loaded; so `red validate` and the driver call this before Ray starts, never the
    operator. Raises ValueError naming spec.task.dataset.name when a user's factory cannot be loaded.
    """
    name = task.dataset.name
    if ":" in name:
        resolve(name, "spec.task.dataset.name")  # a reference that does not import names itself
    source = DataSource(task, nodes)
    try:
        labels = source.train_labels()
    except Exception as err:  # the user's factory failed, or returned something that is not two arrays
        raise ValueError(f"spec.task.dataset.name: {name!r}: loading the data failed: {err!r}") from err
    classes = len(np.unique(labels))
    # The spec model checked digits and synthetic already; a factory's classes are known only now.
    if not source.synthetic and task.partition.kind == "labels" and task.partition.labels > classes:
        raise SpecError(
            [f"spec.task.partition.labels: {task.partition.labels}: is more than the {classes} classes of {name}"]
        )
    sizes = source.node_sizes()
    empty = int((sizes == 0).sum())
    if empty:
        total = len(labels)
        raise SpecError(
            [
                f"spec.nodes.count: {nodes}: leaves {empty} of the {nodes} nodes without training data: {name} has "
                f"{total} training samples (partition {_describe(task.partition)}), so at most {total} nodes can "
                "each get one"
            ]
        )
    return sizes


def check_references(fed: Federation) -> None:
    """Import the user's dataset and model references and check that every node gets training data,
    so a typo or a node count the data cannot fill fails before Ray starts."""
    task = fed.spec.task
    for ref, path in (
        (task.dataset.name, "spec.task.dataset.name"),
        (task.model.name, "spec.task.model.name"),
    ):
        if ":" in ref:
            resolve(ref, path)
    check_partition(task, fed.spec.nodes.count)
