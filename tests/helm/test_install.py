"""helm install, upgrade and uninstall against the real API server, and the chart's RBAC put to work.

kwok fakes the Pods: the operator's Pod becomes Running and Ready without running anything. So the test that
reconciles a Federation runs `red operator` here, as a subprocess authenticated as the chart's
ServiceAccount (a token from `kubectl create token`): every call it makes is authorized by the chart's RBAC
alone, as it would be in the Pod.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Kube
from tests.helm.conftest import CHART, Helm, sets
from tests.operator.conftest import Operator

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CRD = "federations.red.dev"
# kwok makes the operator's Pod Ready at once: --wait proves the rollout completes.
WAIT = ("--wait", "--timeout", "120s")


def get(kube, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    proc = kube.kubectl("get", kind, name, "-o", "json", namespace=namespace, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def can_i(kube, namespace: str, account: str, *args: str) -> bool:
    who = f"--as=system:serviceaccount:{namespace}:{account}"
    return kube.kubectl("auth", "can-i", *args, who, check=False).stdout.strip() == "yes"


def test_install_creates_the_operator_and_uninstall_keeps_the_crd(kube, helm: Helm, namespace: str, release: str):
    """The default install (cluster-wide, CRD included). The CRD exists already, shared with the other tests:
    --take-ownership adopts it, the content is byte-identical, and its keep policy leaves it on uninstall."""
    helm.run("install", release, CHART, "--namespace", namespace, "--take-ownership", *WAIT)
    name = f"{release}-red-operator"
    dep = get(kube, "deployment", name, namespace)
    assert dep["status"]["readyReplicas"] == 1
    pods = kube.kubectl_json("get", "pods", "-l", f"app.kubernetes.io/instance={release}", namespace=namespace)
    assert [p["spec"]["serviceAccountName"] for p in pods["items"]] == [name]
    service = get(kube, "service", f"{name}-metrics", namespace)
    assert service["spec"]["selector"].items() <= pods["items"][0]["metadata"]["labels"].items()
    crd = get(kube, "crd", CRD)
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert can_i(kube, namespace, name, "create", "rayjobs.ray.io", "--namespace", "default")
    assert can_i(kube, namespace, name, "patch", "federations.red.dev/status", "--subresource=status", "-A")
    # No rights on Secrets: a missing storage Secret is seen on the Ray Pod the kubelet cannot start.
    for verb in ("get", "list", "watch"):
        assert not can_i(kube, namespace, name, verb, "secrets", "--namespace", namespace), verb
    assert can_i(kube, namespace, name, "list", "pods", "--namespace", "default")
    assert not can_i(kube, namespace, name, "get", "pods/exec", "--namespace", "default")
    assert not can_i(kube, namespace, name, "delete", "federations.red.dev", "-A")

    out = helm.run("uninstall", release, "--namespace", namespace, "--wait").stdout
    assert "kept due to the resource policy" in out
    assert get(kube, "deployment", name, namespace) is None
    assert get(kube, "clusterrole", name) is None and get(kube, "clusterrolebinding", name) is None
    assert get(kube, "crd", CRD)["metadata"]["uid"] == crd["metadata"]["uid"]


def test_upgrade_to_a_new_chart_and_values_updates_the_deployment(
    kube, helm: Helm, namespace: str, release: str, tmp_path: Path
):
    values = sets("crds.install=false", f"watchNamespaces={{{namespace}}}")
    helm.run("install", release, CHART, "--namespace", namespace, *values, *WAIT)
    name = f"{release}-red-operator"
    before = get(kube, "deployment", name, namespace)

    chart = tmp_path / "red-operator"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    (chart / "Chart.yaml").write_text(yaml.safe_dump({**meta, "version": "0.1.1", "appVersion": "0.1.1"}))
    changed = sets("verbose=true", "resources.limits.memory=1Gi")
    helm.run("upgrade", release, chart, "--namespace", namespace, *values, *changed, *WAIT)

    after = get(kube, "deployment", name, namespace)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert after["metadata"]["labels"]["helm.sh/chart"] == "red-operator-0.1.1"
    (container,) = after["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/red-dev/red-operator:0.1.1"
    assert container["args"][-1] == "--verbose"
    assert container["resources"]["limits"] == {"memory": "1Gi"}
    assert after["status"]["readyReplicas"] == 1 and after["status"]["updatedReplicas"] == 1
    history = json.loads(helm.run("history", release, "--namespace", namespace, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]


def service_account_kubeconfig(kube, namespace: str, account: str, path: Path) -> Path:
    """The test cluster's server and CA, and a token of `account`: nothing of the admin's identity."""
    token = kube.kubectl("create", "token", account, "--duration=1h", namespace=namespace).stdout.strip()
    cluster = kube.kubectl_json("config", "view", "--raw", "--minify", "--flatten")["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": account,
    }
    path.write_text(json.dumps(config))
    return path


def test_the_operator_reconciles_with_only_the_charts_rbac(
    kube, crd, helm: Helm, namespace: str, release: str, tmp_path: Path
):
    values = sets("crds.install=false", f"watchNamespaces={{{namespace}}}")
    helm.run("install", release, CHART, "--namespace", namespace, *values, *WAIT)
    account = f"{release}-red-operator"
    config = service_account_kubeconfig(kube, namespace, account, tmp_path / "operator.kubeconfig")
    operator = Operator(Kube(str(config)), namespace, tmp_path)
    operator.start()
    try:
        manifest = yaml.safe_load((ROOT / "manifests" / "examples" / "digits-star.yaml").read_text())
        manifest["spec"]["ray"] = {"head": {"cpu": "1", "memory": "1Gi"}, "submissionMode": "HTTPMode"}
        kube.kubectl("apply", "-f", "-", input=json.dumps(manifest), namespace=namespace)

        def reconciled() -> dict[str, Any] | None:
            status = (get(kube, "federation", "digits-star", namespace) or {}).get("status") or {}
            children = [
                get(kube, k, status.get(f), namespace)
                for k, f in (("raycluster", "rayClusterName"), ("rayjob", "rayJobName"))
            ]
            return status if status.get("phase") and all(children) else None

        status = kube.wait_for(
            reconciled, timeout=90, message=lambda: f"a reconciled Federation\n{operator.log()[-3000:]}"
        )
        assert status["phase"] in ("Pending", "Provisioning", "Running")
        assert get(kube, "rolebinding", "digits-star-driver", namespace), "the driver's RoleBinding (RBAC escalation)"
        kube.wait_for(
            lambda: kube.kubectl_json(
                "get", "events", "--field-selector", "involvedObject.name=digits-star", namespace=namespace
            )["items"],
            timeout=30,
            message="the operator's Events",
        )
        # While the operator runs: it removes kopf's finalizer, which would otherwise hold the namespace.
        kube.kubectl("delete", "federation", "digits-star", "--timeout=60s", namespace=namespace)
    finally:
        operator.stop()
    log = operator.log()
    for refusal in ("Forbidden", "Not enough permissions", "Failed to post an event"):
        assert refusal not in log, log[-5000:]
