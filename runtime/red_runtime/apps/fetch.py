"""`red fetch`: bring a Federation's run folder (model, metrics, summary, plot, checkpoints) to this machine.

From object storage it reads the prefix with the credentials of the Federation's Secret; from a claim it
starts a short-lived Pod that mounts the claim read-only (as the Federation's own Pods run: Pod Security
`restricted`, no ServiceAccount token) and streams the folder out as a tar archive through `exec`.
"""

from __future__ import annotations

import base64
import binascii
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from red_api.names import PVC, STORAGE_MOUNT, artifacts_base
from red_api.pod import CONTAINER_SECURITY, POD_SECURITY
from red_api.spec import Federation
from red_runtime.report.storage import Mirror, is_remote, s3_filesystem

POD_START_S = 180
# The fetch Pod ends itself after this even if `red fetch` is killed before it deletes it.
POD_DEADLINE_S = 900
# A run folder is a model, metrics and a few checkpoints; a claim another tenant can write may hold anything.
MAX_FETCH_BYTES = 16 * 1024**3


class FetchError(RuntimeError):
    """A fetch that cannot go on; the message says what to do."""


def fetch_folder(source: str, to: Path) -> int:
    """Copy a run folder (a local one, or s3:// with credentials from the environment) into `to`."""
    if is_remote(source):
        return Mirror(to, source).download(to)
    folder = Path(source)
    if not folder.is_dir():
        raise FetchError(f"{source}: no such folder")
    shutil.copytree(folder, to, dirs_exist_ok=True)
    return sum(1 for p in folder.rglob("*") if p.is_file())


def fetch_federation(api: Any, fed: Federation, to: Path) -> int:
    """Copy a Federation's run folder from its storage into `to`; returns the number of files."""
    base = artifacts_base(fed)
    if is_remote(base):
        return Mirror(to, base, s3_filesystem_from(api, fed)).download(to)
    claim, _, folder = base[len(PVC) :].partition("/")
    return _from_claim(api, fed, claim, folder, to)


def s3_filesystem_from(api: Any, fed: Federation) -> Any:
    """An S3 file system with the Federation's Secret's credentials (else this machine's environment)."""
    from kubernetes import client

    name = fed.spec.storage.secretRef
    if not name:
        return s3_filesystem()
    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(name, fed.namespace)
    except client.ApiException as err:
        raise FetchError(f"spec.storage.secretRef.name: Secret {fed.namespace}/{name}: {err.reason}") from err
    return s3_filesystem({k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()})


