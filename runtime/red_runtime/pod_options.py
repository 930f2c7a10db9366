"""The Pod fields of `ray.head` and `ray.workerGroups[]`, checked as the API server would check the Pods.

These values end up in Pods that KubeRay creates; a Pod the API server refuses surfaces only as an Event
on the RayCluster, long after the Federation was accepted. So each rule the Pod would break (a label key,
a toleration's operator and value, a volume's source) is checked here, with the field named, before any
work starts. Volumes come from an allow-list: claims, ConfigMaps, Secrets and emptyDirs, never a hostPath,
which would let a Federation's Pods reach the node's files. The CRD expresses the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

POD_FIELDS = (
    "nodeSelector",
    "tolerations",
    "affinity",
    "priorityClassName",
    "labels",
    "annotations",
    "imagePullSecrets",
    "serviceAccountAnnotations",
    "volumes",
    "volumeMounts",
)
VOLUME_SOURCES = ("persistentVolumeClaim", "configMap", "secret", "emptyDir")
AFFINITY_KINDS = ("nodeAffinity", "podAffinity", "podAntiAffinity")
TOLERATION_OPERATORS = ("Equal", "Exists")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
EMPTYDIR_MEDIA = ("", "Memory")
# KubeRay and Red steer their Pods with labels and annotations under these prefixes (ray.io/cluster,
# ray.io/overwrite-container-cmd, red.dev/federation): a user's would change what they mean.
RESERVED_PREFIXES = ("ray.io/", "red.dev/")
# Volumes KubeRay adds to a Ray Pod itself (/dev/shm for the object store, the Ray token), and the one
# Red mounts its storage claim from (red_runtime.artifacts.STORAGE_VOLUME).
STORAGE_VOLUME = "red-storage"
RESERVED_VOLUMES = ("shared-mem", "ray-token", STORAGE_VOLUME)
MAX_VOLUMES = 32
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
MAX_ENTRIES = 64  # map entries, tolerations, pull secrets, projected items

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
SUBDOMAIN = re.compile(rf"^{_SUBDOMAIN}$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A label or annotation key: an optional DNS subdomain prefix and a name of at most 63 characters.
QUALIFIED_NAME = re.compile(rf"^({_SUBDOMAIN}/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Paths with no ".." component, so that nothing reaches above its volume (what the CRD's patterns say too;
# RE2, which they are written in, has no lookahead, hence a component spelled out: anything but "..").
_PART = r"(\.?[^/.][^/]*|\.\.[^/]+|\.)"
RELATIVE_PATH = re.compile(rf"^{_PART}(/{_PART})*$")
ABSOLUTE_PATH = re.compile(rf"^(/{_PART})+/?$")


class Checker(Protocol):
    """What spec._Checker offers: problems recorded with their path, unknown fields refused or ignored."""

    def fail(self, path: str, value: Any, reason: str) -> None: ...

    def unknown(self, data: Mapping, path: str, known: tuple[str, ...]) -> None: ...

    def string(self, data: Mapping, key: str, path: str, default: str) -> str: ...

    def boolean(self, data: Mapping, key: str, path: str, default: bool) -> bool: ...

    def integer(self, data: Mapping, key: str, path: str, default: Any, minimum=None, maximum=None) -> int: ...

    def choice(self, data: Mapping, key: str, path: str, default: str, choices: tuple[str, ...]) -> str: ...

    def quantity(self, data: Mapping, key: str, path: str, default: str) -> str: ...


def pod_options(c: Checker, raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The PodOptions fields of one head or worker group mapping, as keyword arguments."""
    declared = raw.get("volumes") if isinstance(raw.get("volumes"), list) else []
    names = {v.get("name") for v in declared if isinstance(v, Mapping)}
    return {
        "nodeSelector": _string_map(c, raw, "nodeSelector", path, label_values=True),
        "tolerations": _tolerations(c, raw.get("tolerations"), f"{path}.tolerations"),
        "affinity": _affinity(c, raw.get("affinity"), f"{path}.affinity"),
        "priorityClassName": _priority_class(c, raw, path),
        "labels": _string_map(c, raw, "labels", path, label_values=True, reserved=True),
        "annotations": _string_map(c, raw, "annotations", path, reserved=True),
        "imagePullSecrets": _pull_secrets(c, raw.get("imagePullSecrets"), f"{path}.imagePullSecrets"),
        "serviceAccountAnnotations": _string_map(c, raw, "serviceAccountAnnotations", path),
        "volumes": _volumes(c, raw.get("volumes"), f"{path}.volumes"),
        "volumeMounts": _mounts(c, raw.get("volumeMounts"), f"{path}.volumeMounts", names),
    }


