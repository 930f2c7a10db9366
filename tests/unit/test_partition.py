"""Partitions: every sample placed once, skew as asked, and the same split for the same seed."""

import numpy as np
import pytest

from red_api.spec import Partition
from red_runtime.learn.partition import class_counts, split

pytestmark = pytest.mark.unit

LABELS = np.repeat(np.arange(10), 100)


def classes_per_node(parts):
    return [len(np.unique(LABELS[p])) for p in parts]


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "labels", "quantity"])
def test_every_sample_once_and_no_empty_node(kind):
    parts = split(LABELS, 8, Partition(kind=kind), seed=3)
    joined = np.concatenate(parts)
    assert len(joined) == len(LABELS) and len(np.unique(joined)) == len(LABELS)
    assert all(len(p) > 0 for p in parts)


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "labels", "quantity"])
def test_deterministic_for_a_seed(kind):
    a = split(LABELS, 8, Partition(kind=kind), seed=5)
    b = split(LABELS, 8, Partition(kind=kind), seed=5)
    c = split(LABELS, 8, Partition(kind=kind), seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_sizes_equal_and_all_labels():
    parts = split(LABELS, 10, Partition(kind="iid"), seed=0)
    assert {len(p) for p in parts} == {100}
    assert min(classes_per_node(parts)) >= 8


def test_labels_gives_k_classes_per_node():
    parts = split(LABELS, 10, Partition(kind="labels", labels=2), seed=0)
    assert classes_per_node(parts) == [2] * 10


def test_dirichlet_skews_labels_more_for_small_alpha():
    def skew(alpha):
        parts = split(LABELS, 10, Partition(kind="dirichlet", alpha=alpha), seed=0)
        # Mean share of each node's most common label: 0.1 for perfectly balanced, 1.0 for one label.
        return np.mean([np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts])

    assert skew(0.1) > skew(100.0) + 0.3
    assert skew(100.0) < 0.25


def test_quantity_skews_sizes():
    parts = split(LABELS, 10, Partition(kind="quantity", alpha=0.5), seed=0)
    sizes = sorted(len(p) for p in parts)
    assert sizes[-1] > 3 * sizes[0]


def test_class_counts_sizes_and_label_skew():
    counts = class_counts(6, 50, 10, Partition(kind="labels", labels=3), seed=1)
    assert counts.shape == (6, 10)
    assert (counts.sum(axis=1) == 50).all()
    assert ((counts > 0).sum(axis=1) == 3).all()
    iid = class_counts(6, 50, 10, Partition(kind="iid"), seed=1)
    assert (iid.sum(axis=1) == 50).all() and (iid > 0).all()
    dirichlet = class_counts(6, 50, 10, Partition(kind="dirichlet", alpha=0.5), seed=1)
    assert np.array_equal(dirichlet, class_counts(6, 50, 10, Partition(kind="dirichlet", alpha=0.5), seed=1))
    quantity = class_counts(6, 50, 10, Partition(kind="quantity", alpha=0.5), seed=1)
    assert quantity.sum(axis=1).max() > quantity.sum(axis=1).min()
