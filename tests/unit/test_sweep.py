"""What `red tune --param` and spec.sweep accept, and how a bad one is refused before any trial runs."""

import pytest

from red_api.spec import parse_spec
from red_api.sweep import parse_param, parse_sweep, sweep_from_spec
from red_api.trial import apply_values, check_sweep
from red_runtime.engine.placement import trial_plan
from tests.runtime.conftest import example

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "text, kind, values",
    [
        ("task.train.lr=loguniform:1e-3:0.3", "loguniform", (1e-3, 0.3)),
        ("spec.task.train.lr=uniform:0.01:0.5", "uniform", (0.01, 0.5)),
        ("task.train.epochs=randint:1:5", "randint", (1, 5)),
        ("algorithm.name=choice:fedavg,fedprox", "choice", ("fedavg", "fedprox")),
        ("task.train.batchSize=grid:16,32,64", "grid", (16, 32, 64)),
    ],
)
def test_param_kinds(text, kind, values):
    param = parse_param(text)
    assert param.path.startswith("task.") or param.path.startswith("algorithm.")
    assert (param.kind, param.values) == (kind, values)


@pytest.mark.parametrize(
    "text, says",
    [
        ("task.train.lr", "expected PATH=KIND:VALUES"),
        ("task.train.lr=normal:0:1", "unknown kind 'normal'"),
        ("task.train.lr=loguniform:0:1", "loguniform needs LOW > 0"),
        ("task.train.lr=uniform:0.5:0.1", "needs LOW < HIGH"),
        ("task.train.lr=uniform:a:b", "bounds must be floats"),
        ("task.train.epochs=randint:1.5:3", "bounds must be ints"),
        ("task.train.lr=uniform:0.1", "takes two bounds"),
        ("algorithm.name=choice:", "comma-separated list"),
        ("task.train.lr=uniform:0:inf", "both finite"),
    ],
)
def test_bad_param_names_itself(text, says):
    with pytest.raises(ValueError, match="--param") as err:
        parse_param(text)
    assert says in str(err.value) and repr(text) in str(err.value)


def test_grid_values_multiply_the_samples():
    sweep = parse_sweep(
        ["task.train.lr=grid:0.01,0.1", "task.train.epochs=grid:1,2,3"], 2, "accuracy", "max", "asha", 0
    )
    assert sweep.trials == 12


@pytest.mark.parametrize(
    "field, kwargs, says",
    [
        ("--samples", {"samples": 0}, "--samples: 0"),
        ("--metric", {"metric": "f1"}, "one of accuracy, loss"),
        ("--mode", {"mode": "up"}, "one of max, min"),
        ("--scheduler", {"scheduler": "pbt"}, "one of asha, fifo"),
        ("--concurrency", {"concurrency": -1}, "--concurrency: -1"),
    ],
)
def test_bad_sweep_settings_name_the_flag(field, kwargs, says):
    args = {"samples": 8, "metric": "accuracy", "mode": "max", "scheduler": "asha", "concurrency": 0, **kwargs}
    with pytest.raises(ValueError, match=field) as err:
        parse_sweep(["task.train.lr=uniform:0.01:0.1"], **args)
    assert says in str(err.value)


def test_a_path_swept_twice_or_none_at_all_is_refused():
    with pytest.raises(ValueError, match="task.train.lr: swept twice"):
        parse_sweep(["task.train.lr=uniform:0.01:0.1", "task.train.lr=grid:0.1"], 8, "accuracy", "max", "asha", 0)
    with pytest.raises(ValueError, match="at least one parameter"):
        parse_sweep([], 8, "accuracy", "max", "asha", 0)


def test_apply_values_sets_dotted_paths_without_touching_the_original():
    doc = example()
    out = apply_values(doc, {"task.train.lr": 0.05, "faultTolerance.maxNodeRestarts": 1})
    assert out["spec"]["task"]["train"]["lr"] == 0.05 and out["spec"]["faultTolerance"] == {"maxNodeRestarts": 1}
    assert doc["spec"]["task"]["train"]["lr"] == 0.1 and "faultTolerance" not in doc["spec"]


@pytest.mark.parametrize(
    "param, says",
    [
        ("task.train.lrr=uniform:0.01:0.1", "lrr"),  # no such field
        ("task.train.lr=uniform:-1:0.1", "spec.task.train.lr"),  # a bound the spec refuses
        ("algorithm.name=choice:fedavg,fedsgd", "spec.algorithm.name"),  # one choice the spec refuses
        ("rounds.count=grid:1,2", "spec.rounds"),  # a path through a value, not a section
    ],
)
def test_a_value_the_spec_refuses_fails_before_any_trial_naming_the_param(param, says):
    sweep = parse_sweep([param], 8, "accuracy", "max", "asha", 0)
    with pytest.raises(ValueError) as err:
        check_sweep(example(), sweep)
    assert f"--param {param.split('=')[0]}" in str(err.value) and says in str(err.value)


def test_spec_sweep_names_its_fields():
    sweep = sweep_from_spec({"params": ["task.train.lr=loguniform:1e-3:0.3"], "samples": 4})
    assert sweep.trials == 4 and sweep.scheduler == "asha"
    with pytest.raises(ValueError, match=r"spec.sweep.samples: 'many'"):
        sweep_from_spec({"params": ["task.train.lr=uniform:0.1:0.2"], "samples": "many"})
    with pytest.raises(ValueError, match=r"spec.sweep: unknown field\(s\) sample"):
        sweep_from_spec({"params": ["task.train.lr=uniform:0.1:0.2"], "sample": 4})
    with pytest.raises(ValueError, match=r"spec.sweep.params\[0\] 'lr'"):
        sweep_from_spec({"params": ["lr"]})


def test_trials_share_the_slots_and_never_ask_for_more_than_there_are():
    spec = parse_spec({"nodes": {"count": 8, "resources": {"cpu": 1}}})
    assert trial_plan(spec, [{"CPU": 2}], trials=8, concurrency=0).slots == 1  # two trials at once
    assert trial_plan(spec, [{"CPU": 16}], trials=8, concurrency=2).slots == 8  # capped by the node count
    assert trial_plan(spec, [{"CPU": 16}], trials=8, concurrency=4).slots == 4
    assert trial_plan(spec, [{"CPU": 2}], trials=8, concurrency=8).slots == 1  # Tune queues the rest
    assert trial_plan(spec, [{"CPU": 16}], trials=1, concurrency=0).slots == 8