def _list(c: Checker, value: Any, path: str, limit: int) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        c.fail(path, value, "must be a list")
        return []
    if len(value) > limit:
        c.fail(path, f"{len(value)} entries", f"must have at most {limit}")
        return []
    return value


def _mapping(c: Checker, value: Any, path: str, known: tuple[str, ...]) -> dict | None:
    if not isinstance(value, Mapping):
        c.fail(path, value, "must be a mapping")
        return None
    c.unknown(value, path, known)
    return dict(value)


def _string_map(
    c: Checker, raw: Mapping, key: str, path: str, label_values: bool = False, reserved: bool = False
) -> dict[str, str]:
    value = raw.get(key)
    p = f"{path}.{key}"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        c.fail(p, value, "must be a mapping of strings to strings")
        return {}
    if len(value) > MAX_ENTRIES:
        c.fail(p, f"{len(value)} entries", f"must have at most {MAX_ENTRIES}")
        return {}
    out = {}
    for k, v in value.items():
        kp = f"{p}[{k}]"  # as the API server names a map entry
        if not isinstance(k, str) or not _qualified(k):
            c.fail(kp, k, "is not a valid key: an optional DNS prefix and '/', then a name of at most 63 characters")
        elif reserved and k.startswith(RESERVED_PREFIXES):
            c.fail(kp, k, f"keys under {' and '.join(RESERVED_PREFIXES)} are KubeRay's and Red's own")
        elif not isinstance(v, str):
            c.fail(kp, v, "must be a string")
        elif label_values and (len(v) > 63 or not LABEL_VALUE.match(v)):
            c.fail(kp, v, "is not a valid label value: at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at each end")
        else:
            out[k] = v
    return out


