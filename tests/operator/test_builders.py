"""The pure builders: a Federation in, KubeRay and RBAC manifests out, checked on plain data."""

from __future__ import annotations

import copy
import re
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from red_api.spec import MAX_NAME_LENGTH, parse_manifest
from red_operator import builders

pytestmark = pytest.mark.unit

BASE = {
    "apiVersion": "red.dev/v1alpha1",
    "kind": "Federation",
    "metadata": {"name": "digits", "namespace": "team-a", "uid": "uid-1", "labels": {"argocd": "app"}},
    "spec": {"rounds": 5},
}


def fed(spec=None, name="digits", **meta):
    doc = copy.deepcopy(BASE)
    doc["metadata"].update(name=name, **meta)
    if spec is not None:
        doc["spec"] = spec
    return parse_manifest(doc)


def test_children_carry_a_controller_reference_and_our_labels_only():
    f = fed()
    for obj in [builders.build_raycluster(f), builders.build_rayjob(f, 1, 1), *builders.build_rbac(f)]:
        meta = obj["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "red.dev/v1alpha1",
                "kind": "Federation",
                "name": "digits",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"][builders.LABEL_FEDERATION] == "digits"
        assert "argocd" not in meta["labels"], "the Federation's own labels must not be copied"


def test_names_are_deterministic():
    f = fed()
    assert builders.build_raycluster(f)["metadata"]["name"] == "digits-ray"
    assert [o["metadata"]["name"] for o in builders.build_rbac(f)] == ["digits-driver"] * 3
    first, again = builders.build_rayjob(f, 1, 1), builders.build_rayjob(fed(), 1, 7)
    assert first["metadata"]["name"] == again["metadata"]["name"]
    assert first["metadata"]["name"].startswith("digits-") and first["metadata"]["name"].endswith("-1")


def test_a_spec_change_or_a_new_attempt_gets_a_new_rayjob_name():
    f = fed()
    name = builders.build_rayjob(f, 1, 1)["metadata"]["name"]
    assert builders.build_rayjob(f, 2, 1)["metadata"]["name"] != name
    assert builders.build_rayjob(fed({"rounds": 6}), 1, 2)["metadata"]["name"] != name


def test_suspend_and_keep_cluster_do_not_change_the_job():
    plain = builders.spec_hash(fed({"rounds": 5}).spec)
    assert builders.spec_hash(fed({"rounds": 5, "suspend": True}).spec) == plain
    assert builders.spec_hash(fed({"rounds": 5, "ray": {"keepCluster": True}}).spec) == plain


@pytest.mark.parametrize("length", [1, 40, 47, MAX_NAME_LENGTH])
def test_names_fit_kuberay_limits_at_every_length(length):
    name = ("a" * length)[:length]
    f = fed(name=name)
    cluster = builders.build_raycluster(f)["metadata"]["name"]
    job = builders.build_rayjob(f, 100, 1)["metadata"]["name"]
    assert len(cluster) <= builders.MAX_RAYCLUSTER_NAME and cluster.endswith("-ray")
    assert len(job) <= builders.MAX_RAYJOB_NAME


def test_long_names_that_share_a_prefix_stay_distinct():
    a, b = "x" * 49 + "a", "x" * 49 + "b"
    assert builders.raycluster_name(a) != builders.raycluster_name(b)
    assert builders.rayjob_name(a, "abcde", 1) != builders.rayjob_name(b, "abcde", 1)


def test_names_start_with_a_letter_for_kuberay():
    assert builders.raycluster_name("7fed") == "r7fed-ray"
    assert builders.rayjob_name("7fed", "abcdef", 1)[0] == "r"


def test_raycluster_head_and_gpu_worker_groups():
    f = fed(
        {
            "ray": {
                "image": "example/red:1",
                "head": {"cpu": "2", "memory": "8Gi"},
                "workerGroups": [
                    {"name": "gpu", "replicas": 2, "cpu": "8", "gpu": 1, "memory": "32Gi"},
                    {"name": "cpu", "replicas": 3, "cpu": "500m", "memory": "1Gi"},
                ],
            }
        }
    )
    spec = builders.build_raycluster(f)["spec"]
    head = spec["headGroupSpec"]
    pod = head["template"]["spec"]
    assert pod["serviceAccountName"] == "digits-driver"
    (container,) = pod["containers"]
    assert container["image"] == "example/red:1"
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    assert head["rayStartParams"]["num-cpus"] == "2" and head["rayStartParams"]["num-gpus"] == "0"
    assert {p["containerPort"] for p in container["ports"]} == {6379, 8265, 10001}
    # A stopped job's driver gets time to checkpoint before Ray's job supervisor kills it.
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["RAY_JOB_STOP_WAIT_TIME_S"]) > 10

    gpu, cpu = spec["workerGroupSpecs"]
    assert gpu["groupName"] == "gpu" and gpu["replicas"] == gpu["minReplicas"] == 2
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
    assert gpu["rayStartParams"] == {"num-cpus": "8", "num-gpus": "1"}
    assert cpu["rayStartParams"] == {"num-cpus": "1", "num-gpus": "0"}
    assert "nvidia.com/gpu" not in cpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["template"]["spec"]["automountServiceAccountToken"] is False


