"""Differential privacy: the mechanism that runs is the one the accountant counts, and nothing replays it."""

import json
import logging

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant

from red_api.spec import Privacy, SpecError, parse_manifest, parse_spec
from red_runtime.engine.driver import sample_nodes
from red_runtime.engine.events import HEALTHY, NodeStatus, RoundReport
from red_runtime.engine.rounds.base import Context, server_updates
from red_runtime.learn.privacy import (
    RDP_ORDERS,
    clip_update,
    counted,
    epsilon,
    noisy_mean,
    published,
    report,
    summary_metrics,
)
from red_runtime.learn.strategies import Update
from red_runtime.report.status_sink import StatusSink

pytestmark = pytest.mark.unit

# (fraction, noise multiplier, rounds): full participation, moderate and small sampling rates.
SETTINGS = [(1.0, 1.1, 4), (0.5, 1.1, 20), (0.1, 1.0, 100), (0.01, 0.8, 1000), (0.25, 2.0, 50)]


def federation(privacy=None, count=8, fraction=0.5):
    algorithm = {"fraction": fraction, **({"privacy": privacy} if privacy else {})}
    doc = {
        "apiVersion": "red.dev/v1alpha1",
        "kind": "Federation",
        "metadata": {"name": "dp"},
        "spec": {"nodes": {"count": count}, "algorithm": algorithm, "task": {"seed": 0}},
    }
    return parse_manifest(doc)


def context(fed, params):
    return Context(spec=fed.spec, pool=None, manager=None, graph=None, strategy=None, params=params, sizes={})


def test_clipping_bounds_the_change_and_keeps_small_ones():
    start = np.ones(4, np.float32)
    big = clip_update(start + np.array([3, 4, 0, 0], np.float32), start, clip=1.0)
    np.testing.assert_allclose(big - start, [0.6, 0.8, 0, 0], rtol=1e-6)
    small = clip_update(start + 0.1, start, clip=1.0)
    np.testing.assert_allclose(small, start + 0.1, rtol=1e-6)


def test_the_mean_divides_by_the_expected_count_not_by_who_reported():
    # 8 nodes at fraction 0.5: the server divides by 4 whether one node counted or four did, so one
    # node moves the released model by at most clip / 4, never by its whole change.
    fed = federation({"clip": 1.0, "noiseMultiplier": 1e-9})
    start = np.zeros(2, np.float32)
    change = np.array([0.6, 0.8])
    one = Update.single("node-0", start + change, 1.0)
    released = server_updates(context(fed, start), 1, [one])
    assert len(released) == 1 and released[0].nodes == ("node-0",)
    np.testing.assert_allclose(released[0].mean, change / 4, atol=1e-6)
    uncounted = Update.single("node-1", start + np.array([5.0, 5.0]), 0.0)  # its coin said no: adds nothing
    both = server_updates(context(fed, start), 1, [one, uncounted])
    np.testing.assert_allclose(both[0].mean, change / 4, atol=1e-6)
    assert both[0].nodes == ("node-0", "node-1")


def test_noise_on_the_mean_is_multiplier_times_clip_over_the_expected_count():
    start = np.full(200_000, 0.5)
    ups = [Update(np.full(200_000, 1.0), 2.0, ("a", "b"))]  # two counted nodes that did not move
    out = noisy_mean(ups, start, Privacy(clip=2.0, noiseMultiplier=0.5), expected=4.0, rng=np.random.default_rng(0))
    assert out.weight == 1.0 and out.nodes == ("a", "b")
    assert (out.params - start).mean() == pytest.approx(0.0, abs=0.01)
    assert (out.params - start).std() == pytest.approx(2.0 * 0.5 / 4.0, rel=0.01)


def test_noise_does_not_follow_the_seed_under_privacy_and_nothing_changes_without():
    start = np.zeros(1000, np.float32)
    ups = [Update.single("node-0", start + 0.01, 1.0)]
    private = context(federation({"clip": 1.0, "noiseMultiplier": 1.0}), start)
    first, second = server_updates(private, 3, ups), server_updates(private, 3, ups)
    assert not np.allclose(first[0].params, second[0].params)  # same seed, same round: fresh noise
    plain = context(federation(), start)
    assert server_updates(plain, 3, ups) is ups  # the updates as sent, untouched


