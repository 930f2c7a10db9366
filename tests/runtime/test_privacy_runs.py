"""Privacy on a real Ray: the same seed draws fresh noise, every node trains, only what is accounted is published."""

import numpy as np
import pytest

from red_api.spec import Privacy
from red_runtime.learn.privacy import epsilon
from tests.runtime.conftest import example

pytestmark = pytest.mark.ray

PRIVACY = {"clip": 1.0, "noiseMultiplier": 1.0, "delta": 1e-5}


def small(**overrides):
    # Four nodes in two actors, two rounds; the test role would publish per-node figures without privacy.
    return example(
        rounds=2, **{"nodes.count": 4, "nodes.role": "train-eval-test", "algorithm.fraction": 0.5, **overrides}
    )


def test_private_runs_of_one_seed_differ_and_publish_only_the_privacy_spent(run_federation):
    a, b = (run_federation(small(**{"algorithm.privacy": PRIVACY})) for _ in range(2))
    assert not np.allclose(a.params, b.params)  # same manifest, same seed: fresh noise each run
    spent = epsilon(2, 0.5, Privacy(**PRIVACY))
    for rec in (a, b):
        assert [set(r.metrics) for r in rec.reports] == [{"epsilon", "delta"}] * 2
        assert rec.reports[-1].metrics["epsilon"] == pytest.approx(spent)
        assert rec.summary.metrics == {
            "privacy": {"epsilon": pytest.approx(spent), "delta": 1e-5, "accountant": "rdp", "sampling": "poisson"}
        }
        assert [n.lastRound for n in rec.nodes] == [2] * 4  # every node trained: who counted stays secret


def test_runs_without_privacy_stay_reproducible_and_report_the_nodes_figures(run_federation):
    a, b = run_federation(small()), run_federation(small())
    np.testing.assert_array_equal(a.params, b.params)
    assert {"train_loss", "eval_accuracy"} <= set(a.reports[-1].metrics)
    assert "node_test_accuracy" in a.summary.metrics
