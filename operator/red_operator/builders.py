"""Pure builders: a Federation in, the manifests of its children out; no I/O, so unit tests need no cluster.

Every child gets a deterministic name, the `red.dev/federation` label and a controller owner reference to
its Federation (never the Federation's own labels: GitOps tools would then claim and prune the children).
The hashes that decide when a child is replaced cover what the user asked for, never how a release renders
it, so that upgrading the operator replaces nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import shlex
from collections.abc import Mapping
from typing import Any

import yaml

from red_api.kinds import quantity_value
from red_api.names import (
    API_VERSION,
    DRAIN_MODULE,
    DRIVER_MODULE,
    KIND,
    RAY_VERSION,
    SERVE_IMPORT_PATH,
    SERVE_REQUEST_TIMEOUT_S,
    STORAGE_MOUNT,
    STORAGE_VOLUME,
    artifacts_base,
    claim_name,
    owns_claim,
    run_location,
)
from red_api.pod import CONTAINER_SECURITY, POD_SECURITY
from red_api.spec import PRIORITY_LABEL, QUEUE_LABEL, Federation, FederationSpec, PodOptions, WorkerGroup

LABEL_FEDERATION = "red.dev/federation"
LABEL_SPEC_HASH = "red.dev/spec-hash"
LABEL_ATTEMPT = "red.dev/attempt"
LABEL_GENERATION = "red.dev/generation"
LABEL_RAY_HASH = "red.dev/ray-hash"
LABEL_SERVE_HASH = "red.dev/serve-hash"
MANAGED_BY = {"app.kubernetes.io/managed-by": "red-operator", "app.kubernetes.io/part-of": "red"}

RAY_API_VERSION = "ray.io/v1"
# KubeRay 1.6 refuses longer names (utils.MaxRayClusterNameLength, MaxRayJobNameLength), and both must be
# DNS-1035 labels: a letter first.
MAX_RAYCLUSTER_NAME = 53
MAX_RAYJOB_NAME = 47
# utils.MaxRayServiceNameLength: KubeRay names a RayService's RayCluster "<name>-xxxxx", itself at most 53.
MAX_RAYSERVICE_NAME = 47
# KubeRay's Serve Service of a RayService (utils.GenerateServeServiceName) and its port (utils.DefaultServingPort).
SERVE_SERVICE_SUFFIX = "-serve-svc"
SERVE_PORT = 8000
# The Ray Serve application that loads a run folder's model (SERVE_IMPORT_PATH).
SERVE_APP = "model"
HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"
GPU_RESOURCE = "nvidia.com/gpu"
RAY_PORTS = (("gcs-server", 6379), ("dashboard", 8265), ("client", 10001))
# The driver tags its status reports with its RayJob's name, read from this variable of its runtime env.
DRIVER_RAYJOB_ENV = "RED_RAYJOB"
# Seconds a stopped RayJob's driver gets between SIGTERM and SIGKILL: its stop grace period (10 s by default)
# plus a checkpoint and the last status patch, inside the 30 s a Pod gets after its own SIGTERM.
JOB_STOP_WAIT_S = 25
# The Ray Pods' preStop hook (red_runtime.apps.drain) waits that long for the driver to stop and checkpoint
# before the container is signalled; the Pods' grace period leaves Ray's own shutdown room after it.
POD_GRACE_S = JOB_STOP_WAIT_S + 15
# GKE's and EKS's GPU nodes carry this taint; a group with GPUs tolerates it unless it sets tolerations.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
# KubeRay's K8sJobMode submitter (utils.SubmitterContainerName) and the resources of its default template.
SUBMITTER_CONTAINER = "ray-job-submitter"
SUBMITTER_RESOURCES = {"requests": {"cpu": "500m", "memory": "200Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
# On a ServiceAccount: the annotation keys that came from the spec, so that one removed there goes here too,
# while annotations that others add (a cloud's webhook, a person) stay.
ANNOTATION_KEYS = "red.dev/spec-annotations"
# On a claim kept after its Federation (storage.retain), which has no owner reference: the uid it was made for.
ANNOTATION_CLAIM_OF = "red.dev/claim-of"


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _bounded(name: str, suffix: str, limit: int) -> str:
    """`name + suffix` as a DNS-1035 label within `limit`; a long name is cut and keeps a hash of itself."""
    base = name if name[:1].isalpha() else f"r{name}"
    if len(base) + len(suffix) <= limit:
        return base + suffix
    keep = limit - len(suffix) - 5
    return f"{base[:keep].rstrip('-')}-{_digest(name, 4)}{suffix}"


def raycluster_name(fed_name: str) -> str:
    return _bounded(fed_name, "-ray", MAX_RAYCLUSTER_NAME)


def rayjob_name(fed_name: str, spec_hash: str, attempt: int) -> str:
    """One name per (spec, attempt): KubeRay ignores edits to a RayJob, so a new spec needs a new RayJob."""
    return _bounded(fed_name, f"-{spec_hash[:5]}-{attempt}", MAX_RAYJOB_NAME)


def rayservice_name(fed_name: str) -> str:
    return _bounded(fed_name, "-serve", MAX_RAYSERVICE_NAME)


def serve_url(fed: Federation) -> str:
    """The in-cluster address of the RayService's Serve endpoint, as status.serveURL gives it."""
    return f"http://{rayservice_name(fed.name)}{SERVE_SERVICE_SUFFIX}.{fed.namespace}.svc:{SERVE_PORT}"


