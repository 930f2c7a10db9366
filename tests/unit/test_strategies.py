"""Each strategy's arithmetic on hand-made updates."""

import numpy as np
import pytest

from red_runtime.learn.strategies import STRATEGIES, Update, make_strategy
from red_runtime.learn.strategies.adaptive import FedAdagrad, FedAdam, FedYogi

pytestmark = pytest.mark.unit


def single(name, vec, weight=1.0):
    return Update.single(name, np.asarray(vec, dtype=np.float32), weight)


def test_fedavg_weights_by_samples():
    updates = [single("a", [1.0, 0.0], 10), single("b", [4.0, 3.0], 30)]
    out = make_strategy("fedavg", {}).step(np.zeros(2, np.float32), updates)
    # (10*[1,0] + 30*[4,3]) / 40 = [3.25, 2.25]
    np.testing.assert_allclose(out, [3.25, 2.25])
    assert out.dtype == np.float32


def test_pooled_partial_sums_give_the_same_model():
    rng = np.random.default_rng(0)
    singles = [single(f"n{i}", rng.standard_normal(5), w) for i, w in enumerate([3, 7, 1, 9])]
    pooled = [
        Update(singles[0].params + singles[1].params, 10.0, ("n0", "n1")),
        Update(singles[2].params + singles[3].params, 10.0, ("n2", "n3")),
    ]
    base = np.zeros(5, np.float32)
    for name in ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"):
        a = make_strategy(name, {}).step(base, singles)
        b = make_strategy(name, {}).step(base, pooled)
        np.testing.assert_array_equal(a, b)


def test_fedavgm_accumulates_momentum():
    s = make_strategy("fedavgm", {"serverLr": 1.0, "momentum": 0.5})
    g = np.zeros(1, np.float32)
    g1 = s.step(g, [single("a", [1.0])])  # v = -1 -> g = 1
    g2 = s.step(g1, [single("a", [2.0])])  # grad = 1-2 = -1; v = 0.5*-1 + -1 = -1.5 -> g = 2.5
    np.testing.assert_allclose([g1[0], g2[0]], [1.0, 2.5])


@pytest.mark.parametrize("cls", [FedAdam, FedYogi, FedAdagrad])
def test_adaptive_first_step_by_hand(cls):
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    s = cls(serverLr=lr, beta1=b1, beta2=b2, tau=tau)
    out = s.step(np.zeros(1, np.float32), [single("a", [2.0])])
    delta = 2.0
    m = (1 - b1) * delta
    v0 = tau * tau
    v = {
        FedAdam: b2 * v0 + (1 - b2) * delta**2,
        FedYogi: v0 - (1 - b2) * delta**2 * np.sign(v0 - delta**2),
        FedAdagrad: v0 + delta**2,
    }[cls]
    np.testing.assert_allclose(out, [lr * m / (np.sqrt(v) + tau)], rtol=1e-6)
    assert set(s.state_dict()) == {"m", "v"}


def test_median_and_trimmed_mean_resist_a_poisoned_update():
    honest = [single(f"n{i}", [1.0 + 0.01 * i, -1.0]) for i in range(6)]
    poison = single("evil", [1000.0, 1000.0])
    median = make_strategy("fedmedian", {}).aggregate(honest + [poison])
    trimmed = make_strategy("trimmedmean", {"beta": 0.2}).aggregate(honest + [poison])
    mean = make_strategy("fedavg", {}).aggregate(honest + [poison])
    assert abs(median[0] - 1.03) < 0.02 and abs(trimmed[0] - 1.025) < 0.02
    assert mean[0] > 100


def test_trimmed_mean_by_hand():
    ups = [single(str(i), [v]) for i, v in enumerate([1.0, 2.0, 3.0, 4.0, 100.0])]
    # beta 0.2 of 5 drops one from each end: mean(2, 3, 4) = 3
    np.testing.assert_allclose(make_strategy("trimmedmean", {"beta": 0.2}).aggregate(ups), [3.0])


