"""The Pod fields of ray.head and ray.workerGroups[]: kept as given, and every Pod the API server would
refuse refused here first, with the field named."""

import pytest

from red_api.spec import SpecError, parse_spec

pytestmark = pytest.mark.unit

FULL = {
    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
    "priorityClassName": "training",
    "labels": {"team": "vision"},
    "annotations": {"example.com/note": "any text at all"},
    "imagePullSecrets": [{"name": "regcred"}],
    "serviceAccountAnnotations": {"iam.gke.io/gcp-service-account": "red@p.iam.gserviceaccount.com"},
    "volumes": [
        {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
        {"name": "config", "configMap": {"name": "red-config", "items": [{"key": "a", "path": "conf/a.yaml"}]}},
        {"name": "creds", "secret": {"secretName": "s3", "defaultMode": 0o400}},
        {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
    ],
    "volumeMounts": [
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "config", "mountPath": "/etc/red", "subPath": "conf"},
    ],
}


def group(**fields):
    return {"ray": {"workerGroups": [{"name": "gpu", "gpu": 1, **fields}]}}


def problems(spec):
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    return err.value.problems


def test_every_pod_field_is_kept_on_the_head_and_on_a_worker_group():
    spec = parse_spec({"ray": {"head": FULL, "workerGroups": [{"name": "gpu", "gpu": 1, **FULL}]}})
    for pod in (spec.ray.head, spec.ray.workerGroups[0]):
        assert pod.nodeSelector == FULL["nodeSelector"]
        assert pod.tolerations == tuple(FULL["tolerations"])
        assert pod.affinity == FULL["affinity"]
        assert pod.priorityClassName == "training"
        assert pod.labels == {"team": "vision"} and pod.annotations == FULL["annotations"]
        assert pod.imagePullSecrets == ("regcred",)
        assert pod.serviceAccountAnnotations == FULL["serviceAccountAnnotations"]
        assert pod.volumes == tuple(FULL["volumes"])
        assert pod.volumeMounts == tuple(FULL["volumeMounts"])


def test_unset_tolerations_differ_from_an_empty_list():
    """None asks for the default (the GPU taint tolerated); [] asks for none at all."""
    assert parse_spec(group()).ray.workerGroups[0].tolerations is None
    assert parse_spec(group(tolerations=[])).ray.workerGroups[0].tolerations == ()


def test_a_hostpath_volume_is_refused_with_its_path():
    (problem,) = problems(group(volumes=[{"name": "a", "emptyDir": {}}, {"name": "h", "hostPath": {"path": "/"}}]))
    assert problem.startswith("spec.ray.workerGroups[0].volumes[1].hostPath: ")
    assert "hostPath volumes are not allowed" in problem


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]}, "volumes[0].nfs"),
        ({"volumes": [{"name": "v"}]}, "volumes[0]"),
        ({"volumes": [{"name": "v", "emptyDir": {}, "secret": {"secretName": "s"}}]}, "volumes[0]"),
        ({"volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]}, "volumes[1].name"),
        ({"volumes": [{"name": "shared-mem", "emptyDir": {}}]}, "volumes[0].name"),
        ({"volumes": [{"name": "Data", "emptyDir": {}}]}, "volumes[0].name"),
        ({"volumes": [{"name": "c", "persistentVolumeClaim": {}}]}, "volumes[0].persistentVolumeClaim.claimName"),
        (
            {"volumes": [{"name": "c", "configMap": {"name": "m", "items": [{"key": "k", "path": "../x"}]}}]},
            "volumes[0].configMap.items[0].path",
        ),  # fmt: skip
        (
            {"volumes": [{"name": "s", "secret": {"secretName": "s", "defaultMode": 1000}}]},
            "volumes[0].secret.defaultMode",
        ),  # fmt: skip
        ({"volumes": [{"name": "e", "emptyDir": {"medium": "HugePages"}}]}, "volumes[0].emptyDir.medium"),
        ({"volumeMounts": [{"name": "nowhere", "mountPath": "/x"}]}, "volumeMounts[0].name"),
        (
            {"volumes": [{"name": "e", "emptyDir": {}}], "volumeMounts": [{"name": "e", "mountPath": "x"}]},
            "volumeMounts[0].mountPath",
        ),  # fmt: skip
        (
            {
                "volumes": [{"name": "e", "emptyDir": {}}],
                "volumeMounts": [{"name": "e", "mountPath": "/x"}, {"name": "e", "mountPath": "/x"}],
            },
            "volumeMounts[1].mountPath",
        ),  # fmt: skip
        (
            {
                "volumes": [{"name": "e", "emptyDir": {}}],
                "volumeMounts": [{"name": "e", "mountPath": "/x", "subPath": "../up"}],
            },
            "volumeMounts[0].subPath",
        ),  # fmt: skip
        ({"tolerations": [{"operator": "Equal", "value": "x"}]}, "tolerations[0].operator"),
        ({"tolerations": [{"key": "k", "operator": "Exists", "value": "x"}]}, "tolerations[0].value"),
        ({"tolerations": [{"key": "k", "operator": "Maybe"}]}, "tolerations[0].operator"),
        ({"tolerations": [{"key": "k", "effect": "NoRun"}]}, "tolerations[0].effect"),
        (
            {"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 3}]},
            "tolerations[0].tolerationSeconds",
        ),  # fmt: skip
        ({"tolerations": [{"key": "k", "colour": "red"}]}, "tolerations[0].colour"),
        ({"tolerations": {"key": "k"}}, "tolerations"),
        ({"nodeSelector": {"pool": "not a label value"}}, "nodeSelector[pool]"),
        ({"nodeSelector": {"pool": 3}}, "nodeSelector[pool]"),
        ({"labels": {"red.dev/federation": "other"}}, "labels[red.dev/federation]"),
        ({"labels": {"bad key": "v"}}, "labels[bad key]"),
        ({"annotations": {"ray.io/overwrite-container-cmd": "true"}}, "annotations[ray.io/overwrite-container-cmd]"),
        (
            {"serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": 7}},
            "serviceAccountAnnotations[eks.amazonaws.com/role-arn]",
        ),  # fmt: skip
        ({"affinity": {"nodeAfinity": {}}}, "affinity.nodeAfinity"),
        ({"affinity": {"podAffinity": []}}, "affinity.podAffinity"),
        ({"priorityClassName": "High"}, "priorityClassName"),
        ({"imagePullSecrets": ["regcred"]}, "imagePullSecrets[0]"),
        ({"imagePullSecrets": [{"name": "a"}, {"name": "a"}]}, "imagePullSecrets[1].name"),
        ({"imagePullSecrets": [{}]}, "imagePullSecrets[0].name"),
    ],
)
def test_a_pod_the_api_server_would_refuse_is_refused_naming_the_field(fields, path):
    found = problems(group(**fields))
    assert any(p.startswith(f"spec.ray.workerGroups[0].{path}: ") for p in found), found


def test_the_head_takes_the_same_fields_and_checks():
    (problem,) = problems({"ray": {"head": {"volumes": [{"name": "h", "hostPath": {"path": "/var"}}]}}})
    assert problem.startswith("spec.ray.head.volumes[0].hostPath: ")


def test_a_stored_object_ignores_an_unknown_pod_field_of_a_newer_crd():
    spec = parse_spec(group(schedulerName="volcano"), stored=True)
    assert spec.ray.workerGroups[0].name == "gpu"