def driver_name(fed_name: str) -> str:
    """The ServiceAccount, Role and RoleBinding of the driver share this name."""
    return f"{fed_name}-driver"


def worker_account_name(fed_name: str, group: str) -> str:
    """The ServiceAccount of a worker group that asks for serviceAccountAnnotations."""
    return f"{fed_name}-worker-{group}"


def intent(value: Any) -> Any:
    """What the user asked for: a dataclass as the fields that differ from their defaults, at every depth.

    A release that adds a field with a default, or renders the children differently, leaves it unchanged.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            if item != default:
                out[f.name] = intent(item)
        return out
    if isinstance(value, list | tuple):
        return [intent(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): intent(v) for k, v in value.items()}
    return value


def _hash(data: Any) -> str:
    return _digest(json.dumps(data, sort_keys=True, default=str), 10)


def spec_hash(spec: FederationSpec) -> str:
    """What the driver runs: the spec as the user wrote it, less the switches that only start or stop compute
    and spec.serve (serving a finished model must not train it again)."""
    data = intent(spec)
    data.pop("suspend", None)
    data.pop("serve", None)
    data.pop("priorityClassName", None)
    ray = data.pop("ray", {})
    ray.pop("keepCluster", None)
    if ray:
        data["ray"] = ray
    return _hash(data)


def serve_hash(spec: FederationSpec) -> str:
    """What shapes the RayService: spec.serve, the Pods of spec.ray (less the RayJob's switches) and the
    storage the model is read from."""
    ray = intent(spec.ray)
    for job_only in ("keepCluster", "submissionMode"):
        ray.pop(job_only, None)
    data = {"serve": intent(spec.serve), "ray": ray, "image": spec.ray.image, "storage": intent(spec.storage)}
    return _hash(data)


def ray_hash(spec: FederationSpec) -> str:
    """What shapes the RayCluster's Pods: spec.ray less what only the RayJob reads, and the image in effect."""
    data = intent(spec.ray)
    for job_only in ("keepCluster", "submissionMode", "runtimeEnv"):
        data.pop(job_only, None)
    data["image"] = spec.ray.image
    return _hash(data)


def cpu_cores(quantity: str | int | float) -> float:
    """A Kubernetes CPU or memory quantity as a number ("500m" -> 0.5, "2" -> 2.0, "1Gi" -> 1073741824)."""
    value = quantity_value(quantity.strip() if isinstance(quantity, str) else quantity)
    if value is None:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    return float(value)


def ray_cpus(quantity: str | int | float) -> str:
    """Ray's --num-cpus is whole: round up, as KubeRay does when it derives num-cpus from the container."""
    return str(max(0, math.ceil(cpu_cores(quantity) - 1e-9)))


def labels(fed: Federation) -> dict[str, str]:
    return {LABEL_FEDERATION: fed.name, **MANAGED_BY}


def controller_uid(obj: Mapping[str, Any] | None) -> str:
    """The uid of the object's controller (its owner reference with controller: true), "" if none."""
    for ref in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or "")
    return ""


