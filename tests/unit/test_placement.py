"""Slot planning: how many node actors fit, and clear errors when none can."""

import pytest

from red_api.spec import parse_spec
from red_runtime.engine.placement import MANAGER_BUNDLE, plan_slots

pytestmark = pytest.mark.unit


def spec(count=8, cpu=1, gpu=0, strategy="PACK"):
    return parse_spec(
        {
            "nodes": {"count": count, "resources": {"cpu": cpu, "gpu": gpu}},
            "placement": {"strategy": strategy},
        }
    )


def test_slots_are_capped_by_cpus_and_by_nodes():
    assert plan_slots(spec(8, cpu=1), [{"CPU": 2}]).slots == 2
    assert plan_slots(spec(8, cpu=0.5), [{"CPU": 2}]).slots == 4
    assert plan_slots(spec(3, cpu=0.1), [{"CPU": 16}]).slots == 3
    assert plan_slots(spec(100, cpu=0.1), [{"CPU": 1}]).slots == 10  # float division must not lose one


def test_gpu_fractions_bound_slots():
    plan = plan_slots(spec(8, cpu=1, gpu=0.5), [{"CPU": 16, "GPU": 1}, {"CPU": 16, "GPU": 2}])
    assert plan.slots == 6
    assert plan.node_bundle == {"CPU": 1, "GPU": 0.5}
    assert plan.bundles[0] == MANAGER_BUNDLE and len(plan.bundles) == 7


def test_strict_pack_uses_one_machine():
    assert plan_slots(spec(8, strategy="STRICT_PACK"), [{"CPU": 2}, {"CPU": 3}]).slots == 3
    assert plan_slots(spec(8, strategy="STRICT_SPREAD"), [{"CPU": 2}, {"CPU": 3}, {"CPU": 4}]).slots == 2


def test_no_machine_can_hold_a_node_actor():
    with pytest.raises(ValueError, match=r"spec.nodes.resources: 4 cpu.*largest has CPU 2"):
        plan_slots(spec(cpu=4), [{"CPU": 2}])
    with pytest.raises(ValueError, match=r"spec.nodes.resources.gpu: 0.5: the Ray cluster has no GPU"):
        plan_slots(spec(gpu=0.5), [{"CPU": 8}])
    with pytest.raises(ValueError, match="spec.placement.strategy"):
        plan_slots(spec(strategy="STRICT_SPREAD"), [{"CPU": 8}])
