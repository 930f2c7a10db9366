"""The Pod fields of `ray.head` and `ray.workerGroups[]`, declared as the API server would check the Pods.

These values end up in Pods that KubeRay creates; a Pod the API server refuses surfaces only as an Event
on the RayCluster, long after the Federation was accepted. So each rule the Pod would break (a label key,
a toleration's operator and value, a volume's source) is declared here, with the field named, and checked
before any work starts. Volumes come from an allow-list: claims, ConfigMaps, Secrets and emptyDirs, never a
hostPath, which would let a Federation's Pods reach the node's files. Affinity is Kubernetes' own type
(k8s/affinity.json, from the Kubernetes OpenAPI), bounded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from red_api.kinds import (
    ABSENT,
    Bool,
    Checker,
    Declared,
    Int,
    K8s,
    ListOf,
    MapOf,
    Obj,
    Quantity,
    Rule,
    Str,
    Word,
    api,
)
from red_api.names import DNS_LABEL, STORAGE_VOLUME, SUBDOMAIN

VOLUME_SOURCES = ("persistentVolumeClaim", "configMap", "secret", "emptyDir")
TOLERATION_OPERATORS = ("Equal", "Exists")
TOLERATION_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")
EMPTYDIR_MEDIA = ("", "Memory")
# KubeRay and Red steer their Pods with labels and annotations under these prefixes (ray.io/cluster,
# ray.io/overwrite-container-cmd, red.dev/federation): a user's would change what they mean.
RESERVED_PREFIXES = ("ray.io/", "red.dev/")
# Annotations that loosen a Pod's confinement below what POD_SECURITY sets (an AppArmor or seccomp profile of
# the tenant's choosing, "unconfined" included): never on a Federation's Pods, whatever the chart allows.
WEAKENING_PREFIXES = (
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
)
# Volumes KubeRay adds to a Ray Pod itself (/dev/shm for the object store, the Ray token), and the one
# Red mounts its storage claim from.
RESERVED_VOLUMES = ("shared-mem", "ray-token", STORAGE_VOLUME)
MAX_VOLUMES = 32
MAX_ENTRIES = 64  # map entries, tolerations, pull secrets, projected items
# What makes every Pod of a Federation pass Pod Security `restricted`. The runtime image runs as its `ray`
# user (uid 1000, group 100, images/runtime.Dockerfile); naming the uid lets the kubelet verify runAsNonRoot.
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 100,
    "fsGroup": 100,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}

_SUB = SUBDOMAIN.pattern[1:-1]
# A label or annotation key: an optional DNS subdomain prefix and a name of at most 63 characters.
QUALIFIED_NAME = re.compile(rf"^({_SUB}/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# Paths with no ".." component, so that nothing reaches above its volume (RE2, which the CRD's patterns are
# written in, has no lookahead, hence a component spelled out: anything but "..").
_PART = r"(\.?[^/.][^/]*|\.\.[^/]+|\.)"
RELATIVE_PATH = rf"^{_PART}(/{_PART})*$"
ABSOLUTE_PATH = rf"^(/{_PART})+/?$"
_KEY_CEL = (
    f"k.matches(r'{QUALIFIED_NAME.pattern}') && (k.contains('/') ? k.split('/')[0].size() <= 253 && "
    "k.split('/')[1].size() <= 63 : k.size() <= 63)"
)
KEY_REASON = "is not a valid key: an optional DNS prefix and '/', then a name of at most 63 characters"
RESERVED_REASON = f"keys under {' and '.join(RESERVED_PREFIXES)} are KubeRay's and Red's own"
WEAKENING_REASON = "AppArmor and seccomp annotations would loosen the Pods' confinement (Red sets RuntimeDefault)"


def qualified(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return bool(QUALIFIED_NAME.match(key)) and len(name) <= 63 and len(prefix) <= 253


def _key(key: str) -> str | None:
    return None if qualified(key) else KEY_REASON


def _unreserved_key(key: str) -> str | None:
    if not qualified(key):
        return KEY_REASON
    return RESERVED_REASON if key.startswith(RESERVED_PREFIXES) else None


def _pod_annotation_key(key: str) -> str | None:
    return _unreserved_key(key) or (WEAKENING_REASON if key.startswith(WEAKENING_PREFIXES) else None)


def _string_map(
    doc: str,
    label_values: bool = False,
    reserved: bool = False,
    value_length: int = 4096,
    refused: tuple[str, ...] = (),
) -> MapOf:
    value = (
        Str(
            max_length=63,
            pattern=LABEL_VALUE,
            reason="is not a valid label value: at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at each end",
        )
        if label_values
        else Str(max_length=value_length)
    )
    cel = f"self.all(k, {_KEY_CEL})"
    message = "keys must be an optional DNS prefix and '/', then a name of at most 63 characters"
    if reserved:
        cel += " && self.all(k, " + " && ".join(f"!k.startsWith('{p}')" for p in RESERVED_PREFIXES) + ")"
        message += f"; {RESERVED_REASON}"
    if refused:
        cel += " && self.all(k, " + " && ".join(f"!k.startsWith('{p}')" for p in refused) + ")"
        message += f"; {WEAKENING_REASON}"
    return MapOf(
        value=value,
        max_properties=MAX_ENTRIES,
        key=_pod_annotation_key if refused else _unreserved_key if reserved else _key,
        key_cel=cel,
        key_message=message,
        shape="must be a mapping of strings to strings",
        doc=doc,
    )


def _subdomain(what: str, default: Any = "") -> Str:
    return Str(
        default, max_length=253, pattern=SUBDOMAIN.pattern, reason=f"must name a {what} (a lowercase DNS subdomain)"
    )


@dataclass(frozen=True)
class Toleration(Declared):
    key: str = api(
        Str(
            "",
            max_length=317,
            pattern=f"^$|{QUALIFIED_NAME.pattern}",
            reason="is not a valid taint key",
            problem=lambda k: None if not k or qualified(k) else "is not a valid taint key",
            cel=(
                (
                    "self.contains('/') ? self.split('/')[0].size() <= 253 && self.split('/')[1].size() <= 63 : "
                    "self.size() <= 63",
                    "must be an optional DNS prefix and '/', then a name of at most 63 characters",
                ),
            ),
        )
    )
    operator: str = api(Word("Equal", choices=TOLERATION_OPERATORS))
    value: str = api(Str("", max_length=63, pattern=LABEL_VALUE, reason="is not a valid taint value"))
    effect: str = api(Word("", choices=TOLERATION_EFFECTS))
    tolerationSeconds: int | None = api(Int(ABSENT, format="int64"))

    RULES = (
        Rule(
            "operator",
            "must be Exists when key is empty (to tolerate every taint)",
            lambda t, raw: (
                None
                if t.key or t.operator == "Exists"
                else (t.operator, "must be Exists when key is empty (to tolerate every taint)")
            ),
            cel="(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
        ),
        Rule(
            "value",
            "must be empty when operator is Exists",
            lambda t, raw: (
                (t.value, "must be empty when operator is Exists") if t.operator == "Exists" and t.value else None
            ),
            cel="!(has(self.operator) && self.operator == 'Exists') || !has(self.value) || self.value == ''",
        ),
        Rule(
            "tolerationSeconds",
            "applies only to effect NoExecute",
            lambda t, raw: (
                (t.tolerationSeconds, "applies only to effect NoExecute")
                if t.tolerationSeconds is not None and t.effect != "NoExecute"
                else None
            ),
            cel="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
        ),
    )


@dataclass(frozen=True)
class SecretName(Declared):
    name: str = api(_subdomain("Secret"))


class PullSecrets(ListOf):
    """imagePullSecrets: [{name}], kept as the names."""

    def check(self, c: Checker, value: Any, path: str) -> Any:
        return tuple(ref.name for ref in super().check(c, value, path) or ())


@dataclass(frozen=True)
class Claim(Declared):
    claimName: str = api(_subdomain("PersistentVolumeClaim"))
    readOnly: bool = api(Bool(False))


@dataclass(frozen=True)
class KeyToPath(Declared):
    key: str = api(Str("", max_length=253, min_length=1, reason="must name a key of the ConfigMap or Secret"))
    path: str = api(
        Str(
            "",
            max_length=1024,
            min_length=1,
            pattern=RELATIVE_PATH,
            reason="must be a relative path without '..'",
            doc="where the key lands, below the mount: a relative path without '..'",
        )
    )
    mode: int | None = api(Int(ABSENT, minimum=0, maximum=0o777))


_ITEMS = ListOf(Obj(KeyToPath, plain=True, required=("key", "path")), max_items=MAX_ENTRIES, default=ABSENT)


@dataclass(frozen=True)
class ConfigMapSource(Declared):
    name: str = api(_subdomain("ConfigMap"))
    items: tuple | None = api(_ITEMS)
    defaultMode: int | None = api(Int(ABSENT, minimum=0, maximum=0o777))
    optional: bool | None = api(Bool(ABSENT))


@dataclass(frozen=True)
class SecretSource(Declared):
    secretName: str = api(_subdomain("Secret"))
    items: tuple | None = api(_ITEMS)
    defaultMode: int | None = api(Int(ABSENT, minimum=0, maximum=0o777))
    optional: bool | None = api(Bool(ABSENT))


@dataclass(frozen=True)
class EmptyDir(Declared):
    medium: str = api(Word("", choices=EMPTYDIR_MEDIA))
    sizeLimit: str | None = api(Quantity(ABSENT, maximum="1Pi"))


def _one_source(volume: Volume, raw: Mapping[str, Any]) -> tuple[Any, str] | None:
    given = [k for k in VOLUME_SOURCES if raw.get(k) is not None]  # the API server prunes a null
    others = [k for k in raw if k != "name" and k not in VOLUME_SOURCES]
    if len(given) != 1 and not others:
        return dict(raw), f"must have exactly one of {', '.join(VOLUME_SOURCES)}"
    return None


@dataclass(frozen=True)
class Volume(Declared):
    name: str = api(
        Str(
            "",
            max_length=63,
            pattern=DNS_LABEL.pattern,
            reason="must be a DNS label of at most 63 characters",
            problem=lambda n: (
                f"is a volume KubeRay or Red adds itself ({', '.join(RESERVED_VOLUMES)})"
                if n in RESERVED_VOLUMES
                else None
            ),
            cel=((f"!(self in {list(RESERVED_VOLUMES)})", "is a volume KubeRay or Red adds itself"),),
        )
    )
    persistentVolumeClaim: Mapping | None = api(Obj(Claim, default=None, plain=True, required=("claimName",)))
    configMap: Mapping | None = api(Obj(ConfigMapSource, default=None, plain=True, required=("name",)))
    secret: Mapping | None = api(Obj(SecretSource, default=None, plain=True, required=("secretName",)))
    emptyDir: Mapping | None = api(Obj(EmptyDir, default=None, plain=True))

    RULES = (
        Rule(
            "",
            f"must have exactly one of {', '.join(VOLUME_SOURCES)} (hostPath and other kinds are not allowed)",
            _one_source,
            cel="[" + ", ".join(f"has(self.{k})" for k in VOLUME_SOURCES) + "].filter(x, x).size() == 1",
        ),
    )

    @staticmethod
    def refuse_unknown(key: str) -> str:
        return f"{key} volumes are not allowed: a Ray Pod takes {', '.join(VOLUME_SOURCES)} volumes only"


@dataclass(frozen=True)
class VolumeMount(Declared):
    name: str = api(Str("", max_length=63))
    mountPath: str = api(
        Str(
            "",
            max_length=1024,
            pattern=ABSOLUTE_PATH,
            reason="must be an absolute path without '..'",
            doc="an absolute path without '..'",
        )
    )
    readOnly: bool = api(Bool(False))
    subPath: str = api(
        Str(
            "",
            max_length=1024,
            pattern=f"^$|{RELATIVE_PATH}",
            reason="must be a relative path without '..'",
            doc="a path inside the volume: a relative path without '..'",
        )
    )


AFFINITY = json.loads(resources.files("red_api").joinpath("k8s/affinity.json").read_text())


def _mounts_name_volumes(pod: Any, raw: Mapping[str, Any]) -> tuple[Any, str] | None:
    volumes = raw.get("volumes") if isinstance(raw.get("volumes"), list) else []
    names = {v.get("name") for v in volumes if isinstance(v, Mapping) and isinstance(v.get("name"), str)}
    for i, mount in enumerate(pod.volumeMounts or ()):
        if mount.get("name") not in names:
            known = ", ".join(sorted(n for n in names if isinstance(n, str))) or "none"
            return f"[{i}].name", mount.get("name"), f"names no volume of this group (volumes: {known})"
    return None


@dataclass(frozen=True, kw_only=True)
class PodOptions(Declared):
    """Where and how the Pods of the head or of one worker group run: what real clusters need of a Pod.

    Kubernetes-shaped values (a toleration, a volume, an affinity) are kept as the plain mappings the
    manifest gave, checked and passed through to the Pod. `tolerations` None: the default (a group
    with GPUs tolerates the `nvidia.com/gpu` taint); a list, even an empty one, replaces it.
    """

    nodeSelector: Mapping[str, str] = api(_string_map("the Pods' nodeSelector.", label_values=True))
    tolerations: tuple[Mapping[str, Any], ...] | None = api(
        ListOf(
            Obj(Toleration, plain=True),
            max_items=MAX_ENTRIES,
            default=ABSENT,
            doc="the Pods' tolerations; unset, a group with GPUs tolerates nvidia.com/gpu:NoSchedule.",
        )
    )
    affinity: Mapping[str, Any] = api(
        K8s(schema=AFFINITY, doc="the Pods' affinity (Kubernetes' nodeAffinity, podAffinity, podAntiAffinity).")
    )
    priorityClassName: str = api(
        Str(
            "",
            max_length=253,
            pattern=f"^$|{SUBDOMAIN.pattern}",
            reason="must be a PriorityClass name (a lowercase DNS subdomain)",
        )
    )
    labels: Mapping[str, str] = api(
        _string_map("labels on the Pods (ray.io/ and red.dev/ keys are reserved).", label_values=True, reserved=True)
    )
    annotations: Mapping[str, str] = api(
        _string_map(
            "annotations on the Pods (ray.io/ and red.dev/ keys are reserved; AppArmor and seccomp ones refused).",
            reserved=True,
            refused=WEAKENING_PREFIXES,
        )
    )
    imagePullSecrets: tuple[str, ...] = api(
        PullSecrets(
            Obj(SecretName, required=("name",)),
            max_items=MAX_ENTRIES,
            default=(),
            list_type="map",
            map_keys=("name",),
            unique="name",
            duplicate="is listed twice",
        )
    )
    serviceAccountAnnotations: Mapping[str, str] = api(
        _string_map("annotations on the Pods' ServiceAccount, e.g. for workload identity.")
    )
    volumes: tuple[Mapping[str, Any], ...] = api(
        ListOf(
            Obj(Volume, plain=True, required=("name",)),
            max_items=MAX_VOLUMES,
            default=(),
            list_type="map",
            map_keys=("name",),
            unique="name",
            duplicate="is used by two volumes",
            doc="persistentVolumeClaim, configMap, secret and emptyDir volumes; no other kind (hostPath) is allowed.",
        )
    )
    volumeMounts: tuple[Mapping[str, Any], ...] = api(
        ListOf(
            Obj(VolumeMount, plain=True, required=("name", "mountPath")),
            max_items=MAX_VOLUMES,
            default=(),
            list_type="map",
            map_keys=("mountPath",),
            unique="mountPath",
            duplicate="is used by two volumeMounts",
            doc="mounts of this group's volumes into its Ray container.",
        )
    )

    RULES = (
        Rule(
            "volumeMounts",
            "every volumeMounts[].name must name one of this group's volumes",
            _mounts_name_volumes,
            cel="!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && "
            "self.volumes.exists(v, v.name == m.name))",
        ),
    )