def controller_of(obj: Mapping[str, Any] | None) -> str:
    """Who controls the object, for a message: "Kind/name", or "nothing"."""
    for ref in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return f"{ref.get('kind')}/{ref.get('name')}"
    return "nothing"


def owned(obj: Mapping[str, Any] | None, fed_uid: str) -> bool:
    """As controller-runtime's SetControllerReference: a child is ours only if its controller is this uid."""
    return bool(fed_uid) and controller_uid(obj) == fed_uid


def owner_reference(fed: Federation) -> dict[str, Any]:
    """Controller reference: kube-controller-manager's GC deletes the child with its Federation."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": fed.name,
        "uid": fed.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(fed: Federation, name: str, extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": fed.namespace,
        "labels": {**labels(fed), **(extra_labels or {})},
        "ownerReferences": [owner_reference(fed)],
    }


def _container(
    name: str, image: str, cpu: str, memory: str, gpu: int, fed: Federation, pod: PodOptions
) -> dict[str, Any]:
    resources: dict[str, Any] = {"cpu": str(cpu), "memory": str(memory)}
    if gpu:
        resources[GPU_RESOURCE] = str(gpu)
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "env": [{"name": "RED_FEDERATION", "value": f"{fed.namespace}/{fed.name}"}],
        "securityContext": copy.deepcopy(CONTAINER_SECURITY),
    }
    if pod.volumeMounts:
        container["volumeMounts"] = [dict(m) for m in pod.volumeMounts]
    if name == HEAD_CONTAINER:
        container["ports"] = [{"name": port_name, "containerPort": port} for port_name, port in RAY_PORTS]
        # Ray's job supervisor (on the head) sends a stopped job's driver SIGTERM and, by default, SIGKILL 3 s
        # later: too soon for the driver to finish its round, checkpoint and report (red_runtime.engine.stopping).
        container["env"].append({"name": "RAY_JOB_STOP_WAIT_TIME_S", "value": str(JOB_STOP_WAIT_S)})
    # However the Pods go (Kueue preempts, spec.suspend, a drain), the driver first stops after its round and
    # checkpoints, so that the next attempt loses nothing: the head's hook asks it to, and a worker's keeps the
    # node actors there until it has (red_runtime.apps.drain).
    drain = ["python", "-m", DRAIN_MODULE, "--timeout", str(JOB_STOP_WAIT_S)]
    container["lifecycle"] = {
        "preStop": {"exec": {"command": drain if name == HEAD_CONTAINER else [*drain, "--actors"]}}
    }
    return container


def tolerations(pod: PodOptions, gpu: int) -> list[dict[str, Any]]:
    """The user's tolerations if set (an empty list too), else the GPU nodes' taint for a group with GPUs."""
    if pod.tolerations is not None:
        return [dict(t) for t in pod.tolerations]
    return [dict(GPU_TOLERATION)] if gpu else []


def _template(fed: Federation, pod: PodOptions, gpu: int, spec: dict[str, Any]) -> dict[str, Any]:
    """A Ray Pod's template: `spec` (its account and container) with the placement and the Pod fields asked
    for, under the `restricted` security defaults. Red's labels win over the user's of the same key."""
    metadata: dict[str, Any] = {"labels": {**pod.labels, **labels(fed)}}
    if pod.annotations:
        metadata["annotations"] = dict(pod.annotations)
    out: dict[str, Any] = {"securityContext": copy.deepcopy(POD_SECURITY), **spec}
    if pod.nodeSelector:
        out["nodeSelector"] = dict(pod.nodeSelector)
    if tolerated := tolerations(pod, gpu):
        out["tolerations"] = tolerated
    if pod.affinity:
        out["affinity"] = copy.deepcopy(dict(pod.affinity))
    if pod.priorityClassName:
        out["priorityClassName"] = pod.priorityClassName
    if pod.imagePullSecrets:
        out["imagePullSecrets"] = [{"name": name} for name in pod.imagePullSecrets]
    if pod.volumes:
        out["volumes"] = copy.deepcopy([dict(v) for v in pod.volumes])
    return {"metadata": metadata, "spec": out}


def _worker_account(fed: Federation, group: WorkerGroup) -> dict[str, Any]:
    """No token: a worker never calls the API. A group with serviceAccountAnnotations (workload identity for
    object storage) runs as a ServiceAccount of its own; the others as the namespace's default one."""
    spec: dict[str, Any] = {"automountServiceAccountToken": False}
    if group.serviceAccountAnnotations:
        spec["serviceAccountName"] = worker_account_name(fed.name, group.name)
    return spec


