"""Simulated attackers: who attacks (seeded), what each attack sends, and how bad input is named."""

import numpy as np
import pytest

from red_api.spec import Adversaries, SpecError, parse_spec
from red_runtime.engine.events import NodeStatus
from red_runtime.learn.adversaries import chosen, flipped_labels, poisoned
from red_runtime.report.status_sink import adversary_fields, node_fields

pytestmark = pytest.mark.unit

START = np.zeros(3, np.float32)
TRAINED = np.array([1.0, -2.0, 0.5], np.float32)


def test_the_attackers_are_a_seeded_choice_of_distinct_nodes():
    spec = Adversaries(count=3)
    picks = chosen(spec, seed=7, count=10)
    assert len(picks) == 3 and picks <= set(range(10))
    assert chosen(spec, seed=7, count=10) == picks
    assert any(chosen(spec, seed=s, count=10) != picks for s in range(8))
    assert chosen(Adversaries(), seed=7, count=10) == frozenset()


def test_signflip_reverses_and_scales_the_change():
    out = poisoned(Adversaries(count=1, attack="signflip"), START, TRAINED, np.random.default_rng(0))
    np.testing.assert_allclose(out, -5.0 * TRAINED)
    out = poisoned(Adversaries(count=1, attack="signflip", scale=1.0), START + 1, TRAINED + 1, np.random.default_rng(0))
    np.testing.assert_allclose(out, 1 - TRAINED)


def test_scale_boosts_the_change_and_gaussian_sends_noise_around_the_received_model():
    boosted = poisoned(Adversaries(count=1, attack="scale", scale=3.0), START, TRAINED, np.random.default_rng(0))
    np.testing.assert_allclose(boosted, 3.0 * TRAINED)
    start = np.full(20000, 2.0, np.float32)
    noisy = poisoned(Adversaries(count=1, attack="gaussian", scale=0.5), start, start + 1, np.random.default_rng(0))
    assert abs(noisy.mean() - 2.0) < 0.02 and abs(noisy.std() - 0.5) < 0.02
    assert noisy.dtype == np.float32


def test_labelflip_poisons_the_labels_and_sends_the_model_as_trained():
    np.testing.assert_array_equal(flipped_labels(np.array([0, 3, 9]), 10), [9, 6, 0])
    out = poisoned(Adversaries(count=1, attack="labelflip"), START, TRAINED, np.random.default_rng(0))
    np.testing.assert_array_equal(out, TRAINED)


@pytest.mark.parametrize(
    ("adversaries", "field"),
    [
        ({"count": 8}, "spec.nodes.adversaries.count: 8: leaves no honest node"),
        ({"count": -1}, "spec.nodes.adversaries.count: -1"),
        ({"count": 2, "attack": "backdoor"}, "spec.nodes.adversaries.attack: 'backdoor'"),
        (
            {"count": 2, "attack": "labelflip", "scale": 2},
            "spec.nodes.adversaries.scale: 2.0: labelflip takes no scale",
        ),
        ({"count": 2, "scale": 0}, "spec.nodes.adversaries.scale: 0"),
        ({"count": 2, "scale": float("nan")}, "spec.nodes.adversaries.scale: nan: must be a finite number"),
        ({"count": 2, "strength": 2}, "spec.nodes.adversaries.strength: 2: unknown field"),
    ],
)
def test_bad_adversaries_are_refused_naming_the_field(adversaries, field):
    with pytest.raises(SpecError) as err:
        parse_spec({"nodes": {"count": 8, "adversaries": adversaries}})
    assert any(p.startswith(field) for p in err.value.problems), err.value.problems


def test_status_lists_the_attackers_and_marks_them_wherever_nodes_are_listed():
    nodes = [NodeStatus(id=f"node-{i}", state="Healthy", attack="signflip" if i in (2, 5) else None) for i in range(6)]
    nodes[5].state = "Straggling"
    assert adversary_fields(nodes) == {"attack": "signflip", "count": 2, "nodes": ["node-2", "node-5"]}
    assert node_fields(nodes)["nodes"] == [{**nodes[5].as_dict(), "attack": "signflip"}]
    assert "attack" not in nodes[0].as_dict()
    assert adversary_fields([NodeStatus(id="node-0")]) is None


@pytest.mark.parametrize(
    ("stragglers", "field"),
    [
        ({"count": 9}, "spec.nodes.stragglers.count: 9: is more than nodes.count (8)"),
        ({"count": 1, "slowdown": 0.5}, "spec.nodes.stragglers.slowdown: 0.5: must be at least 1"),
        ({"count": 1, "slowdown": float("inf")}, "spec.nodes.stragglers.slowdown: inf: must be a finite number"),
        ({"count": 1, "factor": 3}, "spec.nodes.stragglers.factor: 3: unknown field"),
    ],
)
def test_bad_stragglers_are_refused_naming_the_field(stragglers, field):
    with pytest.raises(SpecError) as err:
        parse_spec({"nodes": {"count": 8, "stragglers": stragglers}})
    assert any(p.startswith(field) for p in err.value.problems), err.value.problems


def test_the_same_seed_slows_the_same_nodes_everywhere():
    from red_api.spec import Stragglers
    from red_runtime.learn.stragglers import slow_nodes

    picked = slow_nodes(Stragglers(count=3), seed=4, count=20)
    assert len(picked) == 3 and picked == slow_nodes(Stragglers(count=3), seed=4, count=20)
    assert slow_nodes(Stragglers(count=0), seed=4, count=20) == frozenset()
