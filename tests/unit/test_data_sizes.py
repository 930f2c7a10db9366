"""Every node gets training data, or the manifest is refused before Ray starts, naming the numbers."""

from __future__ import annotations

import sys
import textwrap

import pytest

from red_api.spec import DIGITS_CLASSES, SpecError, parse_manifest, parse_spec
from red_runtime.learn.data import check_partition, load_digits_pool

pytestmark = pytest.mark.unit

DIGITS_TRAIN = 1437  # 1,797 digits less the 20% test set
KINDS = ["iid", "dirichlet", "labels", "quantity"]


def task_and_count(spec):
    parsed = parse_spec(spec)
    return parsed.task, parsed.nodes.count


def test_the_spec_knows_how_many_classes_digits_has():
    assert len(set(load_digits_pool()[1].tolist())) == DIGITS_CLASSES


@pytest.mark.parametrize("kind", KINDS)
def test_as_many_nodes_as_training_samples_each_get_one(kind):
    sizes = check_partition(*task_and_count({"nodes": {"count": DIGITS_TRAIN}, "task": {"partition": {"kind": kind}}}))
    assert len(sizes) == DIGITS_TRAIN and sizes.min() == 1


@pytest.mark.parametrize("kind", KINDS)
def test_more_nodes_than_samples_is_refused_naming_the_numbers(kind):
    with pytest.raises(SpecError) as err:
        check_partition(*task_and_count({"nodes": {"count": 5000}, "task": {"partition": {"kind": kind}}}))
    (problem,) = err.value.problems
    assert problem.startswith("spec.nodes.count: 5000:")
    assert "3563 of the 5000 nodes" in problem and f"{DIGITS_TRAIN} training samples" in problem and kind in problem


def test_synthetic_data_fills_any_node_count():
    sizes = check_partition(*task_and_count({"nodes": {"count": 5000}, "task": {"dataset": {"name": "synthetic"}}}))
    assert sizes.min() == 256


@pytest.fixture
def user_datasets(tmp_path, monkeypatch):
    (tmp_path / "userdata.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def three_classes(seed):
                y = np.arange(300) % 3
                return np.random.default_rng(seed).random((300, 4)), y

            def broken(seed):
                raise RuntimeError("the bucket is empty")

            def ragged(seed):
                return [[1.0], [2.0, 3.0]], [0, 1]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("userdata", None)


def test_more_labels_per_node_than_a_user_dataset_has_classes_is_refused(user_datasets):
    task, count = task_and_count(
        {"task": {"dataset": {"name": "userdata:three_classes"}, "partition": {"kind": "labels", "labels": 5}}}
    )
    with pytest.raises(SpecError) as err:
        check_partition(task, count)
    assert err.value.problems == ["spec.task.partition.labels: 5: is more than the 3 classes of userdata:three_classes"]


@pytest.mark.parametrize("factory, why", [("broken", "the bucket is empty"), ("ragged", "inhomogeneous")])
def test_a_user_dataset_that_fails_to_load_names_the_field(user_datasets, factory, why):
    with pytest.raises(ValueError, match=rf"^spec.task.dataset.name: 'userdata:{factory}': .*{why}"):
        check_partition(*task_and_count({"task": {"dataset": {"name": f"userdata:{factory}"}}}))


def test_the_driver_checks_the_sizes_before_ray_starts():
    from red_runtime.learn.data import check_references

    doc = {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": "f"}}
    with pytest.raises(SpecError, match="spec.nodes.count: 5000"):
        check_references(parse_manifest({**doc, "spec": {"nodes": {"count": 5000}}}))
