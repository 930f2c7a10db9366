"""The chart's tenant policy in Python: what the operator enforces (tests/helm/test_tenant_policy.py checks
that the admission policy the chart installs says the same, on the real API server)."""

from __future__ import annotations

import json

import pytest

from red_api.policy import ENV, TenantPolicy, problems
from red_api.spec import parse_manifest
from tests.operator.test_reconcile import FakeRest, federation, settle

pytestmark = pytest.mark.unit

STRICT = TenantPolicy(
    imagePrefixes=("registry.corp/",),
    podAnnotationKeys=("prometheus.io/",),
    serviceAccountAnnotationKeys=(),
    priorityClasses=("team-batch",),
    tolerations="gpu",
)
ALLOWED = {
    "ray": {
        "image": "registry.corp/red-runtime:0.1.0",
        "head": {"annotations": {"prometheus.io/scrape": "true"}, "priorityClassName": "team-batch"},
        "workerGroups": [{"name": "gpu", "gpu": 1, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}],
    }
}
# One tenant's spec per thing the policy refuses, and the field its problem names.
REFUSED = [
    ({"ray": {"image": "docker.io/evil/miner:latest"}}, "spec.ray.image"),
    ({"ray": {"runtimeEnv": {"image_uri": "docker.io/evil/miner:latest"}}}, "spec.ray.runtimeEnv.image_uri"),
    ({"ray": {"head": {"annotations": {"sidecar.istio.io/inject": "false"}}}}, "spec.ray.head.annotations"),
    (
        {"ray": {"head": {"serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/admin"}}}},
        "spec.ray.head.serviceAccountAnnotations",
    ),
    (
        {"ray": {"workerGroups": [{"name": "w", "priorityClassName": "system-node-critical"}]}},
        "spec.ray.workerGroups[0]",
    ),
    ({"ray": {"head": {"tolerations": [{"operator": "Exists"}]}}}, "spec.ray.head.tolerations[0]"),
]


def spec_of(overrides: dict, image: bool = True) -> object:
    spec = json.loads(json.dumps(overrides))
    if image:
        spec.setdefault("ray", {}).setdefault("image", "registry.corp/red-runtime:0.1.0")
    doc = {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": "f"}, "spec": spec}
    return parse_manifest(doc).spec


def test_the_default_policy_allows_everything_the_api_allows():
    for spec, _ in REFUSED:
        assert problems(spec_of(spec, image=False), TenantPolicy()) == []


def test_a_strict_policy_allows_what_it_lists():
    assert problems(spec_of(ALLOWED), STRICT) == []


@pytest.mark.parametrize("spec, field", REFUSED, ids=[f for _, f in REFUSED])
def test_a_strict_policy_refuses_naming_the_field(spec, field):
    found = problems(spec_of(spec), STRICT)
    assert found and all(p.startswith(field) for p in found), found
    assert "this cluster" in found[0] and ("does not allow" in found[0] or "allows" in found[0])


def test_the_default_image_is_held_to_the_policy_too():
    """A Federation that names no image runs the default one: allowed only if the platform team lists it."""
    found = problems(spec_of({}, image=False), STRICT)
    assert found and found[0].startswith("spec.ray.image: 'ghcr.io/red-dev/red-runtime")


def test_the_policy_comes_from_the_charts_json_and_a_bad_one_is_refused_at_once():
    chart = {"imagePrefixes": ["registry.corp/"], "podAnnotationKeys": ["prometheus.io/"],
             "serviceAccountAnnotationKeys": [], "priorityClasses": ["team-batch"], "tolerations": "gpu"}  # fmt: skip
    assert TenantPolicy.from_env({ENV: json.dumps(chart)}) == STRICT
    assert TenantPolicy.from_env({}) == TenantPolicy()
    for bad, says in [
        ({"imagePrefix": ["x"]}, "tenantPolicy: imagePrefix: unknown"),
        ({"imagePrefixes": "registry.corp/"}, "tenantPolicy.imagePrefixes: 'registry.corp/': must be a list"),
        ({"tolerations": "all"}, "tenantPolicy.tolerations: 'all': must be one of any, gpu"),
    ]:
        with pytest.raises(ValueError, match=says):
            TenantPolicy.from_env({ENV: json.dumps(bad)})
    with pytest.raises(ValueError, match=f"{ENV}: not JSON"):
        TenantPolicy.from_env({ENV: "{imagePrefixes"})


def test_the_operator_ends_a_federation_the_policy_refuses_invalid_and_creates_nothing():
    """One that got in before the policy (or past its admission check): InvalidSpec, the field named."""
    rest = FakeRest()
    body = federation({"rounds": 3, "ray": {"image": "docker.io/evil/miner:latest"}})
    from red_operator.reconcile import reconcile

    status = reconcile(body, rest, policy=STRICT).status
    assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec", status
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["message"].startswith("spec.ray.image: 'docker.io/evil/miner:latest': is not an image this cluster")
    assert rest.names("RayCluster") == rest.names("RayJob") == []
    # The same Federation under the default policy runs.
    assert settle(FakeRest(), body)["phase"] != "Failed"