def test_krum_picks_an_honest_update():
    rng = np.random.default_rng(1)
    honest = [single(f"n{i}", rng.normal(0, 0.1, 4)) for i in range(6)]
    poison = [single("evil", np.full(4, 50.0))]
    s = make_strategy("krum", {"f": 1})
    chosen = s.aggregate(honest + poison)
    assert np.abs(chosen).max() < 1.0
    assert np.argmax(s.scores(np.stack([u.mean for u in honest + poison]))) == 6


def test_robust_strategies_refuse_pooled_updates():
    pooled = Update(np.ones(2), 2.0, ("a", "b"))
    for name in ("fedmedian", "trimmedmean", "krum", "multikrum", "bulyan", "qfedavg"):
        assert not STRATEGIES[name].linear
        with pytest.raises(ValueError, match="pooled"):
            make_strategy(name, {}).step(np.zeros(2, np.float32), [pooled, pooled, pooled, pooled, pooled])


def test_fedprox_exposes_mu_to_local_training():
    assert make_strategy("fedprox", {"mu": 0.5}).proximal_mu == 0.5
    assert make_strategy("fedavg", {}).proximal_mu == 0.0


def honest_and_poisoned(n_honest=8, n_poison=2, dim=6, seed=3):
    rng = np.random.default_rng(seed)
    honest = [single(f"n{i}", 1.0 + rng.normal(0, 0.05, dim), weight=10 + i) for i in range(n_honest)]
    poison = [single(f"evil{i}", np.full(dim, -40.0) + rng.normal(0, 0.05, dim)) for i in range(n_poison)]
    return honest, poison


def test_multikrum_averages_the_n_minus_f_best_weighted_by_samples():
    honest, poison = honest_and_poisoned()
    out = make_strategy("multikrum", {"f": 2}).aggregate(honest + poison)
    # m = 0 keeps n - f = 8: exactly the honest ones, weighted by their sample counts.
    np.testing.assert_allclose(out, make_strategy("fedavg", {}).aggregate(honest))
    two = make_strategy("multikrum", {"f": 2, "m": 2}).aggregate(honest + poison)
    assert np.abs(two - 1.0).max() < 0.2


def test_bulyan_keeps_the_poison_out_coordinate_by_coordinate():
    honest, poison = honest_and_poisoned(n_honest=9, n_poison=2)
    out = make_strategy("bulyan", {"f": 2}).aggregate(honest + poison)
    assert np.abs(out - 1.0).max() < 0.1
    assert np.abs(make_strategy("fedavg", {}).aggregate(honest + poison) - 1.0).max() > 0.5


def test_bulyan_by_hand_on_one_coordinate():
    # n = 7, f = 1: Krum picks n - 2f = 5 (never the outlier 100), then the n - 4f = 3 nearest the median.
    ups = [single(str(i), [v]) for i, v in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])]
    out = make_strategy("bulyan", {"f": 1}).aggregate(ups)
    assert 2.0 <= out[0] <= 5.0


def start_loss(update, loss):
    update.metrics["start_loss"] = loss
    return update


def test_qfedavg_with_q_zero_is_the_plain_mean_of_the_models():
    ups = [start_loss(single("a", [1.0, 0.0], 10), 0.5), start_loss(single("b", [3.0, 2.0], 30), 2.0)]
    s = make_strategy("qfedavg", {"q": 0.0}, local_lr=0.1)
    np.testing.assert_allclose(s.step(np.zeros(2, np.float32), ups), [2.0, 1.0], rtol=1e-6)


def test_qfedavg_gives_the_node_with_the_higher_loss_more_say():
    ups = [start_loss(single("easy", [1.0]), 0.1), start_loss(single("hard", [-1.0]), 2.0)]
    fair = make_strategy("qfedavg", {"q": 2.0}, local_lr=0.1).step(np.zeros(1, np.float32), ups)
    plain = make_strategy("qfedavg", {"q": 0.0}, local_lr=0.1).step(np.zeros(1, np.float32), ups)
    # Both nodes moved as far; q = 2 leans towards the one the model serves worst.
    assert plain[0] == pytest.approx(0.0, abs=1e-6) and fair[0] < -0.05