def _with_storage(fed: Federation, template: dict[str, Any], read_only: bool = False) -> dict[str, Any]:
    """A Pod with the Federation's storage: its claim mounted at STORAGE_MOUNT, or the object-storage Secret's
    keys in the environment (where the S3 client looks for credentials and an endpoint)."""
    storage = fed.spec.storage
    pod = template["spec"]
    container = pod["containers"][0]
    if storage.uri:
        if storage.secretRef:
            container["envFrom"] = [{"secretRef": {"name": storage.secretRef}}]
        return template
    pod.setdefault("volumes", []).append(
        {"name": STORAGE_VOLUME, "persistentVolumeClaim": {"claimName": claim_name(fed)}}
    )
    mount: dict[str, Any] = {"name": STORAGE_VOLUME, "mountPath": STORAGE_MOUNT}
    if read_only:
        mount["readOnly"] = True
    container.setdefault("volumeMounts", []).append(mount)
    return template


def build_claim(fed: Federation) -> dict[str, Any] | None:
    """The claim the operator creates when the spec names none and uses no object storage. With retain (the
    default) it carries no owner reference, so deleting the Federation keeps the model; else GC removes it."""
    if not owns_claim(fed):
        return None
    claim = fed.spec.storage.claim
    metadata = _metadata(fed, claim_name(fed))
    if fed.spec.storage.retain:
        del metadata["ownerReferences"]
        metadata["annotations"] = {ANNOTATION_CLAIM_OF: fed.uid}
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": claim.size}}}
    if claim.storageClassName:
        spec["storageClassName"] = claim.storageClassName
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def claimed_by(obj: Mapping[str, Any] | None, fed: Federation) -> bool:
    """A claim is this Federation's if it controls it, or if the operator made it, retained, for a Federation
    of this name (a Federation re-created under its name keeps using its predecessor's claim)."""
    meta = (obj or {}).get("metadata") or {}
    made_for = (meta.get("annotations") or {}).get(ANNOTATION_CLAIM_OF)
    return owned(obj, fed.uid) or (bool(made_for) and (meta.get("labels") or {}).get(LABEL_FEDERATION) == fed.name)


def _head_group(fed: Federation, account: Mapping[str, Any], read_only: bool = False) -> dict[str, Any]:
    """The head group (under `account`, its Pod's ServiceAccount fields), with the Federation's storage."""
    ray = fed.spec.ray
    container = _container(HEAD_CONTAINER, ray.image, ray.head.cpu, ray.head.memory, 0, fed, ray.head)
    pod = {**account, "containers": [container], "terminationGracePeriodSeconds": POD_GRACE_S}
    return {
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": ray_cpus(ray.head.cpu), "num-gpus": "0"},
        "template": _with_storage(fed, _template(fed, ray.head, 0, pod), read_only),
    }