def ray_label(f):
    return builders.build_raycluster(f)["metadata"]["labels"][builders.LABEL_RAY_HASH]


def test_ray_hash_follows_what_shapes_the_pods_only():
    a, b = ray_label(fed({"rounds": 5})), ray_label(fed({"rounds": 9}))
    job_only = fed({"ray": {"submissionMode": "HTTPMode", "runtimeEnv": {"pip": ["x"]}, "keepCluster": True}})
    assert a == b == ray_label(job_only)
    assert a != ray_label(fed({"ray": {"head": {"cpu": "4"}}}))
    assert a != ray_label(fed({"ray": {"image": "example/red:2"}}))


def test_hashes_are_of_what_the_user_wrote_not_of_how_a_release_renders_it(monkeypatch):
    """A release that renders the RayCluster otherwise (another Ray, another builder) replaces nothing."""
    before = ray_label(fed())
    monkeypatch.setattr(builders, "RAY_VERSION", "9.9.9")
    monkeypatch.setattr(builders, "HEAD_CONTAINER", "head")
    assert builders.build_raycluster(fed())["spec"]["rayVersion"] == "9.9.9"
    assert ray_label(fed()) == before
    # A value equal to its default is what the user gets anyway: a release that adds a defaulted field (or a
    # user who spells a default out) keeps the hashes.
    assert builders.spec_hash(fed({"rounds": 10}).spec) == builders.spec_hash(fed({}).spec)
    assert ray_label(fed({"ray": {"head": {"cpu": "2", "memory": "8Gi"}}})) == ray_label(fed({}))


def test_rayjob_targets_the_federations_cluster_without_forbidden_fields():
    f = fed({"ray": {"submissionMode": "HTTPMode", "runtimeEnv": {"env_vars": {"A": "1"}}}})
    job = builders.build_rayjob(f, 3, 4)
    spec = job["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": "digits-ray"}
    assert spec["entrypoint"] == (
        "python -m red_runtime.apps.launch --federation team-a/digits "
        "--out /red/storage/digits --artifacts-uri pvc://digits-storage/digits"
    )
    assert spec["submissionMode"] == "HTTPMode"
    assert spec["shutdownAfterJobFinishes"] is False
    name = job["metadata"]["name"]
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"env_vars": {"A": "1", builders.DRIVER_RAYJOB_ENV: name}}
    for forbidden in ("suspend", "backoffLimit", "rayClusterSpec"):
        assert forbidden not in spec
    labels = job["metadata"]["labels"]
    assert labels[builders.LABEL_ATTEMPT] == "3" and labels[builders.LABEL_GENERATION] == "4"
    plain = builders.build_rayjob(fed(), 1, 1)
    assert yaml.safe_load(plain["spec"]["runtimeEnvYAML"]) == {"env_vars": {"RED_RAYJOB": plain["metadata"]["name"]}}