def _qualified(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return bool(QUALIFIED_NAME.match(key)) and len(name) <= 63 and len(prefix) <= 253


def _tolerations(c: Checker, value: Any, path: str) -> tuple[dict[str, Any], ...] | None:
    if value is None:
        return None
    out = []
    for i, item in enumerate(_list(c, value, path, MAX_ENTRIES)):
        tp = f"{path}[{i}]"
        t = _mapping(c, item, tp, ("key", "operator", "value", "effect", "tolerationSeconds"))
        if t is None:
            continue
        key = c.string(t, "key", tp, "")
        operator = c.choice(t, "operator", tp, "Equal", TOLERATION_OPERATORS)
        val = c.string(t, "value", tp, "")
        # An empty effect tolerates every effect of the key's taints.
        effect = "" if t.get("effect") in (None, "") else c.choice(t, "effect", tp, "", TOLERATION_EFFECTS)
        if key and not _qualified(key):
            c.fail(f"{tp}.key", key, "is not a valid taint key")
        if not key and operator != "Exists":
            c.fail(f"{tp}.operator", operator, "must be Exists when key is empty (to tolerate every taint)")
        if operator == "Exists" and val:
            c.fail(f"{tp}.value", val, "must be empty when operator is Exists")
        if val and (len(val) > 63 or not LABEL_VALUE.match(val)):
            c.fail(f"{tp}.value", val, "is not a valid taint value")
        if t.get("tolerationSeconds") is not None:
            c.integer(t, "tolerationSeconds", tp, None)
            if effect != "NoExecute":
                c.fail(f"{tp}.tolerationSeconds", t["tolerationSeconds"], "applies only to effect NoExecute")
        out.append({k: t[k] for k in ("key", "operator", "value", "effect", "tolerationSeconds") if k in t})
    return tuple(out)


def _affinity(c: Checker, value: Any, path: str) -> dict[str, Any]:
    """The three kinds of affinity, each a Kubernetes mapping; their inside is the CRD schema's to check."""
    if value is None:
        return {}
    affinity = _mapping(c, value, path, AFFINITY_KINDS)
    if affinity is None:
        return {}
    for kind in AFFINITY_KINDS:
        if kind in affinity and not isinstance(affinity[kind], Mapping):
            c.fail(f"{path}.{kind}", affinity[kind], "must be a mapping")
    return {k: v for k, v in affinity.items() if k in AFFINITY_KINDS}


def _priority_class(c: Checker, raw: Mapping, path: str) -> str:
    name = c.string(raw, "priorityClassName", path, "")
    if name and (len(name) > 253 or not SUBDOMAIN.match(name)):
        c.fail(f"{path}.priorityClassName", name, "must be a PriorityClass name (a lowercase DNS subdomain)")
    return name


def _pull_secrets(c: Checker, value: Any, path: str) -> tuple[str, ...]:
    names: list[str] = []
    for i, item in enumerate(_list(c, value, path, MAX_ENTRIES)):
        sp = f"{path}[{i}]"
        ref = _mapping(c, item, sp, ("name",))
        if ref is None:
            continue
        name = c.string(ref, "name", sp, "")
        if not SUBDOMAIN.match(name) or len(name) > 253:
            c.fail(f"{sp}.name", name, "must name a Secret (a lowercase DNS subdomain)")
        elif name in names:
            c.fail(f"{sp}.name", name, "is listed twice")
        else:
            names.append(name)
    return tuple(names)


def _volumes(c: Checker, value: Any, path: str) -> tuple[dict[str, Any], ...]:
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, item in enumerate(_list(c, value, path, MAX_VOLUMES)):
        vp = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            c.fail(vp, item, "must be a mapping")
            continue
        name = c.string(item, "name", vp, "")
        if not DNS_LABEL.match(name) or len(name) > 63:
            c.fail(f"{vp}.name", name, "must be a DNS label of at most 63 characters")
        elif name in RESERVED_VOLUMES:
            c.fail(f"{vp}.name", name, f"is a volume KubeRay or Red adds itself ({', '.join(RESERVED_VOLUMES)})")
        elif name in names:
            c.fail(f"{vp}.name", name, "is used by two volumes")
        names.add(name)
        others = sorted((k for k in item if k != "name" and k not in VOLUME_SOURCES), key=str)
        for other in others:
            c.fail(
                f"{vp}.{other}",
                item[other],
                f"{other} volumes are not allowed: a Ray Pod takes {', '.join(VOLUME_SOURCES)} volumes only",
            )
        sources = [k for k in VOLUME_SOURCES if item.get(k) is not None]  # the API server prunes a null
        if len(sources) != 1:
            if not others:
                c.fail(vp, dict(item), f"must have exactly one of {', '.join(VOLUME_SOURCES)}")
            continue
        kind = sources[0]
        source = _SOURCES[kind](c, item[kind], f"{vp}.{kind}")
        if source is not None and not others:
            out.append({"name": name, kind: source})
    return tuple(out)


def _claim(c: Checker, value: Any, path: str) -> dict | None:
    claim = _mapping(c, value, path, ("claimName", "readOnly"))
    if claim is None:
        return None
    name = c.string(claim, "claimName", path, "")
    if not SUBDOMAIN.match(name) or len(name) > 253:
        c.fail(f"{path}.claimName", name, "must name a PersistentVolumeClaim (a lowercase DNS subdomain)")
    out: dict[str, Any] = {"claimName": name}
    if "readOnly" in claim:
        out["readOnly"] = c.boolean(claim, "readOnly", path, False)
    return out


def _projected(c: Checker, value: Any, path: str, name_key: str, what: str) -> dict | None:
    """A ConfigMap or Secret volume: the object's name, optional items, defaultMode and optional."""
    source = _mapping(c, value, path, (name_key, "items", "defaultMode", "optional"))
    if source is None:
        return None
    name = c.string(source, name_key, path, "")
    if not SUBDOMAIN.match(name) or len(name) > 253:
        c.fail(f"{path}.{name_key}", name, f"must name a {what} (a lowercase DNS subdomain)")
    out: dict[str, Any] = {name_key: name}
    if "defaultMode" in source:
        out["defaultMode"] = c.integer(source, "defaultMode", path, 0o644, minimum=0, maximum=0o777)
    if "optional" in source:
        out["optional"] = c.boolean(source, "optional", path, False)
    if source.get("items") is not None:
        items = []
        for i, item in enumerate(_list(c, source["items"], f"{path}.items", MAX_ENTRIES)):
            ip = f"{path}.items[{i}]"
            entry = _mapping(c, item, ip, ("key", "path", "mode"))
            if entry is None:
                continue
            key = c.string(entry, "key", ip, "")
            if not key:
                c.fail(f"{ip}.key", key, "must name a key of the " + what)
            rel = c.string(entry, "path", ip, "")
            if not RELATIVE_PATH.fullmatch(rel):
                c.fail(f"{ip}.path", rel, "must be a relative path without '..'")
            kept = {"key": key, "path": rel}
            if "mode" in entry:
                kept["mode"] = c.integer(entry, "mode", ip, 0o644, minimum=0, maximum=0o777)
            items.append(kept)
        out["items"] = items
    return out


def _config_map(c: Checker, value: Any, path: str) -> dict | None:
    return _projected(c, value, path, "name", "ConfigMap")


def _secret(c: Checker, value: Any, path: str) -> dict | None:
    return _projected(c, value, path, "secretName", "Secret")


def _empty_dir(c: Checker, value: Any, path: str) -> dict | None:
    source = _mapping(c, value, path, ("medium", "sizeLimit"))
    if source is None:
        return None
    out: dict[str, Any] = {}
    if "medium" in source:
        out["medium"] = c.choice(source, "medium", path, "", EMPTYDIR_MEDIA)
    if "sizeLimit" in source:
        out["sizeLimit"] = c.quantity(source, "sizeLimit", path, "")
    return out


_SOURCES = {
    "persistentVolumeClaim": _claim,
    "configMap": _config_map,
    "secret": _secret,
    "emptyDir": _empty_dir,
}


def _mounts(c: Checker, value: Any, path: str, volumes: set) -> tuple[dict[str, Any], ...]:
    out: list[dict[str, Any]] = []
    paths: set[str] = set()
    for i, item in enumerate(_list(c, value, path, MAX_VOLUMES)):
        mp = f"{path}[{i}]"
        mount = _mapping(c, item, mp, ("name", "mountPath", "readOnly", "subPath"))
        if mount is None:
            continue
        name = c.string(mount, "name", mp, "")
        if name not in volumes:
            known = ", ".join(sorted(v for v in volumes if isinstance(v, str))) or "none"
            c.fail(f"{mp}.name", name, f"names no volume of this group (volumes: {known})")
        where = c.string(mount, "mountPath", mp, "")
        if not ABSOLUTE_PATH.fullmatch(where):
            c.fail(f"{mp}.mountPath", where, "must be an absolute path without '..'")
        elif where in paths:
            c.fail(f"{mp}.mountPath", where, "is used by two volumeMounts")
        paths.add(where)
        kept: dict[str, Any] = {"name": name, "mountPath": where}
        if "readOnly" in mount:
            kept["readOnly"] = c.boolean(mount, "readOnly", mp, False)
        if "subPath" in mount:
            sub = c.string(mount, "subPath", mp, "")
            if sub and not RELATIVE_PATH.fullmatch(sub):
                c.fail(f"{mp}.subPath", sub, "must be a relative path without '..'")
            kept["subPath"] = sub
        out.append(kept)
    return tuple(out)