def _worker_groups(fed: Federation, storage: bool = False) -> list[dict[str, Any]]:
    """The worker groups of spec.ray; with `storage`, each Pod also mounts the Federation's storage, read-only."""
    ray = fed.spec.ray
    groups = []
    for group in ray.workerGroups:
        container = _container(WORKER_CONTAINER, ray.image, group.cpu, group.memory, group.gpu, fed, group)
        pod = {**_worker_account(fed, group), "containers": [container], "terminationGracePeriodSeconds": POD_GRACE_S}
        template = _template(fed, group, group.gpu, pod)
        groups.append(
            {
                "groupName": group.name,
                "replicas": group.replicas,
                "minReplicas": group.replicas,
                "maxReplicas": max(group.replicas, 1),
                "rayStartParams": {"num-cpus": ray_cpus(group.cpu), "num-gpus": str(group.gpu)},
                "template": _with_storage(fed, template, read_only=True) if storage else template,
            }
        )
    return groups


def _cluster_spec(head: dict[str, Any], workers: list[dict[str, Any]]) -> dict[str, Any]:
    # Token authentication (Ray >= 2.52): KubeRay keeps the token in a Secret, puts it into every Ray
    # container's env and sends it on its own dashboard calls, so no one else can submit jobs to the cluster.
    return {
        "rayVersion": RAY_VERSION,
        "authOptions": {"mode": "token"},
        "headGroupSpec": head,
        "workerGroupSpecs": workers,
    }


def build_raycluster(fed: Federation) -> dict[str, Any]:
    """The compute: a head (where the driver runs, under the driver's ServiceAccount) and the worker groups."""
    head = _head_group(fed, {"serviceAccountName": driver_name(fed.name)})
    spec = _cluster_spec(head, _worker_groups(fed))
    extra = {LABEL_RAY_HASH: ray_hash(fed.spec), **queue_labels(fed)}
    if fed.queue:
        # Kueue's RayCluster integration admits it against the queue's quota: created suspended (as Kueue's
        # webhook would make it), it gets Pods only once Kueue admits its Workload and lifts the suspension.
        spec["suspend"] = True
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayCluster",
        "metadata": _metadata(fed, raycluster_name(fed.name), extra),
        "spec": spec,
    }


def queue_labels(fed: Federation) -> dict[str, str]:
    """The labels that hand a RayCluster to Kueue: its LocalQueue, and its WorkloadPriorityClass if any."""
    if not fed.queue:
        return {}
    out = {QUEUE_LABEL: fed.queue}
    if fed.spec.priorityClassName:
        out[PRIORITY_LABEL] = fed.spec.priorityClassName
    return out


def serve_config(fed: Federation) -> str:
    """serveConfigV2: one application, at "/", loading the run folder the driver wrote. The runtime env is the
    RayJob's (a user's model class may need its packages), less the variable that names a RayJob."""
    serve = fed.spec.serve
    if serve is None:
        raise ValueError(f"Federation {fed.namespace}/{fed.name} has no spec.serve")
    app: dict[str, Any] = {
        "name": SERVE_APP,
        "route_prefix": "/",
        "import_path": SERVE_IMPORT_PATH,
        "args": {"run": run_location(fed), "replicas": serve.replicas, "cpu": serve.cpu, "gpu": serve.gpu},
    }
    refs = [ref for ref in (fed.spec.task.dataset.name, fed.spec.task.model.name) if ":" in ref]
    if refs:  # the code this Federation names itself, and only that, even if its folder names other code
        app["args"]["trustCode"] = refs
    if fed.spec.ray.runtimeEnv:
        app["runtime_env"] = copy.deepcopy(dict(fed.spec.ray.runtimeEnv))
    # The proxy's request timeout, as `red serve` sets it: Serve takes http_options when it starts.
    config = {"http_options": {"request_timeout_s": SERVE_REQUEST_TIMEOUT_S}, "applications": [app]}
    return yaml.safe_dump(config, sort_keys=True)