def test_driver_role_is_limited_to_its_own_federation():
    role, binding = builders.build_role(fed()), builders.build_role_binding(fed())
    assert role["rules"] == [
        {
            "apiGroups": ["red.dev"],
            "resources": ["federations"],
            "resourceNames": ["digits"],
            "verbs": ["get", "watch"],
        },
        {
            "apiGroups": ["red.dev"],
            "resources": ["federations/status"],
            "resourceNames": ["digits"],
            "verbs": ["get", "patch"],
        },
    ]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "digits-driver"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "digits-driver", "namespace": "team-a"}]


@pytest.mark.parametrize(
    ("quantity", "cores", "ray"),
    [("2", 2.0, "2"), ("500m", 0.5, "1"), ("1.5", 1.5, "2"), (4, 4.0, "4"), ("2000m", 2.0, "2")],
)
def test_cpu_quantities(quantity, cores, ray):
    assert builders.cpu_cores(quantity) == cores
    assert builders.ray_cpus(quantity) == ray


def test_a_bad_quantity_names_itself():
    with pytest.raises(ValueError, match="'two'"):
        builders.cpu_cores("two")


def test_raycluster_asks_for_ray_token_auth_with_the_pinned_ray():
    """KubeRay turns token auth on only with rayVersion >= 2.52; the version is the one Red pins and ships."""
    spec = builders.build_raycluster(fed({}))["spec"]
    assert spec["authOptions"] == {"mode": "token"}
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert re.search(rf'"ray\[default[a-z,]*\]=={re.escape(spec["rayVersion"])}"', pyproject)
    assert spec["rayVersion"] == version("ray"), f"installed Ray differs from the pin ({sys.executable})"


def pods(f):
    """Every Pod template of the Federation: the head's, each worker group's, the submitter's (K8sJobMode)."""
    spec = builders.build_raycluster(f)["spec"]
    templates = [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]
    job = builders.build_rayjob(f, 1, 1)["spec"]
    return templates + ([job["submitterPodTemplate"]] if "submitterPodTemplate" in job else [])


def test_every_pod_meets_pod_security_restricted_by_default():
    f = fed({"ray": {"workerGroups": [{"name": "gpu", "gpu": 1}, {"name": "cpu"}]}})
    templates = pods(f)
    assert len(templates) == 4
    for template in templates:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["runAsGroup"] == 100
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            }
        assert "hostNetwork" not in pod and "hostPID" not in pod


def test_only_the_head_mounts_a_service_account_token():
    head, gpu, submitter = pods(fed({"ray": {"workerGroups": [{"name": "gpu", "gpu": 1}]}}))
    assert head["spec"]["serviceAccountName"] == "digits-driver" and "automountServiceAccountToken" not in head["spec"]
    assert gpu["spec"]["automountServiceAccountToken"] is False
    assert submitter["spec"]["automountServiceAccountToken"] is False


