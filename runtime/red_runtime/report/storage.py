"""Object storage for run folders: s3:// locations through pyarrow.fs, credentials from the environment.

A run always writes to a local folder (the checkpointer and the run folder's files need a file system).
For an s3:// location a Mirror keeps that folder and the prefix in step: it pulls before the run, so a
retried driver on a new head Pod resumes from the checkpoints there, and it pushes after every checkpoint
and at the end. Credentials come from the standard variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, or the Pod's workload identity), the endpoint of an S3-compatible server from
AWS_ENDPOINT_URL; none of them is ever logged or reported.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from red_api.kinds import excerpt
from red_api.names import is_checkpoint_file, join
from red_runtime.engine.events import NodeStatus, RoundReport, Sink, Summary

log = logging.getLogger("red.storage")
S3 = "s3://"
# How often a running federation's metrics reach object storage between checkpoints.
PUSH_EVERY_S = 30.0


class StorageError(RuntimeError):
    """Object storage refused or could not be reached; the message names the location, never a credential."""


def is_remote(location: str | os.PathLike) -> bool:
    return str(location).startswith(S3)


def s3_filesystem(env: Mapping[str, str] | None = None) -> Any:
    """An S3 file system from the environment (or `env`, a storage Secret's keys): an endpoint for
    S3-compatible servers, else AWS itself; without keys, the AWS SDK's own chain (workload identity)."""
    from pyarrow import fs

    env = os.environ if env is None else env
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    keys = {}
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        keys = {"access_key": env["AWS_ACCESS_KEY_ID"], "secret_key": env["AWS_SECRET_ACCESS_KEY"]}
        if env.get("AWS_SESSION_TOKEN"):
            keys["session_token"] = env["AWS_SESSION_TOKEN"]
    # allow_delayed_open: a small file is one PutObject instead of a multipart upload.
    return fs.S3FileSystem(endpoint_override=endpoint, region=region, allow_delayed_open=True, **keys)


def _bucket_path(uri: str) -> str:
    return uri[len(S3) :].rstrip("/")


class Mirror:
    """A local run folder and an s3:// folder kept in step."""

    def __init__(self, local: Path, uri: str, filesystem: Any = None):
        self.local = Path(local)
        self.uri = uri.rstrip("/")
        self.root = _bucket_path(uri)
        self.fs = filesystem if filesystem is not None else s3_filesystem()
        self._pushed: dict[str, tuple[int, int]] = {}

    def check(self) -> None:
        """Fail now, not after the training, if the bucket is missing or out of these credentials' reach."""
        from pyarrow import fs

        bucket = self.root.split("/", 1)[0]
        try:
            missing = self.fs.get_file_info(bucket).type == fs.FileType.NotFound
        except OSError as err:
            raise StorageError(f"{self.uri}: cannot reach the bucket: {err}") from err
        if missing:
            raise StorageError(f"{self.uri}: the bucket {bucket!r} does not exist (or these credentials cannot see it)")

    def _remote_files(self) -> dict[str, int]:
        from pyarrow import fs

        self.check()
        try:
            infos = self.fs.get_file_info(fs.FileSelector(self.root, recursive=True, allow_not_found=True))
        except OSError as err:
            raise StorageError(f"{self.uri}: cannot list: {err}") from err
        return {i.path[len(self.root) + 1 :]: i.size for i in infos if i.type == fs.FileType.File}

    def pull(self) -> int:
        """Download what the prefix holds (an earlier attempt's checkpoints and metrics); returns the count.

        The prefix may be shared with others (a bucket other tenants write): every key is checked before any
        file is written, and each lands below `local`, never beside or above it."""
        files = self._remote_files()
        for rel in files:
            self._refuse_outside(rel)
        folders = {rel.rpartition("/")[0] for rel in files}
        clash = next((rel for rel in files if any(f == rel or f.startswith(f"{rel}/") for f in folders)), None)
        if clash is not None:
            raise StorageError(f"{join(self.uri, clash)}: is a file and a folder of other keys: nothing was downloaded")
        for rel in files:
            target = self.local / rel
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with self.fs.open_input_stream(f"{self.root}/{rel}") as src:
                    target.write_bytes(src.read())
            except OSError as err:
                raise StorageError(f"{join(self.uri, rel)}: cannot download: {err}") from err
            stat = target.stat()
            self._pushed[rel] = (stat.st_size, stat.st_mtime_ns)
        return len(files)

    def read(self, rel: str, limit: int) -> bytes:
        """One file of the prefix, at most `limit` bytes (a longer one is cut there, for the reader to refuse)."""
        try:
            with self.fs.open_input_stream(f"{self.root}/{rel}") as src:
                return src.read(limit + 1)
        except OSError as err:
            raise StorageError(f"{join(self.uri, rel)}: cannot read: {err}") from err

    def _refuse_outside(self, rel: str) -> None:
        parts = rel.split("/")
        odd = rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts)
        odd = odd or any(ord(ch) < 32 for ch in rel)
        root = self.local.resolve()
        if odd or not (root / rel).resolve().is_relative_to(root):
            raise StorageError(
                f"{join(self.uri, excerpt(rel)[1:-1])}: a key with an empty, '.' or '..' part is no file of a run "
                "folder: nothing was downloaded"
            )

    def push(self) -> int:
        """Upload the files changed since the last push, metadata after tensors, and remove checkpoints the
        checkpointer pruned; returns how many files were uploaded."""
        local = {
            p.relative_to(self.local).as_posix(): p
            for p in self.local.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        }
        changed = []
        for rel, path in local.items():
            stat = path.stat()
            if self._pushed.get(rel) != (stat.st_size, stat.st_mtime_ns):
                changed.append((rel, path, (stat.st_size, stat.st_mtime_ns)))
        # A checkpoint's JSON names its tensors: upload it last, so a reader never finds it first.
        changed.sort(key=lambda item: (item[0].endswith(".json"), item[0]))
        for rel, path, key in changed:
            try:
                with self.fs.open_output_stream(f"{self.root}/{rel}") as out:
                    out.write(path.read_bytes())
            except OSError as err:
                raise StorageError(f"{join(self.uri, rel)}: cannot upload: {err}") from err
            self._pushed[rel] = key
        for rel in [r for r in self._pushed if r not in local]:
            if is_checkpoint_file(rel.rsplit("/", 1)[-1]):  # pruned by the checkpointer, in any folder
                try:
                    self.fs.delete_file(f"{self.root}/{rel}")
                except OSError as err:
                    log.warning("could not remove the pruned checkpoint %s: %s", join(self.uri, rel), err)
                    continue
            del self._pushed[rel]
        return len(changed)

    def download(self, to: Path) -> int:
        """Copy the whole prefix into `to` (red fetch); returns the number of files."""
        return Mirror(to, self.uri, self.fs).pull()


class MirrorSink(Sink):
    """Pushes the run folder after each checkpoint, at most every PUSH_EVERY_S for the metrics, and at the end.

    Listed after the run-folder sink, so the files of an event are written before they are pushed."""

    def __init__(self, mirror: Mirror, every_s: float = PUSH_EVERY_S):
        self.mirror = mirror
        self.every_s = every_s
        self._last = time.monotonic()

    def _push(self) -> None:
        self.mirror.push()
        self._last = time.monotonic()

    def round_done(self, report: RoundReport, nodes: list[NodeStatus]) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self._push()

    def checkpointed(self, round_no: int, path: str) -> None:
        self._push()

    def finished(self, summary: Summary, params: Any, model: Any) -> None:
        self._push()

    def failed(self, reason: str) -> None:
        self._push()

    def stopped(self, reason: str) -> None:
        self._push()
