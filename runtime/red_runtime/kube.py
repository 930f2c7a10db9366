"""The driver's few touches of the Kubernetes API: read its Federation, patch its status."""

from __future__ import annotations

import os
from typing import Any

from red_runtime.spec import API_GROUP, Federation, parse_manifest

VERSION = "v1alpha1"
PLURAL = "federations"


def api_client() -> Any:
    """In-cluster credentials (the head Pod's ServiceAccount) or the kubeconfig the environment names."""
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))


def parse_ref(ref: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"--federation: {ref!r}: expected NAMESPACE/NAME")
    return namespace, name


def read_federation(api: Any, namespace: str, name: str) -> tuple[Federation, dict]:
    from kubernetes import client

    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(API_GROUP, VERSION, namespace, PLURAL, name)
    return parse_manifest(obj), obj


def patch_status(api: Any, namespace: str, name: str, status: dict, timeout_s: float = 10.0) -> None:
    """A JSON merge patch of the status subresource: only the keys in `status` change."""
    from kubernetes import client

    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        API_GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"status": status},
        _content_type="application/merge-patch+json",
        _request_timeout=timeout_s,
    )