def test_coins_count_a_node_at_the_sampling_rate():
    draws = 40_000
    share = sum(counted(0.3) for _ in range(draws)) / draws
    assert abs(share - 0.3) < 6 * np.sqrt(0.3 * 0.7 / draws)
    assert all(counted(1.0) for _ in range(100))


def test_under_privacy_every_live_node_trains_so_who_counted_stays_secret():
    private = federation({"clip": 1.0, "noiseMultiplier": 1.0}, fraction=0.25)
    assert sample_nodes(private, 1, exclude={3}) == [0, 1, 2, 4, 5, 6, 7]
    plain = federation(fraction=0.25)
    assert len(sample_nodes(plain, 1, exclude=set())) == 2


def dp_accounting_epsilon(fraction, noise, rounds, delta):
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(fraction, dp_accounting.GaussianDpEvent(noise)), rounds
    )
    accountant = RdpAccountant(orders=RDP_ORDERS)
    accountant.compose(event)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize(("fraction", "noise", "rounds"), SETTINGS)
def test_epsilon_matches_google_dp_accounting(fraction, noise, rounds, caplog):
    caplog.set_level(logging.ERROR)  # dp-accounting warns about orders it drops as unconverged
    ours = epsilon(rounds, fraction, Privacy(noiseMultiplier=noise, delta=1e-5))
    theirs = dp_accounting_epsilon(fraction, noise, rounds, 1e-5)
    assert ours == pytest.approx(theirs, rel=0.01)


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    p = Privacy(noiseMultiplier=1.0)
    assert epsilon(1, 0.1, p) < epsilon(10, 0.1, p)
    assert epsilon(10, 0.1, Privacy(noiseMultiplier=2.0)) < epsilon(10, 0.1, p)


def test_under_privacy_only_the_privacy_spent_is_published_beside_the_global_model():
    raw = {"train_loss": 0.3, "eval_loss": 0.4, "eval_accuracy": 0.9, "node_test_accuracy": 0.8, "gone": None}
    private = federation({"clip": 1.0, "noiseMultiplier": 1.1, "delta": 1e-6}).spec.algorithm
    out = published(raw, private, rounds=4)
    assert out == {"epsilon": epsilon(4, 0.5, private.privacy), "delta": 1e-6}
    assert report(out) == {"epsilon": out["epsilon"], "delta": 1e-6, "accountant": "rdp", "sampling": "poisson"}
    plain = published(raw, federation().spec.algorithm, rounds=4)
    assert plain == {k: v for k, v in raw.items() if v is not None}
    assert report(plain) is None
    assert summary_metrics([plain, out]) == {"privacy": report(out)}
    assert summary_metrics([plain]) == summary_metrics([]) == {}


def test_status_states_epsilon_delta_accountant_and_sampling():
    bodies = []
    sink = StatusSink(lambda body: bodies.append(json.loads(json.dumps(body, allow_nan=False))), rayjob="")
    spent = {"epsilon": 2.5, "delta": 1e-7}
    sink.round_done(RoundReport(3, 10, 0.5, 0.8, 1, 1, 0.1, metrics=spent), [NodeStatus("node-0", HEALTHY)])
    sink.close()
    assert bodies[-1]["privacy"] == {"epsilon": 2.5, "delta": 1e-7, "accountant": "rdp", "sampling": "poisson"}
    assert bodies[-1]["metrics"] == {"loss": 0.5, "accuracy": 0.8, "epsilon": 2.5}


def test_privacy_needs_a_linear_strategy_and_a_server():
    with pytest.raises(SpecError, match=r"spec.algorithm.privacy: 'set': needs a linear strategy"):
        parse_spec({"algorithm": {"name": "krum", "privacy": {"noiseMultiplier": 1.0}}})
    with pytest.raises(SpecError, match=r"spec.algorithm.privacy: 'set': applies to server-side rounds"):
        parse_spec({"topology": {"kind": "ring"}, "algorithm": {"privacy": {"noiseMultiplier": 1.0}}})
    with pytest.raises(SpecError, match=r"spec.algorithm.privacy.clip: 0"):
        parse_spec({"algorithm": {"privacy": {"clip": 0, "noiseMultiplier": 1.0}}})