def test_qfedavg_learns_its_lipschitz_estimate_from_the_local_learning_rate():
    assert make_strategy("qfedavg", {}, local_lr=0.02).local_lr == 0.02


def test_scaffold_sends_its_control_variate_with_the_model_and_moves_both():
    s = make_strategy("scaffold", {}, node_count=4)
    x = np.array([1.0, 2.0], np.float32)
    np.testing.assert_array_equal(s.broadcast(x), [1.0, 2.0, 0.0, 0.0])
    # Two of four nodes sent [model, change of their variate]; equal weights.
    ups = [single("a", [3.0, 2.0, 1.0, 0.0]), single("b", [1.0, 4.0, 3.0, 2.0])]
    np.testing.assert_allclose(s.step(x, ups), [2.0, 3.0])
    np.testing.assert_allclose(s.control, [1.0, 0.5])  # mean change [2, 1] times the 2/4 that took part
    np.testing.assert_allclose(s.broadcast(x)[2:], [1.0, 0.5])
    restored = make_strategy("scaffold", {}, node_count=4)
    restored.load_state_dict(s.state_dict())
    np.testing.assert_array_equal(restored.control, s.control)


def test_scaffold_with_a_server_learning_rate_takes_part_of_the_step():
    s = make_strategy("scaffold", {"serverLr": 0.5}, node_count=1)
    out = s.step(np.zeros(1, np.float32), [single("a", [2.0, 0.0])])
    np.testing.assert_allclose(out, [1.0])


def test_fedbuff_steps_by_the_staleness_weighted_mean_change():
    fresh = Update(np.array([2.0, 0.0]), 1.0, ("a",), {"staleness": 0})
    stale = Update(np.array([0.0, 2.0]), 1.0, ("b",), {"staleness": 3})  # weight 1/sqrt(4) = 0.5
    start = np.ones(2, np.float32)
    poly = make_strategy("fedbuff", {"serverLr": 1.0}).step(start, [fresh, stale])
    np.testing.assert_allclose(poly, [1.0 + 1.0, 1.0 + 0.5])
    flat = make_strategy("fedbuff", {"staleness": "constant", "serverLr": 0.5}).step(start, [fresh, stale])
    np.testing.assert_allclose(flat, [1.0 + 0.5, 1.0 + 0.5])
    assert poly.dtype == np.float32


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad", "scaffold", "fedbuff"])
def test_server_optimisers_step_the_weights_and_average_the_buffers(name):
    # Index 1 is a buffer (a running variance): the nodes' plain mean, whatever the server optimiser does.
    buffers = np.array([1])
    start = np.array([0.0, 1.0], np.float32)
    width = 4 if name == "scaffold" else 2  # SCAFFOLD's nodes send [model, change of their variate]
    sent = [np.array([1.0, 3.0, 0.0, 0.0][:width]), np.array([3.0, 5.0, 0.0, 0.0][:width])]
    if name == "fedbuff":  # FedBuff's nodes send their changes
        updates = [Update(p[:2] - start, 1.0, (f"n{i}",), {"staleness": 0}) for i, p in enumerate(sent)]
    else:
        updates = [Update.single(f"n{i}", p, 1.0) for i, p in enumerate(sent)]
    options = {"serverLr": 0.01} if name != "fedavgm" else {"serverLr": 0.5}
    out = make_strategy(name, options, buffers=buffers, node_count=2).step(start, updates)
    assert out[1] == pytest.approx(4.0)  # the mean of 3 and 5, not a server step towards it
    assert 0.0 < out[0] < 2.0  # the weight moved towards the mean (2), by the server's rule
