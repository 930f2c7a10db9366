"""The driver's few touches of the Kubernetes API: read its Federation, patch its status."""

from __future__ import annotations

import os
from typing import Any

from red_api.names import API_GROUP, PLURAL, VERSION
from red_api.spec import Federation, parse_manifest
from red_runtime import strict_json

# Set by the operator in the RayJob's runtime env (Ray passes a runtime env's env_vars to the entrypoint).
RAYJOB_ENV = "RED_RAYJOB"


class Superseded(Exception):
    """The Federation's status names another RayJob: this driver's attempt is no longer the current one."""


def driver_rayjob() -> str:
    """The name of the RayJob this driver runs as, "" outside one (`red run`, a driver started by hand)."""
    return os.environ.get(RAYJOB_ENV, "")


def api_client() -> Any:
    """In-cluster credentials (the head Pod's ServiceAccount) or the kubeconfig the environment names."""
    from kubernetes import client, config

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            config.load_incluster_config()
            return client.ApiClient()
        return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
    except config.ConfigException as err:  # one line for the user, not the client's traceback
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ValueError(f"no Kubernetes credentials in {where}: {err}; set KUBECONFIG or run in a Pod") from None


def parse_ref(ref: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"--federation: {ref!r}: expected NAMESPACE/NAME")
    return namespace, name


def read_federation(api: Any, namespace: str, name: str) -> tuple[Federation, dict]:
    from kubernetes import client

    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(API_GROUP, VERSION, namespace, PLURAL, name)
    return parse_manifest(obj, stored=True), obj


def status_patch(status: dict) -> tuple[Any, str]:
    """The patch body and its content type.

    A report tagged with its RayJob (driverRayJob) is a JSON Patch that first tests that the status still
    names that RayJob, so that the API server refuses, atomically, a late report of a superseded attempt.
    An untagged report is a JSON merge patch. Either way only the keys in `status` change, and a None
    removes its key (a null is dropped by the CRD's structural schema).
    """
    tag = status.get("driverRayJob")
    if not tag:
        return {"status": status}, "application/merge-patch+json"
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/status/rayJobName", "value": tag}]
    ops += [{"op": "add", "path": f"/status/{key}", "value": value} for key, value in status.items()]
    return ops, "application/json-patch+json"


def patch_status(api: Any, namespace: str, name: str, status: dict, timeout_s: float = 10.0) -> None:
    """Patch the status subresource (see status_patch); Superseded if another RayJob's driver owns it now."""
    from kubernetes import client

    body, content_type = status_patch(strict_json.finite(status))
    try:
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            API_GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body,
            _content_type=content_type,
            _request_timeout=timeout_s,
        )
    except client.ApiException as err:
        tag = status.get("driverRayJob")
        # A failed test op comes back as a bare 422 ("the server rejected our request"), indistinguishable
        # by its body from other invalid requests: the status itself says whether the RayJob moved on.
        if tag and err.status in (409, 422) and current_rayjob(api, namespace, name) != tag:
            raise Superseded(f"{namespace}/{name} no longer runs RayJob {tag}") from err
        raise


def current_rayjob(api: Any, namespace: str, name: str) -> str | None:
    from kubernetes import client

    obj = client.CustomObjectsApi(api).get_namespaced_custom_object_status(API_GROUP, VERSION, namespace, PLURAL, name)
    return (obj.get("status") or {}).get("rayJobName")
