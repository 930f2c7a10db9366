"""The generated CRD schema and the spec model agree: every manifest here passes both or fails both.

"Both" means red_api.spec.parse_manifest and the real API server (server-side dry-run apply with strict
field validation, so an unknown field is refused rather than pruned, as spec.py refuses it). A failure must
name the same field in both messages. KNOWN_GAPS lists, on purpose, what only one side can check.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from red_api.spec import MAX_NAME_LENGTH, MAX_WORKER_GROUPS, SpecError, parse_manifest
from tests.operator.conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.cluster


def doc(spec=None, name="fed"):
    return {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": name}, "spec": spec or {}}


RING = {"topology": {"kind": "ring"}}
POD = {
    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}]
            }
        }
    },
    "priorityClassName": "training",
    "labels": {"team": "vision", "example.com/cost-centre": "ml"},
    "annotations": {"example.com/note": "any text"},
    "imagePullSecrets": [{"name": "regcred"}],
    "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/red"},
    "volumes": [
        {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
        {"name": "config", "configMap": {"name": "red", "items": [{"key": "a", "path": "conf/a.yaml", "mode": 256}]}},
        {"name": "creds", "secret": {"secretName": "s3", "defaultMode": 256, "optional": True}},
        {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
    ],
    "volumeMounts": [
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "config", "mountPath": "/etc/red/", "subPath": "conf"},
    ],
}
SCRATCH = [{"name": "scratch", "emptyDir": {}}]


def group(**fields):
    return {"ray": {"workerGroups": [{"name": "gpu", "gpu": 1, **fields}]}}


VALID = {
    "empty spec": doc(),
    "no spec at all": {k: v for k, v in doc().items() if k != "spec"},
    "kregular 3 of 8": doc({"topology": {"kind": "kregular", "degree": 3}, "nodes": {"count": 8}}),
    "hierarchical groups == count": doc({"topology": {"kind": "hierarchical", "groups": 4}, "nodes": {"count": 4}}),
    "custom connected": doc({"topology": {"kind": "custom", "edges": [[0, 1], [1, 2]]}, "nodes": {"count": 3}}),
    "ring of two": doc({**RING, "nodes": {"count": 2}}),
    "gpu workers": doc(
        {"ray": {"workerGroups": [{"name": "gpu", "replicas": 2, "cpu": "8", "gpu": 1, "memory": "32Gi"}]}}
    ),
    "integer quantities": doc({"ray": {"head": {"cpu": 4, "memory": "16Gi"}}}),
    "fedprox options": doc({"algorithm": {"name": "fedprox", "options": {"mu": 0.01}}}),
    "privacy": doc({"algorithm": {"privacy": {"clip": 1.0, "noiseMultiplier": 0.5, "delta": 1e-5}}}),
    "target accuracy and quorum": doc({"algorithm": {"targetAccuracy": 0.97, "minNodes": 8, "fraction": 0.5}}),
    "runtimeEnv": doc({"ray": {"runtimeEnv": {"pip": ["requests"], "env_vars": {"A": "1"}}, "keepCluster": True}}),
    f"name of {MAX_NAME_LENGTH} characters": doc(name="a" * MAX_NAME_LENGTH),
    "eval-train role": doc({"nodes": {"role": "eval-train-test"}}),
    "fractional and whole resources": doc({"nodes": {"resources": {"cpu": 0.5, "gpu": 2}}}),
    "imported model and dataset": doc({"task": {"model": {"name": "pkg.mod:Net"}, "dataset": {"name": "a.b:make"}}}),
    "HTTPMode": doc({"ray": {"submissionMode": "HTTPMode"}}),
    "checkpoints and retries": doc(
        {"checkpoint": {"every": 2, "path": "ckpt/fast"}, "faultTolerance": {"maxJobRetries": 2}}
    ),
    "suspended": doc({"suspend": True}),
    "top-k compression": doc({"communication": {"compression": {"kind": "topk", "ratio": 0.05}}}),
    "8-bit quantisation": doc({"communication": {"compression": {"kind": "quantize", "bits": 8}}}),
    "personal layers, judged on the nodes' test splits": doc(
        {"nodes": {"role": "train-test"}, "task": {"model": {"personal": ["3"], "localNorm": True}}}
    ),
    "simulated attackers": doc({"nodes": {"count": 10, "adversaries": {"count": 2, "attack": "scale", "scale": 3}}}),
    "label-flipping attackers": doc({"nodes": {"count": 4, "adversaries": {"count": 3, "attack": "labelflip"}}}),
    "fedbuff with a straggler": doc(
        {
            "nodes": {"count": 10, "stragglers": {"count": 1, "slowdown": 10}},
            "algorithm": {"name": "fedbuff", "options": {"concurrency": 4, "staleness": "constant"}},
        }
    ),
    "bulyan with its 4f+3 nodes": doc({"nodes": {"count": 11}, "algorithm": {"name": "bulyan", "options": {"f": 2}}}),
    "pod fields on the head and a worker group": doc({"ray": {"head": POD, "workerGroups": [{"name": "gpu", **POD}]}}),
    "no tolerations at all": doc(group(tolerations=[])),
    "a toleration of every taint": doc(group(tolerations=[{"operator": "Exists"}])),
    "a NoExecute toleration for a while": doc(
        group(tolerations=[{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}])
    ),
    "storage on an existing claim": doc({"storage": {"pvc": {"claimName": "results"}}}),
    "storage on a new claim": doc({"storage": {"pvc": {"size": "5Gi", "storageClassName": "fast"}, "retain": False}}),
    "storage in s3": doc({"storage": {"uri": "s3://team-bucket/federations", "secretRef": {"name": "s3"}}}),
    "serving with the defaults": doc({"serve": {}}),
    "serving on a GPU worker group": doc(
        {"serve": {"replicas": 2, "cpu": 1.5, "gpu": 1}, "ray": {"workerGroups": [{"name": "gpu", "gpu": 2}]}}
    ),
    f"{MAX_WORKER_GROUPS} worker groups": doc(
        {"ray": {"workerGroups": [{"name": f"g{i}"} for i in range(MAX_WORKER_GROUPS)]}}
    ),
    "mlflow tracking": doc({"tracking": {"mlflow": {"uri": "http://mlflow.ml:5000", "experiment": "digits lr"}}}),
    "mlflow tracking over https": doc({"tracking": {"mlflow": {"uri": "https://mlflow.example.com/team/"}}}),
    "a sweep": doc({"sweep": {"params": ["task.train.lr=loguniform:1e-3:0.3", "task.train.epochs=grid:1,2"]}}),
    "vectorised training always": doc({"task": {"train": {"vectorize": "always", "optimizer": "adam"}}}),
}
VALID.update({f"example {p.name}": yaml.safe_load(p.read_text()) for p in EXAMPLES})
# README's example of the Pod fields, as a reader would paste it.
_README_POD = (ROOT / "README.md").read_text().split("### Ray Pods on a real cluster")[1].split("```yaml")[1]
VALID["README's Ray Pods example"] = doc({"ray": yaml.safe_load(_README_POD.split("```")[0])["ray"]})
_README_TRACKING = (ROOT / "README.md").read_text().split("### Tracking")[1].split("```yaml")[1].split("```")[0]
VALID["README's tracking example"] = doc(yaml.safe_load(_README_TRACKING)["spec"])

# (manifest, a field path both error messages must contain)
INVALID = {
    "negative rounds": (doc({"rounds": -1}), "spec.rounds"),
    "zero rounds": (doc({"rounds": 0}), "spec.rounds"),
    "too many rounds": (doc({"rounds": 100001}), "spec.rounds"),
    "rounds not a number": (doc({"rounds": "ten"}), "spec.rounds"),
    "unknown topology": (doc({"topology": {"kind": "tree"}}), "spec.topology.kind"),
    "a ratio for quantisation": (
        doc({"communication": {"compression": {"kind": "quantize", "ratio": 0.1}}}),
        "spec.communication.compression.ratio",
    ),
    "unknown compression": (
        doc({"communication": {"compression": {"kind": "zip"}}}),
        "spec.communication.compression.kind",
    ),
    "sixty-four bits": (
        doc({"communication": {"compression": {"kind": "quantize", "bits": 64}}}),
        "spec.communication.compression.bits",
    ),
    "an empty personal layer name": (
        doc({"nodes": {"role": "train-test"}, "task": {"model": {"personal": [""]}}}),
        "spec.task.model.personal",
    ),
    "every node an attacker": (
        doc({"nodes": {"count": 4, "adversaries": {"count": 4}}}),
        "spec.nodes.adversaries.count",
    ),
    "unknown attack": (
        doc({"nodes": {"adversaries": {"count": 1, "attack": "backdoor"}}}),
        "spec.nodes.adversaries.attack",
    ),
    "labelflip with a scale": (
        doc({"nodes": {"adversaries": {"count": 1, "attack": "labelflip", "scale": 2}}}),
        "spec.nodes.adversaries.scale",
    ),
    "attack scale of zero": (doc({"nodes": {"adversaries": {"count": 1, "scale": 0}}}), "spec.nodes.adversaries.scale"),
    "more stragglers than nodes": (
        doc({"nodes": {"count": 4, "stragglers": {"count": 5}}}),
        "spec.nodes.stragglers.count",
    ),
    "straggler faster than the rest": (
        doc({"nodes": {"stragglers": {"count": 1, "slowdown": 0.5}}}),
        "spec.nodes.stragglers.slowdown",
    ),
    "fedbuff on a hierarchy": (
        doc({"topology": {"kind": "hierarchical", "groups": 2}, "algorithm": {"name": "fedbuff"}}),
        "spec.algorithm.name",
    ),
    "kregular without degree": (doc({"topology": {"kind": "kregular"}}), "spec.topology.degree"),
    "degree too large": (
        doc({"topology": {"kind": "kregular", "degree": 8}, "nodes": {"count": 8}}),
        "spec.topology.degree",
    ),
    "degree times count odd": (
        doc({"topology": {"kind": "kregular", "degree": 3}, "nodes": {"count": 5}}),
        "spec.topology.degree",
    ),
    "edge out of range": (
        doc({"topology": {"kind": "custom", "edges": [[0, 1], [1, 8]]}, "nodes": {"count": 8}}),
        "spec.topology.edges",
    ),
    "negative edge": (
        doc({"topology": {"kind": "custom", "edges": [[0, -1]]}, "nodes": {"count": 2}}),
        "spec.topology.edges",
    ),
    "self loop": (
        doc({"topology": {"kind": "custom", "edges": [[0, 1], [1, 1]]}, "nodes": {"count": 2}}),
        "spec.topology.edges",
    ),
    "custom without edges": (doc({"topology": {"kind": "custom"}}), "spec.topology.edges"),
    "edges on a ring": (doc({"topology": {"kind": "ring", "edges": [[0, 1]]}}), "spec.topology.edges"),
    "too many groups": (
        doc({"topology": {"kind": "hierarchical", "groups": 9}, "nodes": {"count": 8}}),
        "spec.topology.groups",
    ),
    "hierarchical without groups": (doc({"topology": {"kind": "hierarchical"}}), "spec.topology.groups"),
    "ring of one": (doc({**RING, "nodes": {"count": 1}}), "spec.nodes.count"),
    "name too long": (doc(name="a" * (MAX_NAME_LENGTH + 1)), "metadata.name"),
    "name not a DNS label": (doc(name="a.b"), "metadata.name"),
    "unknown spec field": (doc({"rounds": 3, "roundz": 4}), "spec.roundz"),
    "unknown nested field": (doc({"nodes": {"resources": {"tpu": 1}}}), "spec.nodes.resources.tpu"),
    "quorum above count": (doc({"algorithm": {"minNodes": 9}, "nodes": {"count": 8}}), "spec.algorithm.minNodes"),
    "server strategy on a ring": (doc({**RING, "algorithm": {"name": "fedprox"}}), "spec.algorithm.name"),
    "sampling on a ring": (doc({**RING, "algorithm": {"fraction": 0.5}}), "spec.algorithm.fraction"),
    "zero fraction": (doc({"algorithm": {"fraction": 0}}), "spec.algorithm.fraction"),
    "fraction above one": (doc({"algorithm": {"fraction": 1.5}}), "spec.algorithm.fraction"),
    "unknown algorithm": (doc({"algorithm": {"name": "fedsgd"}}), "spec.algorithm.name"),
    "one and a half cpus": (doc({"nodes": {"resources": {"cpu": 1.5}}}), "spec.nodes.resources.cpu"),
    "no resources at all": (doc({"nodes": {"resources": {"cpu": 0, "gpu": 0}}}), "spec.nodes.resources"),
    "role without train": (doc({"nodes": {"role": "eval"}}), "spec.nodes.role"),
    "role twice": (doc({"nodes": {"role": "train-train"}}), "spec.nodes.role"),
    "unknown optimizer": (doc({"task": {"train": {"optimizer": "rmsprop"}}}), "spec.task.train.optimizer"),
    "vectorize as a word YAML reads as true": (
        doc({"task": {"train": {"vectorize": True}}}),
        "spec.task.train.vectorize",
    ),
    "unknown vectorize": (doc({"task": {"train": {"vectorize": "sometimes"}}}), "spec.task.train.vectorize"),
    "zero alpha": (doc({"task": {"partition": {"kind": "dirichlet", "alpha": 0}}}), "spec.task.partition.alpha"),
    "cnn on synthetic": (
        doc({"task": {"model": {"name": "cnn"}, "dataset": {"name": "synthetic"}}}),
        "spec.task.model.name",
    ),
    "test fraction too big": (doc({"task": {"dataset": {"testFraction": 0.95}}}), "spec.task.dataset.testFraction"),
    "negative seed": (doc({"task": {"seed": -1}}), "spec.task.seed"),
    "bad model reference": (doc({"task": {"model": {"name": "pkg.mod"}}}), "spec.task.model.name"),
    "lowercase placement": (doc({"placement": {"strategy": "pack"}}), "spec.placement.strategy"),
    "zero round timeout": (
        doc({"faultTolerance": {"roundTimeoutSeconds": 0}}),
        "spec.faultTolerance.roundTimeoutSeconds",
    ),
    "duplicate worker groups": (
        doc({"ray": {"workerGroups": [{"name": "w"}, {"name": "w"}]}}),
        "spec.ray.workerGroups[1]",
    ),
    "worker group not a DNS label": (
        doc({"ray": {"workerGroups": [{"name": "GPU"}]}}),
        "spec.ray.workerGroups[0].name",
    ),
    "SidecarMode": (doc({"ray": {"submissionMode": "SidecarMode"}}), "spec.ray.submissionMode"),
    "suspend not a boolean": (doc({"suspend": "yes"}), "spec.suspend"),
    "storage of an unknown scheme": (doc({"storage": {"uri": "gs://bucket/x"}}), "spec.storage.uri"),
    "storage on a claim and in s3": (
        doc({"storage": {"pvc": {"size": "1Gi"}, "uri": "s3://bucket/x"}}),
        "spec.storage",
    ),
    "a storage secret without a uri": (doc({"storage": {"secretRef": {"name": "s3"}}}), "spec.storage.secretRef"),
    "checkpoints outside the run folder": (doc({"checkpoint": {"path": "../../.."}}), "spec.checkpoint.path"),
    "checkpoints at an absolute path": (doc({"checkpoint": {"path": "/etc/cron.d"}}), "spec.checkpoint.path"),
    "an AppArmor annotation that unconfines the head": (
        doc(
            {
                "ray": {
                    "head": {"annotations": {"container.apparmor.security.beta.kubernetes.io/ray-head": "unconfined"}}
                }
            }
        ),
        "spec.ray.head.annotations",
    ),
    "a synthetic class table of 24 GB": (
        doc({"nodes": {"count": 100_000}, "task": {"dataset": {"name": "synthetic", "classes": 10_000}}}),
        "spec.nodes.count",
    ),
    "one node's synthetic data of 40 GB": (
        doc({"task": {"dataset": {"name": "synthetic", "samplesPerNode": 10**6, "features": 10**4}}}),
        "spec.task.dataset.samplesPerNode",
    ),
    "an existing claim with a size": (
        doc({"storage": {"pvc": {"claimName": "c", "size": "1Gi"}}}),
        "spec.storage.pvc",
    ),
    "a claim size that is no quantity": (doc({"storage": {"pvc": {"size": "big"}}}), "spec.storage.pvc.size"),
    "a hostPath volume": (
        doc(group(volumes=[*SCRATCH, {"name": "host", "hostPath": {"path": "/"}}])),
        "spec.ray.workerGroups[0].volumes[1]",
    ),
    "a hostPath volume on the head": (
        doc({"ray": {"head": {"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}}}),
        "spec.ray.head.volumes[0]",
    ),
    "a volume of no kind": (doc(group(volumes=[{"name": "v"}])), "spec.ray.workerGroups[0].volumes[0]"),
    "a volume of two kinds": (
        doc(group(volumes=[{"name": "v", "emptyDir": {}, "secret": {"secretName": "s"}}])),
        "spec.ray.workerGroups[0].volumes[0]",
    ),
    "a volume named as KubeRay's": (
        doc(group(volumes=[{"name": "shared-mem", "emptyDir": {}}])),
        "spec.ray.workerGroups[0].volumes[0].name",
    ),
    "a claim without a name": (
        doc(group(volumes=[{"name": "c", "persistentVolumeClaim": {}}])),
        "spec.ray.workerGroups[0].volumes[0].persistentVolumeClaim.claimName",
    ),
    "a ConfigMap item above its mount": (
        doc(group(volumes=[{"name": "c", "configMap": {"name": "m", "items": [{"key": "k", "path": "a/../../x"}]}}])),
        "spec.ray.workerGroups[0].volumes[0].configMap.items[0].path",
    ),
    "a memory medium misspelt": (
        doc(group(volumes=[{"name": "e", "emptyDir": {"medium": "memory"}}])),
        "spec.ray.workerGroups[0].volumes[0].emptyDir.medium",
    ),
    "a mount of no volume": (
        doc(group(volumes=SCRATCH, volumeMounts=[{"name": "data", "mountPath": "/data"}])),
        "spec.ray.workerGroups[0].volumeMounts",
    ),
    "a relative mount path": (
        doc(group(volumes=SCRATCH, volumeMounts=[{"name": "scratch", "mountPath": "scratch"}])),
        "spec.ray.workerGroups[0].volumeMounts[0].mountPath",
    ),
    "a mount path used twice": (
        doc(group(volumes=SCRATCH, volumeMounts=[{"name": "scratch", "mountPath": "/s"}] * 2)),
        "spec.ray.workerGroups[0].volumeMounts[1]",
    ),
    "a subPath above its volume": (
        doc(group(volumes=SCRATCH, volumeMounts=[{"name": "scratch", "mountPath": "/s", "subPath": ".."}])),
        "spec.ray.workerGroups[0].volumeMounts[0].subPath",
    ),
    "a toleration of Exists with a value": (
        doc(group(tolerations=[{"key": "k", "operator": "Exists", "value": "v"}])),
        "spec.ray.workerGroups[0].tolerations[0].value",
    ),
    "a toleration of no key that is not Exists": (
        doc(group(tolerations=[{"value": "v"}])),
        "spec.ray.workerGroups[0].tolerations[0].operator",
    ),
    "tolerationSeconds on NoSchedule": (
        doc(group(tolerations=[{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}])),
        "spec.ray.workerGroups[0].tolerations[0].tolerationSeconds",
    ),
    "a taint key name of 64 characters": (
        doc(group(tolerations=[{"key": "example.com/" + "k" * 64, "operator": "Exists"}])),
        "spec.ray.workerGroups[0].tolerations[0].key",
    ),
    "an unknown taint effect": (
        doc(group(tolerations=[{"key": "k", "effect": "NoRun"}])),
        "spec.ray.workerGroups[0].tolerations[0].effect",
    ),
    "a label of KubeRay's": (doc({"ray": {"head": {"labels": {"ray.io/cluster": "x"}}}}), "spec.ray.head.labels"),
    "an annotation of Red's": (
        doc(group(annotations={"red.dev/spec-hash": "x"})),
        "spec.ray.workerGroups[0].annotations",
    ),
    "a label key with a space": (doc({"ray": {"head": {"labels": {"my team": "x"}}}}), "spec.ray.head.labels"),
    "a label name of 64 characters": (
        doc({"ray": {"head": {"labels": {"example.com/" + "a" * 64: "x"}}}}),
        "spec.ray.head.labels",
    ),
    "a nodeSelector value that is no label value": (
        doc(group(nodeSelector={"pool": "a b"})),
        "spec.ray.workerGroups[0].nodeSelector",
    ),
    "a pull secret as a bare string": (
        doc(group(imagePullSecrets=["regcred"])),
        "spec.ray.workerGroups[0].imagePullSecrets[0]",
    ),
    "a pull secret twice": (
        doc(group(imagePullSecrets=[{"name": "a"}, {"name": "a"}])),
        "spec.ray.workerGroups[0].imagePullSecrets[1]",
    ),
    "a priority class in capitals": (
        doc(group(priorityClassName="High")),
        "spec.ray.workerGroups[0].priorityClassName",
    ),
    "an affinity misspelt": (doc(group(affinity={"nodeAfinity": {}})), "spec.ray.workerGroups[0].affinity.nodeAfinity"),
    "service account annotations not strings": (
        doc(group(serviceAccountAnnotations={"eks.amazonaws.com/role-arn": 7})),
        "spec.ray.workerGroups[0].serviceAccountAnnotations",
    ),
    "mlflow without a uri": (doc({"tracking": {"mlflow": {"experiment": "e"}}}), "spec.tracking.mlflow.uri"),
    "mlflow over ftp": (doc({"tracking": {"mlflow": {"uri": "ftp://mlflow:21"}}}), "spec.tracking.mlflow.uri"),
    "mlflow in a file store": (doc({"tracking": {"mlflow": {"uri": "file:/red/mlruns"}}}), "spec.tracking.mlflow.uri"),
    "mlflow uri without a host": (doc({"tracking": {"mlflow": {"uri": "http://"}}}), "spec.tracking.mlflow.uri"),
    "a blank mlflow experiment": (
        doc({"tracking": {"mlflow": {"uri": "http://mlflow:5000", "experiment": " "}}}),
        "spec.tracking.mlflow.experiment",
    ),
    "a sweep without params": (doc({"sweep": {"samples": 4}}), "spec.sweep.params"),
    "a sweep by an unknown scheduler": (
        doc({"sweep": {"params": ["task.train.lr=uniform:0.01:0.1"], "scheduler": "pbt"}}),
        "spec.sweep.scheduler",
    ),
    "no serve replica": (doc({"serve": {"replicas": 0}}), "spec.serve.replicas"),
    "a serve replica of no cpu": (doc({"serve": {"cpu": 0}}), "spec.serve.cpu"),
    "a serve replica of one and a half GPUs": (
        doc({"serve": {"gpu": 1.5}, "ray": {"workerGroups": [{"name": "gpu", "gpu": 2}]}}),
        "spec.serve.gpu",
    ),
    "a serve field misspelt": (doc({"serve": {"replica": 2}}), "spec.serve.replica"),
    "a GPU replica with no GPU Pod": (
        doc({"serve": {"gpu": 1}, "ray": {"workerGroups": [{"name": "c"}, {"name": "off", "gpu": 1, "replicas": 0}]}}),
        "spec.serve.gpu",
    ),
    # Once known gaps: each side now checks them.
    "bad strategy option": (
        doc({"algorithm": {"name": "fedprox", "options": {"mu": -1}}}),
        "spec.algorithm.options.mu",
    ),
    "an option of another strategy": (
        doc({"algorithm": {"name": "fedavg", "options": {"mu": 0.1}}}),
        "spec.algorithm.options.mu",
    ),
    "compression under privacy": (
        doc({"communication": {"compression": {"kind": "topk"}}, "algorithm": {"privacy": {"noiseMultiplier": 1}}}),
        "spec.communication.compression.kind",
    ),
    "fedbuff staleness of an unknown kind": (
        doc({"algorithm": {"name": "fedbuff", "options": {"staleness": "linear"}}}),
        "spec.algorithm.options.staleness",
    ),
    "malformed cpu quantity": (doc({"ray": {"head": {"cpu": "two"}}}), "spec.ray.head.cpu"),
    "affinity term without an operator": (
        doc(
            group(
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool"}]}]
                        }
                    }
                }
            )
        ),
        "spec.ray.workerGroups[0].affinity.nodeAffinity",
    ),  # fmt: skip
    "personal layers without the test role": (doc({"task": {"model": {"personal": ["3"]}}}), "spec.task.model"),
    "local norm on a ring": (
        doc({"topology": {"kind": "ring"}, "nodes": {"role": "train-test"}, "task": {"model": {"localNorm": True}}}),
        "spec.task.model",
    ),
    "more labels per node than synthetic classes": (
        doc({"task": {"dataset": {"name": "synthetic", "classes": 3}, "partition": {"kind": "labels", "labels": 4}}}),
        "spec.task.partition.labels",
    ),
    "an option within another strategy's bounds": (  # multikrum takes m: 0 (n - f), krum needs m >= 1
        doc({"nodes": {"count": 10}, "algorithm": {"name": "krum", "options": {"m": 0}}}),
        "spec.algorithm.options.m",
    ),
    "an adaptive server step of 0": (doc({"algorithm": {"name": "fedadam", "options": {"tau": 0}}}), "options.tau"),
    "a fractional cpu as a YAML number": (doc({"ray": {"head": {"cpu": 0.5}}}), "spec.ray.head.cpu"),
    # Bounds: no value can run the operator or the API server out of memory or range.
    "a 40 KB environment variable": (
        doc({"ray": {"runtimeEnv": {"env_vars": {"A": "x" * 40_000}}}}),
        "spec.ray.runtimeEnv.env_vars",
    ),
    "a runtimeEnv field Ray's RayCluster has no use for": (
        doc({"ray": {"runtimeEnv": {"container": {"image": "x"}}}}),
        "spec.ray.runtimeEnv.container",
    ),
    "an infinite cpu quantity": (doc({"ray": {"head": {"cpu": "1e400"}}}), "spec.ray.head.cpu"),
    "more cpu than a node has": (doc({"ray": {"workerGroups": [{"name": "w", "cpu": "5000"}]}}), "spec.ray"),
    "a negative memory quantity": (doc({"ray": {"head": {"memory": "-1Gi"}}}), "spec.ray.head.memory"),
    "a learning rate of 1e300": (doc({"task": {"train": {"lr": 1e300}}}), "spec.task.train.lr"),
    "a billion-unit hidden layer": (doc({"task": {"model": {"hidden": [10**9]}}}), "spec.task.model.hidden"),
    "a very long image name": (doc({"ray": {"image": "x" * 1000}}), "spec.ray.image"),
    f"{MAX_WORKER_GROUPS + 1} worker groups": (
        doc({"ray": {"workerGroups": [{"name": f"g{i}"} for i in range(MAX_WORKER_GROUPS + 1)]}}),
        "spec.ray.workerGroups",
    ),
}

# Rules only one side can check, listed so that a change on either side shows up here.
KNOWN_GAPS = {
    # CEL cannot walk a graph: the spec model (driver, operator) reports it; the operator marks the
    # Federation Failed/InvalidSpec.
    "disconnected custom graph": (
        doc({"topology": {"kind": "custom", "edges": [[0, 1], [2, 3]]}, "nodes": {"count": 4}}),
        "spec model only",
    ),
    # Each strategy's own bounds (the schema has the loosest of all strategies that take an option) and the
    # rules over several options and the nodes per round.
    # The API server drops a null (as if the field were unset); `red validate` refuses it, as it always has.
    "a null role": (doc({"nodes": {"role": None}}), "spec model only"),
    "bulyan with fewer than 4f+3 nodes": (
        doc({"nodes": {"count": 10}, "algorithm": {"name": "bulyan", "options": {"f": 2}}}),
        "spec model only",
    ),
}


def spec_model(manifest) -> str | None:
    try:
        parse_manifest(copy.deepcopy(manifest))
    except SpecError as err:
        return str(err)
    return None


def api_server(kube, namespace, manifest) -> str | None:
    proc = kube.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-",
        input=json.dumps(manifest), namespace=namespace, check=False,
    )  # fmt: skip
    return None if proc.returncode == 0 else proc.stderr + proc.stdout


@pytest.mark.parametrize("case", sorted(VALID))
def test_valid_for_both(kube, crd, namespace, case):
    manifest = VALID[case]
    assert spec_model(manifest) is None
    assert api_server(kube, namespace, manifest) is None


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_for_both(kube, crd, namespace, case):
    manifest, field = INVALID[case]
    model_error, server_error = spec_model(manifest), api_server(kube, namespace, manifest)
    assert model_error is not None, "spec.py accepted it"
    assert server_error is not None, "the API server accepted it"
    assert field in model_error, model_error
    assert field in server_error, server_error


@pytest.mark.parametrize("case", sorted(KNOWN_GAPS))
def test_known_gaps_stay_known(kube, crd, namespace, case):
    manifest, side = KNOWN_GAPS[case]
    model_ok, server_ok = spec_model(manifest) is None, api_server(kube, namespace, manifest) is None
    assert (model_ok, server_ok) == ((False, True) if side == "spec model only" else (True, False))


def test_nothing_was_created(kube, crd, namespace):
    for case in ("negative rounds", "name too long"):
        assert api_server(kube, namespace, INVALID[case][0]) is not None
        proc = kube.kubectl("apply", "--validate=strict", "-f", "-", input=json.dumps(INVALID[case][0]),
                            namespace=namespace, check=False)  # fmt: skip
        assert proc.returncode != 0
    assert kube.kubectl_json("get", "federations", namespace=namespace)["items"] == []
