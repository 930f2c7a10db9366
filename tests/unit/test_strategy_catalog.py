"""The catalog (plain Python, read by the spec model) and the strategy classes describe the same strategies."""

import pytest

from red_api.catalog import CATALOG, NAMES, defaults
from red_api.spec import SpecError, parse_spec
from red_runtime.learn.strategies import STRATEGIES, make_strategy

pytestmark = pytest.mark.unit


def test_every_catalog_name_has_a_class_and_no_class_is_missing_from_it():
    assert set(STRATEGIES) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_a_class_takes_linear_and_options_from_its_entry(name):
    cls = STRATEGIES[name]
    assert cls.linear is CATALOG[name].linear and cls.options is CATALOG[name].options
    assert make_strategy(name, {}).opts == defaults(name)


def test_only_the_robust_and_fair_strategies_see_every_update():
    robust = {"fedmedian", "trimmedmean", "krum", "multikrum", "bulyan"}
    assert {n for n in NAMES if not CATALOG[n].linear} == robust | {"qfedavg", "fedbuff"}
    assert {n for n in NAMES if CATALOG[n].asynchronous} == {"fedbuff"}
    assert {n for n in NAMES if CATALOG[n].start_loss} == {"qfedavg"}
    assert {n for n in NAMES if CATALOG[n].control_variates} == {"scaffold"}


@pytest.mark.parametrize(
    ("algorithm", "count", "problem"),
    [
        ({"name": "bulyan", "options": {"f": 2}}, 10, "spec.algorithm.options.f: 2: Bulyan needs at least 4f+3 = 11"),
        ({"name": "multikrum", "options": {"f": 3}}, 8, "spec.algorithm.options.f: 3: Krum needs at least 2f+3 = 9"),
        ({"name": "multikrum", "options": {"f": 1, "m": 8}}, 8, "spec.algorithm.options.m: 8: keeps more than"),
        ({"name": "multikrum", "options": {"m": 1.5}}, 8, "spec.algorithm.options.m: 1.5: must be an integer"),
        ({"name": "qfedavg", "options": {"q": -1}}, 8, "spec.algorithm.options.q: -1: must be at least 0"),
        ({"name": "qfedavg", "options": {"q": float("inf")}}, 8, "spec.algorithm.options.q: inf: must be a finite"),
        ({"name": "qfedavg", "options": {"lr": 1}}, 8, "spec.algorithm.options.lr: 1: unknown option for qfedavg"),
        ({"name": "scaffold", "options": {"serverLr": 0}}, 8, "spec.algorithm.options.serverLr: 0: must be greater"),
        (
            {"name": "scaffold", "privacy": {"noiseMultiplier": 1.0}},
            8,
            "spec.algorithm.privacy: 'set': scaffold's control variates are not clipped or noised",
        ),
        ({"name": "fedbuff", "options": {"staleness": "linear"}}, 8, "spec.algorithm.options.staleness: 'linear'"),
        ({"name": "fedbuff", "options": {"staleness": 1}}, 8, "spec.algorithm.options.staleness: 1: must be one of"),
        ({"name": "fedbuff", "options": {"concurrency": 9}}, 8, "spec.algorithm.options.concurrency: 9: more nodes"),
        ({"name": "fedbuff", "options": {"concurrency": 2.5}}, 8, "spec.algorithm.options.concurrency: 2.5: must be"),
        ({"name": "fedbuff", "options": {"bufferSize": 0}}, 8, "spec.algorithm.options.bufferSize: 0: must be at"),
        (
            {"name": "fedbuff", "privacy": {"noiseMultiplier": 1.0}},
            8,
            "spec.algorithm.privacy: 'set': fedbuff's updates arrive at no fixed rate",
        ),
    ],
)
def test_bad_options_of_the_new_strategies_name_the_field(algorithm, count, problem):
    with pytest.raises(SpecError) as err:
        parse_spec({"nodes": {"count": count}, "algorithm": algorithm})
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


@pytest.mark.parametrize("kind", ["ring", "hierarchical"])
def test_fedbuff_runs_on_a_star_only(kind):
    with pytest.raises(SpecError) as err:
        parse_spec({"topology": {"kind": kind, "groups": 2}, "algorithm": {"name": "fedbuff"}})
    assert any(p.startswith("spec.algorithm.name: 'fedbuff'") for p in err.value.problems), err.value.problems