def test_a_gpu_group_tolerates_the_gpu_taint_unless_it_sets_tolerations():
    mine = [{"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}]
    groups = [
        {"name": "gpu", "gpu": 1},
        {"name": "cpu"},
        {"name": "own", "gpu": 1, "tolerations": mine},
        {"name": "none", "gpu": 1, "tolerations": []},
    ]
    head, gpu, cpu, own, none, _ = pods(fed({"ray": {"workerGroups": groups}}))
    assert gpu["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "tolerations" not in cpu["spec"] and "tolerations" not in head["spec"]
    assert own["spec"]["tolerations"] == mine
    assert "tolerations" not in none["spec"]


def test_the_pod_fields_reach_the_pods():
    fields = {
        "nodeSelector": {"pool": "gpu"},
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "priorityClassName": "training",
        "labels": {"team": "vision", "app.kubernetes.io/managed-by": "someone"},
        "annotations": {"example.com/note": "hi"},
        "imagePullSecrets": [{"name": "regcred"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
    }
    f = fed({"ray": {"head": fields, "workerGroups": [{"name": "gpu", "gpu": 1, **fields}]}})
    head, gpu, submitter = pods(f)
    storage = ({"name": "red-storage", "persistentVolumeClaim": {"claimName": "digits-storage"}},)
    mount = ({"name": "red-storage", "mountPath": "/red/storage"},)
    for template, extra in ((head, 1), (gpu, 0)):  # the head also mounts the Federation's storage
        pod = template["spec"]
        assert pod["nodeSelector"] == {"pool": "gpu"} and pod["affinity"] == fields["affinity"]
        assert pod["priorityClassName"] == "training" and pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["volumes"] == [*fields["volumes"], *storage[:extra]]
        assert pod["containers"][0]["volumeMounts"] == [*fields["volumeMounts"], *mount[:extra]]
        labels = template["metadata"]["labels"]
        assert labels["team"] == "vision" and labels[builders.LABEL_FEDERATION] == "digits"
        assert labels["app.kubernetes.io/managed-by"] == "red-operator", "Red's own labels win"
        assert template["metadata"]["annotations"] == {"example.com/note": "hi"}
    # The submitter pulls the head's image, so it gets the head's pull secrets, and nothing of its placement.
    assert submitter["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert submitter["spec"]["containers"][0]["image"] == f.spec.ray.image
    assert not {"nodeSelector", "affinity", "priorityClassName", "volumes"} & set(submitter["spec"])


def test_the_submitter_template_is_for_k8s_job_mode_only():
    assert (
        "submitterPodTemplate" not in builders.build_rayjob(fed({"ray": {"submissionMode": "HTTPMode"}}), 1, 1)["spec"]
    )
    template = builders.build_rayjob(fed(), 1, 1)["spec"]["submitterPodTemplate"]
    assert template["spec"]["restartPolicy"] == "Never"
    (container,) = template["spec"]["containers"]
    assert container["name"] == "ray-job-submitter" and "command" not in container, "KubeRay fills in the command"


def test_service_accounts_carry_the_spec_annotations_and_workers_get_one_only_when_asked():
    identity = {"iam.gke.io/gcp-service-account": "red@p.iam.gserviceaccount.com"}
    f = fed(
        {
            "ray": {
                "head": {"serviceAccountAnnotations": identity},
                "workerGroups": [{"name": "gpu", "gpu": 1, "serviceAccountAnnotations": identity}, {"name": "cpu"}],
            }
        }
    )
    driver = builders.build_service_account(f)
    assert driver["metadata"]["annotations"] == {
        **identity,
        builders.ANNOTATION_KEYS: '["iam.gke.io/gcp-service-account"]',
    }
    (worker,) = builders.build_worker_accounts(f)
    assert worker["metadata"]["name"] == "digits-worker-gpu" and worker["automountServiceAccountToken"] is False
    assert worker["metadata"]["annotations"][builders.ANNOTATION_KEYS] == '["iam.gke.io/gcp-service-account"]'
    assert worker["metadata"]["ownerReferences"] == [builders.owner_reference(f)]
    _, gpu, cpu, _ = pods(f)
    assert gpu["spec"]["serviceAccountName"] == "digits-worker-gpu"
    assert "serviceAccountName" not in cpu["spec"], "the namespace's default account, with no token"
    assert "annotations" not in builders.build_service_account(fed())["metadata"]


def test_annotations_patch_sets_the_spec_keys_and_removes_only_the_ones_it_set():
    old = fed({"ray": {"head": {"serviceAccountAnnotations": {"a.io/x": "1", "a.io/y": "2"}}}})
    current = builders.build_service_account(old)
    current["metadata"]["annotations"]["webhook.io/added"] = "keep me"
    new = builders.build_service_account(fed({"ray": {"head": {"serviceAccountAnnotations": {"a.io/x": "9"}}}}))
    assert builders.annotations_patch(current, new) == {
        "a.io/x": "9",
        "a.io/y": None,
        builders.ANNOTATION_KEYS: '["a.io/x"]',
    }
    assert builders.annotations_patch(new, new) == {}
    gone = builders.annotations_patch(current, builders.build_service_account(fed()))
    assert gone == {"a.io/x": None, "a.io/y": None, builders.ANNOTATION_KEYS: None}


def test_pod_fields_shape_the_pods_so_they_change_the_ray_hash():
    base = ray_label(fed({"ray": {"workerGroups": [{"name": "gpu", "gpu": 1}]}}))
    tolerant = fed({"ray": {"workerGroups": [{"name": "gpu", "gpu": 1, "tolerations": []}]}})
    assert ray_label(tolerant) != base
    assert ray_label(fed({"ray": {"head": {"labels": {"team": "a"}}}})) != ray_label(fed())


def test_object_storage_reaches_the_head_as_the_secrets_variables_and_no_volume():
    f = fed({"storage": {"uri": "s3://team/feds", "secretRef": {"name": "s3-creds"}}})
    cluster = builders.build_raycluster(f)
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "volumes" not in head and "volumeMounts" not in head["containers"][0]
    workers = [g["template"]["spec"]["containers"][0] for g in cluster["spec"]["workerGroupSpecs"]]
    assert all("envFrom" not in c for c in workers), "only the driver, on the head, writes to storage"
    assert builders.build_claim(f) is None
    entry = builders.build_rayjob(f, 1, 1)["spec"]["entrypoint"]
    assert entry.endswith("--out s3://team/feds/digits --artifacts-uri s3://team/feds/digits")


def test_a_uri_with_shell_characters_stays_one_argument_of_the_entrypoint():
    f = fed({"storage": {"uri": "s3://team/a;touch$IFS/tmp/x"}})
    entry = builders.build_rayjob(f, 1, 1)["spec"]["entrypoint"]
    assert "--out 's3://team/a;touch$IFS/tmp/x/digits'" in entry


SERVED = {
    "rounds": 5,
    "ray": {
        "image": "example/red:1",
        "head": {"cpu": "2", "memory": "8Gi", "nodeSelector": {"pool": "cpu"}},
        "workerGroups": [{"name": "gpu", "replicas": 2, "cpu": "8", "gpu": 1, "memory": "32Gi"}],
        "runtimeEnv": {"pip": ["my-models"]},
    },
    "serve": {"replicas": 3, "cpu": 0.5, "gpu": 1},
}


def test_the_rayservice_serves_the_run_folder_the_driver_wrote():
    f = fed(copy.deepcopy(SERVED))
    service = builders.build_rayservice(f)
    meta = service["metadata"]
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    assert meta["name"] == "digits-serve" and meta["namespace"] == "team-a"
    assert meta["ownerReferences"] == [builders.owner_reference(f)] and meta["ownerReferences"][0]["controller"]
    assert meta["labels"][builders.LABEL_FEDERATION] == "digits" and "argocd" not in meta["labels"]
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert config == {
        "http_options": {"request_timeout_s": 60.0},  # as `red serve` starts Serve
        "applications": [
            {
                "name": "model",
                "route_prefix": "/",
                "import_path": "red_runtime.apps.serving:build_app",
                "args": {"run": "/red/storage/digits", "replicas": 3, "cpu": 0.5, "gpu": 1.0},
                "runtime_env": {"pip": ["my-models"]},
            }
        ],
    }
    assert builders.serve_url(f) == "http://digits-serve-serve-svc.team-a.svc:8000"


def test_the_rayservice_head_names_its_serve_port_as_kuberay_requires():
    """Without a head port named `serve` KubeRay makes no Serve Service and never readies the RayService."""
    f = fed(copy.deepcopy(SERVED))
    served = builders.build_rayservice(f)["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in served["containers"][0]["ports"]}
    assert ports["serve"] == builders.SERVE_PORT
    training = builders.build_raycluster(f)["spec"]["headGroupSpec"]["template"]["spec"]
    assert "serve" not in {p["name"] for p in training["containers"][0]["ports"]}


def test_the_rayservice_runs_on_the_rayclusters_pods_with_the_storage_on_each():
    f = fed(copy.deepcopy(SERVED))
    cluster = builders.build_raycluster(f)["spec"]
    served = builders.build_rayservice(f)["spec"]["rayClusterConfig"]
    assert served["rayVersion"] == cluster["rayVersion"] and served["authOptions"] == {"mode": "token"}
    head, trained = served["headGroupSpec"], cluster["headGroupSpec"]
    assert head["rayStartParams"] == trained["rayStartParams"]
    pod = head["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "cpu"} and pod["containers"][0]["image"] == "example/red:1"
    # the driver's account (its cloud identity), but no API token: serving only reads the model
    assert pod["serviceAccountName"] == "digits-driver" and pod["automountServiceAccountToken"] is False
    claim = {"name": "red-storage", "persistentVolumeClaim": {"claimName": "digits-storage"}}
    mount = {"name": "red-storage", "mountPath": "/red/storage", "readOnly": True}
    (gpu,) = served["workerGroupSpecs"]
    (trained_gpu,) = cluster["workerGroupSpecs"]
    assert gpu["replicas"] == 2 and gpu["rayStartParams"] == trained_gpu["rayStartParams"]
    assert gpu["template"]["spec"]["tolerations"] == [builders.GPU_TOLERATION]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for template in (head["template"], gpu["template"]):
        assert claim in template["spec"]["volumes"]
        assert mount in template["spec"]["containers"][0]["volumeMounts"]
    # the RayCluster's worker Pods still mount nothing: only the driver, on the head, writes
    assert "volumes" not in trained_gpu["template"]["spec"]


def test_the_rayservice_reads_object_storage_with_the_secrets_keys():
    spec = {"storage": {"uri": "s3://team/feds", "secretRef": {"name": "s3-creds"}}, "serve": {}}
    spec["ray"] = {"workerGroups": [{"name": "cpu"}]}
    service = builders.build_rayservice(fed(spec))
    config = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    assert config["args"] == {"run": "s3://team/feds/digits", "replicas": 1, "cpu": 1.0, "gpu": 0.0}
    assert "runtime_env" not in config
    cluster = service["spec"]["rayClusterConfig"]
    for template in (cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]):
        container = template["spec"]["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
        assert "volumeMounts" not in container


@pytest.mark.parametrize("length", [1, 41, 42, MAX_NAME_LENGTH])
def test_rayservice_names_fit_kuberay_at_every_length(length):
    name = "a" * length
    service = builders.rayservice_name(name)
    assert len(service) <= builders.MAX_RAYSERVICE_NAME == 47
    assert service[0].isalpha() and service.endswith("-serve")
    # KubeRay's Serve Service, "<name>-serve-svc", is a DNS label too
    assert len(service + builders.SERVE_SERVICE_SUFFIX) <= 63
    assert builders.rayservice_name("a" * 50) != builders.rayservice_name("a" * 49 + "b")


def test_spec_serve_changes_the_rayservice_but_never_the_rayjob():
    plain = fed({"rounds": 5})
    job = builders.build_rayjob(plain, 1, 1)["metadata"]["name"]
    served = [fed({"rounds": 5, "serve": s}) for s in ({}, {"replicas": 2}, {"cpu": 2}, {"replicas": 2, "cpu": 2})]
    assert {builders.spec_hash(f.spec) for f in served} == {builders.spec_hash(plain.spec)}
    assert {builders.build_rayjob(f, 1, 2)["metadata"]["name"] for f in served} == {job}
    assert len({builders.serve_hash(f.spec) for f in served}) == len(served)
    # what shapes the service's Pods or where it reads the model changes it too; the RayJob's switches do not
    base = builders.serve_hash(served[0].spec)
    assert builders.serve_hash(fed({"rounds": 5, "serve": {}, "ray": {"image": "x/y:2"}}).spec) != base
    assert builders.serve_hash(fed({"rounds": 5, "serve": {}, "storage": {"uri": "s3://team/p"}}).spec) != base
    assert builders.serve_hash(fed({"rounds": 5, "serve": {}, "ray": {"keepCluster": True}}).spec) == base


def test_a_served_federation_trusts_only_the_code_it_names_itself():
    """The RayService's replicas import what the run folder's federation.yaml names only if the Federation
    names the same: another tenant who can write the folder cannot plant code there."""
    f = fed({"serve": {}, "task": {"model": {"name": "my_models.nets:Net"}}})
    (app,) = yaml.safe_load(builders.build_rayservice(f)["spec"]["serveConfigV2"])["applications"]
    assert app["args"]["trustCode"] == ["my_models.nets:Net"]
    (plain,) = yaml.safe_load(builders.build_rayservice(fed({"serve": {}}))["spec"]["serveConfigV2"])["applications"]
    assert "trustCode" not in plain["args"], "an older runtime image refuses an argument it does not know"