def fetch_pod(fed: Federation, claim: str) -> dict[str, Any]:
    """A Pod that mounts the claim read-only and waits to be exec'ed into, placed as the head is."""
    head = fed.spec.ray.head
    name = f"{fed.name[:40]}-fetch-{uuid.uuid4().hex[:5]}"
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "activeDeadlineSeconds": POD_DEADLINE_S,
        "securityContext": dict(POD_SECURITY),
        "containers": [
            {
                "name": "fetch",
                "image": fed.spec.ray.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", str(POD_DEADLINE_S)],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
                "securityContext": dict(CONTAINER_SECURITY),
                "volumeMounts": [{"name": "storage", "mountPath": STORAGE_MOUNT, "readOnly": True}],
            }
        ],
        "volumes": [{"name": "storage", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
    }
    if head.nodeSelector:
        spec["nodeSelector"] = dict(head.nodeSelector)
    if head.tolerations:
        spec["tolerations"] = [dict(t) for t in head.tolerations]
    if head.imagePullSecrets:
        spec["imagePullSecrets"] = [{"name": s} for s in head.imagePullSecrets]
    labels = {"red.dev/federation": fed.name, "app.kubernetes.io/managed-by": "red-fetch"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


@contextmanager
def _running(core: Any, namespace: str, pod: Mapping[str, Any]) -> Iterator[str]:
    name = pod["metadata"]["name"]
    core.create_namespaced_pod(namespace, pod)
    try:
        deadline = time.monotonic() + POD_START_S
        while True:
            current = core.read_namespaced_pod(name, namespace)
            if current.status.phase == "Running":
                break
            if current.status.phase in ("Failed", "Succeeded") or time.monotonic() > deadline:
                waiting = [
                    f"{s.state.waiting.reason}: {s.state.waiting.message or ''}"
                    for s in current.status.container_statuses or []
                    if s.state and s.state.waiting
                ]
                why = "; ".join(waiting) or current.status.reason or current.status.phase
                raise FetchError(f"the fetch Pod {namespace}/{name} did not start: {why}")
            time.sleep(1)
        yield name
    finally:
        from kubernetes import client

        with suppress(client.ApiException):
            core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


def _from_claim(api: Any, fed: Federation, claim: str, folder: str, to: Path) -> int:
    from kubernetes import client
    from kubernetes.stream import stream

    core = client.CoreV1Api(api)
    source = f"{PVC}{claim}/{folder}"
    with _running(core, fed.namespace, fetch_pod(fed, claim)) as pod:
        # exec carries text: the archive travels base64-encoded. The pipe's status is base64's, so a tar that
        # fails says so on stderr, which fails the fetch.
        script = f"cd {STORAGE_MOUNT}/{folder} && {{ tar -cf - . || echo 'tar failed' >&2; }} | base64 -w0"
        resp = stream(
            core.connect_get_namespaced_pod_exec,
            pod,
            fed.namespace,
            command=["sh", "-c", script],
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
            _preload_content=False,
        )
        err: list[str] = []

        def stdout() -> Iterator[str]:
            while resp.is_open():
                resp.update(timeout=5)
                if resp.peek_stdout():
                    yield resp.read_stdout()
                if resp.peek_stderr():
                    err.append(resp.read_stderr())
                # The client keeps a copy of every frame for read_all(), which stream() gives no way to turn
                # off: dropped as it goes, or a whole run folder would sit in memory after all.
                if hasattr(resp, "_all"):
                    resp._all = resp._all.__class__()

        try:
            with tempfile.TemporaryDirectory(dir=to.parent if to.parent.is_dir() else None) as tmp:
                archive = Path(tmp) / "run.tar"
                spool(stdout(), archive, MAX_FETCH_BYTES, source)
                code = exit_code(resp)
                if code or "".join(err).strip():
                    raise FetchError(f"{source}: {''.join(err).strip() or 'nothing there yet'}")
                return unpack(archive, to, source)
        finally:
            resp.close()


def exit_code(resp: Any) -> int:
    """The exec's exit status, from its error channel; one that cannot be read is a failure."""
    try:
        return int(resp.returncode or 0)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return 1


def spool(chunks: Iterable[str], into: Path, limit: int, source: str = "the run folder") -> None:
    """Write a base64 text stream (exec carries text) to a file as bytes, refusing more than `limit`."""
    written, rest = 0, ""
    try:
        with open(into, "wb") as out:
            for chunk in chunks:
                text = rest + "".join(chunk.split())
                cut = len(text) - len(text) % 4
                data, rest = base64.b64decode(text[:cut], validate=True), text[cut:]
                written += len(data)
                if written > limit:
                    raise FetchError(f"{source}: larger than {limit} bytes: not fetched")
                out.write(data)
            out.write(base64.b64decode(rest, validate=True))
    except binascii.Error as err:
        raise FetchError(f"{source}: the stream ended or broke before the whole folder came ({err})") from None


# What a run folder holds: plain files and folders. A sparse file's header may claim any size.
PLAIN = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)
MAX_ENTRIES = 100_000


def unpack(archive: Path, to: Path, source: str, limit: int = MAX_FETCH_BYTES) -> int:
    """Extract a run folder's plain tar (no compression guessed) into `to`: every entry is checked before any is
    written, and one that is a link, a sparse file, a path outside `to` or in the way of another refuses the
    whole archive in one line."""
    try:
        with tarfile.open(archive, mode="r:") as tar:
            members = tar.getmembers()
            problem = entries_problem(members, to, limit)
            if problem:
                raise FetchError(f"{source}: {problem}: nothing fetched")
            to.mkdir(parents=True, exist_ok=True)
            tar.extractall(to, members=members, filter="data")
    except tarfile.FilterError as err:
        raise FetchError(f"{source}: {err}: nothing fetched") from None
    except tarfile.TarError as err:
        raise FetchError(f"{source}: not a tar archive of a run folder: {err}") from None
    return sum(1 for m in members if m.isfile())


def entries_problem(members: list[tarfile.TarInfo], to: Path, limit: int) -> str | None:
    """Why these entries are no run folder's, or None."""
    if len(members) > MAX_ENTRIES:
        return f"{len(members)} entries, more than {MAX_ENTRIES}"
    if sum(m.size for m in members) > limit:
        return f"more than {limit} bytes"
    files, folders = set(), set()
    for member in members:
        if member.type not in PLAIN or member.sparse is not None:
            return f"holds {member.name!r}, which is not a plain file or folder"
        if member.name.startswith("/"):  # tar's data filter would strip it; no run folder has one
            return f"holds {member.name!r}, an absolute path"
        tarfile.data_filter(member, str(to))  # raises for a path that leaves `to`
        name = member.name.removeprefix("./").rstrip("/")
        (files if member.isfile() else folders).add(name)
    for name in files:
        parent = name.rpartition("/")[0]
        while parent:
            if parent in files:
                return f"holds {name!r} below the file {parent!r}"
            parent = parent.rpartition("/")[0]
        if name in folders:
            return f"holds {name!r} as a file and as a folder"
    return None
