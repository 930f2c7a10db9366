"""The operator's few REST calls, on plain dicts.

The typed kubernetes client deserialises every response into models, which costs more CPU and memory than
the rest of a reconcile; the children are built as dicts anyway, so they travel as JSON both ways.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from kubernetes.client import ApiClient, ApiException

from red_api.names import API_GROUP

FEDERATIONS = f"/apis/{API_GROUP}/v1alpha1/namespaces/{{namespace}}/federations"
PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
    "PersistentVolumeClaim": "/api/v1/namespaces/{namespace}/persistentvolumeclaims",
    "Pod": "/api/v1/namespaces/{namespace}/pods",
    "RayCluster": "/apis/ray.io/v1/namespaces/{namespace}/rayclusters",
    "RayJob": "/apis/ray.io/v1/namespaces/{namespace}/rayjobs",
    "RayService": "/apis/ray.io/v1/namespaces/{namespace}/rayservices",
    "Workload": "/apis/kueue.x-k8s.io/v1beta2/namespaces/{namespace}/workloads",
    "Federation": FEDERATIONS,
    "Event": "/api/v1/namespaces/{namespace}/events",
}
PARTIAL_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
TIMEOUT_S = float(os.environ.get("RED_OPERATOR_REQUEST_TIMEOUT", "30"))


def new_api_client(kubeconfig: str | None = None) -> ApiClient:
    """In-cluster credentials in a Pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    from kubernetes import config

    if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()
        return ApiClient()
    return config.new_client_from_config(config_file=kubeconfig or os.environ.get("KUBECONFIG"))


class Rest:
    """GET, LIST, CREATE, PATCH and DELETE of namespaced objects by kind; errors raise ApiException."""

    def __init__(self, api: ApiClient):
        self.api = api

    def _call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*params, _request_timeout=TIMEOUT_S)
        response.read()
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason, body=response.data.decode())
        return json.loads(response.data) if response.data else {}

    @staticmethod
    def path(kind: str, namespace: str, name: str = "", subresource: str = "") -> str:
        path = PATHS[kind].format(namespace=namespace)
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", self.path(kind, namespace, name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def exists(self, kind: str, namespace: str, name: str) -> bool:
        """Whether the object exists, read as metadata only (PartialObjectMetadata)."""
        try:
            self._call("GET", self.path(kind, namespace, name), accept=PARTIAL_METADATA)
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._call("GET", self.path(kind, namespace), [("labelSelector", selector)]).get("items") or []

    def create(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        """Create with Strict field validation (a field KubeRay does not know is an error, not dropped).

        Returns the object and whether this call made it. An object of that name that exists already is
        returned as found (None if it went in between), never adopted: the caller checks whose it is.
        """
        meta = obj["metadata"]
        try:
            return self.post(obj), True
        except ApiException as err:
            if err.status == 409:
                return self.get(obj["kind"], meta["namespace"], meta["name"]), False
            raise

    def post(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A plain create (Strict field validation); 409 raises."""
        path = self.path(obj["kind"], obj["metadata"]["namespace"])
        return self._call("POST", path, [("fieldValidation", "Strict")], obj)

    def patch(self, kind: str, namespace: str, name: str, body: Mapping[str, Any], subresource: str = "") -> dict:
        """A JSON merge patch: only the keys in `body` change (a list, such as conditions, is replaced whole)."""
        path = self.path(kind, namespace, name, subresource)
        return self._call("PATCH", path, body=body, content_type="application/merge-patch+json")

    def json_patch(self, kind: str, namespace: str, name: str, ops: list[Mapping[str, Any]]) -> dict:
        """A JSON patch (RFC 6902): what must go goes (a merge patch keeps keys it does not name), and a `test`
        op makes the whole patch fail, touching nothing, if the object is not the one the caller checked."""
        path = self.path(kind, namespace, name)
        return self._call("PATCH", path, body=list(ops), content_type="application/json-patch+json")

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Background propagation: the call returns at once and GC removes what the object owns."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            self._call("DELETE", self.path(kind, namespace, name), body=body)
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise
