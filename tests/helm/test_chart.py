"""The chart as helm renders it: lint, typos refused by values.schema.json, the objects and their settings,
RBAC that covers what the operator grants, and a CRD identical to crds/federation.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from red_api.spec import parse_manifest
from red_operator.builders import driver_rules
from tests.helm.conftest import CHART, Helm, as_list, find, sets

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def test_helm_lint_passes(helm: Helm):
    helm.run("lint", "--strict", CHART)
    helm.run(
        "lint", "--strict", CHART, "--set", "watchNamespaces={a,b}", "--set", "metrics.serviceMonitor.enabled=true"
    )


@pytest.mark.parametrize(
    ("typo", "key"),
    [
        ("replicaCount=2", "replicaCount"),
        ("imag.tag=x", "imag"),
        ("image.tga=x", "tga"),
        ("metrics.serviceMonitor.enabeld=true", "enabeld"),
        ("crds.instal=false", "instal"),
    ],
)
def test_a_values_typo_is_refused(helm: Helm, typo: str, key: str):
    for command in ("template", "install"):
        args = [command, "red", CHART, "--set", typo] + (["--dry-run=client"] if command == "install" else [])
        proc = helm.run(*args, check=False)
        assert proc.returncode != 0 and key in proc.stderr and "additional properties" in proc.stderr, proc.stderr


def test_the_rendered_chart_is_accepted_by_the_api_server(kube, helm: Helm, namespace: str):
    """Both modes, server-side dry run: schemas, RBAC escalation checks and admission all run, nothing stays."""
    for extra in ([], ["--set", f"watchNamespaces={{{namespace}}}"]):
        objs = helm.template("--namespace", namespace, *extra)
        kube.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-", input=as_list(objs))


def deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = find(objs, "Deployment")
    return dep


def test_the_deployment_runs_one_hardened_operator(helm: Helm):
    objs = helm.template("--namespace", "red-system")
    dep = deployment(objs)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/red-dev/red-operator:0.1.0"
    assert container["command"] == ["python3", "-m", "red_operator"]  # the image has no runtime, so no `red`
    assert container["args"] == ["--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=8000"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"healthz": 8080, "metrics": 8000}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    (service,) = find(objs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8000, "targetPort": "metrics"}]
    assert service["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert not find(objs, "ServiceMonitor")


def test_values_reach_the_deployment(helm: Helm):
    objs = helm.template(
        *sets(
            "watchNamespaces={team-a,team-b}",
            "verbose=true",
            "image.tag=0.2.0-rc.1",
            "metrics.enabled=false",
            "priorityClassName=system-cluster-critical",
            "nodeSelector.pool=ops",
            "tolerations[0].operator=Exists",
            "resources.limits.memory=1Gi",
            "env[0].name=RED_RECONCILE_INTERVAL",
        ),
        "--set-string",
        "env[0].value=30",
    )
    pod = deployment(objs)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/red-dev/red-operator:0.2.0-rc.1"
    assert container["args"][1:] == ["--metrics-port=0", "--namespace=team-a", "--namespace=team-b", "--verbose"]
    assert [p["name"] for p in container["ports"]] == ["healthz"]
    assert container["resources"]["limits"] == {"memory": "1Gi"}
    assert container["env"][1:] == [{"name": "RED_RECONCILE_INTERVAL", "value": "30"}]
    assert container["env"][0]["name"] == "RED_TENANT_POLICY"  # tests/helm/test_tenant_policy.py
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"pool": "ops"} and pod["tolerations"] == [{"operator": "Exists"}]
    assert not find(objs, "Service")


def test_a_servicemonitor_only_when_asked(helm: Helm):
    objs = helm.template(
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.labels.release=prom"
    )
    (monitor,) = find(objs, "ServiceMonitor")
    (service,) = find(objs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s"}]
    objs = helm.template("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.enabled=false")
    assert not find(objs, "ServiceMonitor")


def allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] and not r.get("resourceNames")
        for r in rules
    )


def driver_grants() -> list[tuple[str, str, str]]:
    fed = parse_manifest(yaml.safe_load((ROOT / "manifests" / "examples" / "digits-star.yaml").read_text()))
    return [
        (g, r, v)
        for rule in driver_rules(fed)
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    ]


def test_cluster_wide_rbac_holds_what_the_operator_grants_and_no_more(helm: Helm):
    """RBAC lets the operator create a driver Role only with verbs it holds itself."""
    objs = helm.template("--namespace", "red-system")
    (role,) = find(objs, "ClusterRole")
    (binding,) = find(objs, "ClusterRoleBinding")
    (account,) = find(objs, "ServiceAccount")
    assert not find(objs, "Role") and not find(objs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "red-system"}
    ]
    for grant in driver_grants():
        assert allows(role["rules"], *grant), grant
    assert allows(role["rules"], "apiextensions.k8s.io", "customresourcedefinitions", "watch")
    verbs = {v for r in role["rules"] for v in r["verbs"]}
    resources = {x for r in role["rules"] for x in r["resources"]}
    assert "*" not in verbs | resources and not verbs & {"escalate", "bind", "impersonate", "deletecollection"}
    assert not resources & {"secrets", "namespaces", "clusterroles", "clusterrolebindings"}, "no rights on Secrets"
    # Pods: list alone (a Ray Pod that waits for the storage Secret); never get, watch, create or exec.
    assert {v for r in role["rules"] if "pods" in r["resources"] for v in r["verbs"]} == {"list"}


def test_namespaced_rbac_is_one_role_per_watched_namespace(helm: Helm):
    objs = helm.template("--namespace", "red-system", "--set", "watchNamespaces={team-a,team-b}")
    roles = find(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in find(objs, "RoleBinding")) == ["team-a", "team-b"]
    for role in roles:
        for grant in driver_grants():
            assert allows(role["rules"], *grant), grant
    # Cluster-wide it may only list and watch what kopf scans: CRDs and Namespaces.
    (discovery,) = find(objs, "ClusterRole")
    assert {(x, v) for r in discovery["rules"] for x in r["resources"] for v in r["verbs"]} == {
        (x, v) for x in ("customresourcedefinitions", "namespaces") for v in ("list", "watch")
    }


KEEP = "  annotations:\n    helm.sh/resource-policy: keep\n"


def test_the_crd_is_crds_federation_yaml_kept_on_uninstall(helm: Helm):
    """Byte for byte, plus the keep annotation: the CRD that Helm users get is the one kubectl users apply."""
    source = (ROOT / "crds" / "federation.yaml").read_text()

    def rendered(*values: str) -> str:
        out = helm.run("template", "red", CHART, "--show-only", "templates/crd.yaml", *values).stdout
        return out.split("\n", 2)[2]  # after "---" and "# Source: ..."

    kept = rendered()
    assert yaml.safe_load(kept)["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert kept.replace(KEEP, "", 1) == source
    assert rendered("--set", "crds.keep=false") == source
    assert not find(helm.template("--set", "crds.install=false"), "CustomResourceDefinition")


def test_notes_say_what_to_do_next(helm: Helm):
    values = ["--set", "watchNamespaces={team-a}", "--set", "crds.install=false"]
    notes = helm.run("install", "red", CHART, "--dry-run=client", *values).stdout.partition("NOTES:")[2]
    assert "kubectl apply -n team-a -f manifests/examples/digits-star.yaml" in notes
    assert "kubectl get fed -n team-a" in notes
    assert "kubectl apply --server-side -f crds/federation.yaml" in notes


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, x, v) for r in rules for g in r["apiGroups"] for x in r["resources"] for v in r["verbs"]}


# What operator/red_operator and kopf call, verb by verb (see the chart's _helpers.tpl).
OPERATOR_GRANTS = (
    {("red.dev", "federations", v) for v in ("get", "list", "watch", "patch")}
    | {("red.dev", "federations/status", v) for v in ("get", "patch")}
    | {("red.dev", "federations/finalizers", "update")}
    | {("ray.io", x, v) for x in ("rayclusters", "rayjobs") for v in ("get", "list", "watch", "create", "delete")}
    # patch: a RayService follows spec.serve in place (a new serveConfigV2 retrains nothing, restarts no Pod)
    | {("ray.io", "rayservices", v) for v in ("get", "list", "watch", "create", "patch", "delete")}
    # patch: the spec's serviceAccountAnnotations; delete: a worker group's account no group asks for any more
    | {("", "serviceaccounts", v) for v in ("get", "list", "watch", "create", "patch", "delete")}
    | {("rbac.authorization.k8s.io", "roles", v) for v in ("get", "list", "watch", "create", "patch")}
    | {("rbac.authorization.k8s.io", "rolebindings", v) for v in ("get", "list", "watch", "create", "patch", "delete")}
    # the Federation's claim (GC deletes an unretained one); its Ray Pods, to see one wait for the storage Secret
    | {("", "persistentvolumeclaims", v) for v in ("get", "list", "watch", "create")}
    | {("", "pods", "list")}
    | {("", "events", "create")}
    # a queued Federation's Workload, listed by its RayCluster's uid: why Kueue holds it
    | {("kueue.x-k8s.io", "workloads", "list")}
)


def test_the_operator_holds_exactly_the_grants_it_uses(helm: Helm):
    """blockOwnerDeletion on the children needs update on federations/finalizers (OpenShift's
    OwnerReferencesPermissionEnforcement); a grant the operator never uses is not held."""
    (cluster_role,) = find(helm.template("--namespace", "red-system"), "ClusterRole")
    crd_watch = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
    assert grants(cluster_role["rules"]) == OPERATOR_GRANTS | crd_watch
    for role in find(helm.template("--namespace", "red-system", "--set", "watchNamespaces={team-a}"), "Role"):
        assert grants(role["rules"]) == OPERATOR_GRANTS