def build_rayservice(fed: Federation) -> dict[str, Any]:
    """The finished model behind Ray Serve: a KubeRay RayService on Pods shaped as the RayCluster's, each with
    the Federation's storage (read-only). The head keeps the driver's ServiceAccount, for a cloud identity
    its annotations may give, but mounts no token: serving never calls the API."""
    head = _head_group(fed, {"serviceAccountName": driver_name(fed.name), "automountServiceAccountToken": False}, True)
    # KubeRay makes the Serve Service from the head container's port named "serve", and refuses the RayService
    # without one.
    head["template"]["spec"]["containers"][0]["ports"].append({"name": "serve", "containerPort": SERVE_PORT})
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayService",
        "metadata": _metadata(fed, rayservice_name(fed.name), {LABEL_SERVE_HASH: serve_hash(fed.spec)}),
        "spec": {
            "serveConfigV2": serve_config(fed),
            "rayClusterConfig": _cluster_spec(head, _worker_groups(fed, storage=True)),
        },
    }


def entrypoint(fed: Federation) -> str:
    """The driver, writing its run folder to the Federation's storage and naming it in status.artifacts."""
    return (
        f"python -m {DRIVER_MODULE} --federation {fed.namespace}/{fed.name} "
        f"--out {shlex.quote(run_location(fed))} --artifacts-uri {shlex.quote(artifacts_base(fed))}"
    )


def build_rayjob(fed: Federation, attempt: int, generation: int) -> dict[str, Any]:
    """The driver, submitted to the Federation's own RayCluster (clusterSelector), which the operator owns.

    With a clusterSelector KubeRay forbids suspend, backoffLimit > 0 and SidecarMode, so retries are new
    RayJobs (faultTolerance.maxJobRetries) and suspension deletes the RayJob. The runtime env names the
    RayJob to its driver (Ray passes a runtime env's env_vars to the entrypoint), which tags its reports.
    """
    digest = spec_hash(fed.spec)
    name = rayjob_name(fed.name, digest, attempt)
    runtime_env = dict(fed.spec.ray.runtimeEnv)
    env_vars = runtime_env.get("env_vars")
    runtime_env["env_vars"] = {**(env_vars if isinstance(env_vars, Mapping) else {}), DRIVER_RAYJOB_ENV: name}
    spec: dict[str, Any] = {
        "entrypoint": entrypoint(fed),
        "clusterSelector": {"ray.io/cluster": raycluster_name(fed.name)},
        "submissionMode": fed.spec.ray.submissionMode,
        "shutdownAfterJobFinishes": False,
        "runtimeEnvYAML": yaml.safe_dump(runtime_env, sort_keys=True),
    }
    if fed.spec.ray.submissionMode == "K8sJobMode":
        spec["submitterPodTemplate"] = submitter_template(fed)
    extra = {LABEL_SPEC_HASH: digest, LABEL_ATTEMPT: str(attempt), LABEL_GENERATION: str(generation)}
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayJob",
        "metadata": _metadata(fed, name, extra),
        "spec": spec,
    }


