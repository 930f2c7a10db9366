"""The chart's tenant policy at admission, on the real API server: the ValidatingAdmissionPolicy it installs
refuses what red_api.policy refuses (the operator's check), each case applied with a server-side dry run."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from red_api.policy import ENV, RULES, TenantPolicy, problems
from red_api.spec import parse_manifest
from tests.helm.conftest import Helm
from tests.operator.conftest import crd  # noqa: F401 - the fixture
from tests.unit.test_tenant_policy import ALLOWED, REFUSED, STRICT

pytestmark = pytest.mark.cluster

VALUES = {
    "imagePrefixes": list(STRICT.imagePrefixes),
    "podAnnotationKeys": list(STRICT.podAnnotationKeys),
    "serviceAccountAnnotationKeys": list(STRICT.serviceAccountAnnotationKeys),
    "priorityClasses": list(STRICT.priorityClasses),
    "tolerations": STRICT.tolerations,
}


def federation(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    spec = json.loads(json.dumps(spec))
    spec.setdefault("ray", {}).setdefault("image", "registry.corp/red-runtime:0.1.0")
    return {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": name}, "spec": spec}


def dry_run(kube, namespace: str, doc: dict[str, Any]):
    return kube.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(doc), namespace=namespace, check=False)


def test_the_admission_policy_refuses_what_the_operator_refuses(kube, helm: Helm, crd, namespace: str):  # noqa: F811
    sets = [f"--set-json=tenantPolicy.{k}={json.dumps(v)}" for k, v in VALUES.items()]
    objs = helm.template("--namespace", namespace, "--set", f"watchNamespaces={{{namespace}}}", *sets)
    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert TenantPolicy.from_env({ENV: env[ENV]}) == STRICT, "the operator reads the policy the chart was given"
    admission = [o for o in objs if o["kind"].startswith("ValidatingAdmissionPolicy")]
    assert sorted(o["kind"] for o in admission) == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    assert len(admission[0]["spec"]["validations"]) == len(RULES)
    kube.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in admission))
    try:
        # The API server compiles and starts enforcing a new policy within seconds.
        refused_first = federation("probe", REFUSED[0][0])
        deadline = time.monotonic() + 90
        while dry_run(kube, namespace, refused_first).returncode == 0:
            assert time.monotonic() < deadline, "the admission policy never took effect"
            time.sleep(1)
        cases = [("allowed", ALLOWED), *[(field, spec) for spec, field in REFUSED]]
        for i, (label, spec) in enumerate(cases):
            doc = federation(f"case-{i}", spec)
            expected = problems(parse_manifest({**doc, "metadata": {"name": "f"}}).spec, STRICT)
            got = dry_run(kube, namespace, doc)
            if not expected:
                assert got.returncode == 0, f"{label}: the operator allows it, admission refused:\n{got.stderr}"
                continue
            assert got.returncode != 0, f"{label}: the operator refuses it ({expected}), admission allowed it"
            said = [r.message for r in RULES if r.message in got.stderr]
            assert said, f"{label}: refused without naming the field:\n{got.stderr}"
            assert "ValidatingAdmissionPolicy" in got.stderr and "denied request" in got.stderr, got.stderr
        # A Federation with no spec at all (every field defaulted) runs the default image: refused for that,
        # by the rule's message, not by an error evaluating a path that is not there.
        bare = {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": "bare"}}
        assert problems(parse_manifest(bare).spec, STRICT), "the default image is not in the strict list"
        got = dry_run(kube, namespace, bare)
        assert got.returncode != 0 and RULES[0].message in got.stderr, got.stderr
    finally:
        for obj in admission:
            kube.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found", check=False)
