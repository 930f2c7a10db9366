"""A run folder fetched from a claim arrives as a tar over `exec`: a claim that others can write may hold a
hostile archive. It is spooled to disk with a cap (not held whole in memory), never decompressed by guess, and
every entry is checked before any is written."""

from __future__ import annotations

import base64
import io
import lzma
import subprocess
import tarfile
from pathlib import Path

import pytest

from red_runtime.apps.fetch import FetchError, spool, unpack

pytestmark = pytest.mark.unit


def tar_of(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def chunks(data: bytes, size: int = 7) -> list[str]:
    """base64 text in pieces that do not fall on 4-character boundaries, as exec delivers it."""
    text = base64.b64encode(data).decode()
    return [text[i : i + size] for i in range(0, len(text), size)]


def fetched(tmp_path: Path, data: bytes, limit: int = 1 << 20) -> Path:
    archive = tmp_path / "run.tar"
    spool(chunks(data), archive, limit)
    to = tmp_path / "out" / "run"
    unpack(archive, to, "pvc://claim/run")
    return to


def test_a_run_folder_arrives_whole(tmp_path):
    to = fetched(tmp_path, tar_of({"./model.pt": b"w" * 1000, "./checkpoints/round-1.pt": b"c"}))
    assert (to / "model.pt").read_bytes() == b"w" * 1000 and (to / "checkpoints" / "round-1.pt").exists()


@pytest.mark.parametrize(
    "data, says",
    [
        (tar_of({"./model.pt": b"w", "../escape.txt": b"x"}), "outside the destination"),
        (tar_of({"/etc/escape.txt": b"x"}), "absolute path"),
        (tar_of({"./model.pt": b"w"}, links={"./link": "/etc/passwd"}), "not a plain file or folder"),
        (lzma.compress(tar_of({"./model.pt": b"\0" * 100_000})), "not a tar archive"),
    ],
    ids=["dot-dot", "absolute", "symlink", "xz"],
)
def test_a_hostile_archive_is_refused_in_one_line_and_writes_nothing(tmp_path, data, says):
    """A `..` entry raised an uncaught OutsideDestinationError after a partial extraction, and a 30 KiB xz
    became 200 MiB (tarfile guessed the compression)."""
    with pytest.raises(FetchError, match=says) as err:
        fetched(tmp_path, data)
    assert "\n" not in str(err.value) and str(err.value).startswith("pvc://claim/run")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.*"))
    assert not (tmp_path / "escape.txt").exists()


def test_a_sparse_file_whose_header_claims_any_size_is_refused(tmp_path):
    """A 10 KiB archive held a 20 GiB sparse summary.json (found by review)."""
    folder = tmp_path / "folder"
    folder.mkdir()
    with open(folder / "summary.json", "wb") as fh:
        fh.truncate(64 * 1024)  # all hole: GNU tar stores it as a sparse entry
    data = subprocess.run(
        ["tar", "--sparse", "-cf", "-", "-C", str(folder), "."], capture_output=True, check=True
    ).stdout
    with pytest.raises(FetchError, match="not a plain file or folder"):
        fetched(tmp_path, data)


def test_an_entry_below_a_file_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(FetchError, match="below the file"):
        fetched(tmp_path, tar_of({"./a.txt": b"x", "./a.txt/b": b"y"}))
    assert not (tmp_path / "out").exists()


def test_a_stream_that_breaks_off_says_so_in_one_line(tmp_path):
    text = base64.b64encode(tar_of({"./model.pt": b"w" * 1000})).decode()
    with pytest.raises(FetchError, match="ended or broke"):
        spool([text[:-3]], tmp_path / "run.tar", 1 << 20)


def test_more_than_the_cap_is_refused_while_it_streams(tmp_path):
    with pytest.raises(FetchError, match="larger than 4096 bytes"):
        fetched(tmp_path, tar_of({"./model.pt": b"w" * 10_000}), limit=4096)