def submitter_template(fed: Federation) -> dict[str, Any]:
    """KubeRay's submitter Pod (K8sJobMode), as its default template with the head's image, plus what it lacks:
    the head's pull secrets, the `restricted` security defaults and no ServiceAccount token (it talks to the
    Ray dashboard only). KubeRay fills in the command and the dashboard's address and token."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": copy.deepcopy(POD_SECURITY),
        "containers": [
            {
                "name": SUBMITTER_CONTAINER,
                "image": fed.spec.ray.image,
                "imagePullPolicy": "IfNotPresent",
                "resources": copy.deepcopy(SUBMITTER_RESOURCES),
                "securityContext": copy.deepcopy(CONTAINER_SECURITY),
            }
        ],
    }
    if fed.spec.ray.head.imagePullSecrets:
        spec["imagePullSecrets"] = [{"name": name} for name in fed.spec.ray.head.imagePullSecrets]
    return {"metadata": {"labels": labels(fed)}, "spec": spec}


def _account(fed: Federation, name: str, annotations: Mapping[str, str]) -> dict[str, Any]:
    metadata = _metadata(fed, name)
    if annotations:
        metadata["annotations"] = {**annotations, ANNOTATION_KEYS: json.dumps(sorted(annotations))}
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}


def build_service_account(fed: Federation) -> dict[str, Any]:
    """The driver's (the head's): its token is the driver's credential for its Federation's status."""
    return _account(fed, driver_name(fed.name), fed.spec.ray.head.serviceAccountAnnotations)


def build_worker_accounts(fed: Federation) -> list[dict[str, Any]]:
    """One per worker group with serviceAccountAnnotations; none of them mounts a token."""
    return [
        {
            **_account(fed, worker_account_name(fed.name, g.name), g.serviceAccountAnnotations),
            "automountServiceAccountToken": False,
        }
        for g in fed.spec.ray.workerGroups
        if g.serviceAccountAnnotations
    ]


def annotations_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch of metadata.annotations that brings an account's spec annotations to `desired` (a
    built account's): changed and new keys set, keys the spec no longer has removed, anyone else's kept."""
    have = dict(((current or {}).get("metadata") or {}).get("annotations") or {})
    want = dict((desired.get("metadata") or {}).get("annotations") or {})
    try:
        before = json.loads(have.get(ANNOTATION_KEYS, "[]"))
    except ValueError:
        before = []
    patch: dict[str, Any] = {k: v for k, v in want.items() if have.get(k) != v}
    for key in before if isinstance(before, list) else []:
        if isinstance(key, str) and key not in want and key in have:
            patch[key] = None
    if ANNOTATION_KEYS in have and ANNOTATION_KEYS not in want:
        patch[ANNOTATION_KEYS] = None
    return patch


def driver_rules(fed: Federation) -> list[dict[str, Any]]:
    """The driver reads its own Federation and patches its status; nothing else, not even other Federations."""
    return [
        {
            "apiGroups": ["red.dev"],
            "resources": ["federations"],
            "resourceNames": [fed.name],
            "verbs": ["get", "watch"],
        },
        {
            "apiGroups": ["red.dev"],
            "resources": ["federations/status"],
            "resourceNames": [fed.name],
            # get: `kubectl patch --subresource=status` reads before it patches (the driver's own status only);
            # no update: the driver merges its own fields and never replaces the whole status.
            "verbs": ["get", "patch"],
        },
    ]


def build_role(fed: Federation) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(fed, driver_name(fed.name)),
        "rules": driver_rules(fed),
    }


def build_role_binding(fed: Federation) -> dict[str, Any]:
    name = driver_name(fed.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(fed, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": fed.namespace}],
    }


def build_rbac(fed: Federation) -> list[dict[str, Any]]:
    """In creation order: the Role must exist before a binding that grants it."""
    return [build_service_account(fed), build_role(fed), build_role_binding(fed)]


def build_all(fed: Federation, generation: int) -> list[dict[str, Any]]:
    """Every child a Federation can have, rendered: what reconcile checks before it creates any."""
    children = [*build_rbac(fed), *build_worker_accounts(fed), build_raycluster(fed), build_rayjob(fed, 1, generation)]
    claim = build_claim(fed) if owns_claim(fed) else None
    if claim:
        children.append(claim)
    if fed.spec.serve is not None:
        children.append(build_rayservice(fed))
    return children
