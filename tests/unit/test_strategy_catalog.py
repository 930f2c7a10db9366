"""The catalog (plain Python, read by the spec model) and the strategy classes describe the same strategies."""

import pytest

from red_runtime.strategies import STRATEGIES, make_strategy
from red_runtime.strategies.catalog import CATALOG, NAMES, defaults

pytestmark = pytest.mark.unit


def test_every_catalog_name_has_a_class_and_no_class_is_missing_from_it():
    assert set(STRATEGIES) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_a_class_takes_linear_and_options_from_its_entry(name):
    cls = STRATEGIES[name]
    assert cls.linear is CATALOG[name].linear and cls.options is CATALOG[name].options
    assert make_strategy(name, {}).opts == defaults(name)


def test_only_the_robust_strategies_see_every_update():
    assert {n for n in NAMES if not CATALOG[n].linear} == {"fedmedian", "trimmedmean", "krum"}
