"""spec.storage: what it accepts and refuses, and the Mirror against a real S3 wire-protocol server (moto's)."""

from __future__ import annotations

import pytest
from pyarrow import fs

from red_api.names import artifact_uris, artifacts_base, claim_name, is_checkpoint_file, owns_claim, run_location
from red_api.spec import SpecError, parse_manifest
from red_runtime.engine.events import RunInfo, Summary
from red_runtime.report.run_folder import RunFolder
from red_runtime.report.status_sink import StatusSink
from red_runtime.report.storage import Mirror, StorageError

pytestmark = pytest.mark.unit


def fed(storage=None, name="digits"):
    spec = {} if storage is None else {"storage": storage}
    return parse_manifest(
        {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": name}, "spec": spec}
    )


def test_by_default_a_federation_keeps_its_folder_on_a_claim_of_its_own():
    f = fed()
    assert owns_claim(f) and claim_name(f) == "digits-storage" and f.spec.storage.claim.size == "1Gi"
    assert run_location(f) == "/red/storage/digits"
    assert artifacts_base(f) == "pvc://digits-storage/digits"
    assert artifact_uris(artifacts_base(f)) == {
        "model": "pvc://digits-storage/digits/model.pt",
        "metrics": "pvc://digits-storage/digits/metrics.jsonl",
        "checkpoint": "pvc://digits-storage/digits/checkpoints/",
    }


def test_checkpoints_stay_inside_the_run_folder_wherever_spec_checkpoint_path_puts_them(tmp_path):
    """checkpoint.path is a folder inside the run folder: local runs and the status name it there, and a
    path that would leave the run folder is refused before anything is written."""
    run = RunFolder(tmp_path / "digits", resume=False)
    assert run.checkpoints() == tmp_path / "digits" / "checkpoints"
    assert run.checkpoints("ckpt/fast") == tmp_path / "digits" / "ckpt" / "fast"
    uris = artifact_uris("pvc://digits-storage/digits", "ckpt/fast")
    assert uris["checkpoint"] == "pvc://digits-storage/digits/ckpt/fast/"
    for outside in ("../../..", "/etc/cron.d", "ckpt/../..", "ckpt//x", "./ckpt", ".hidden"):
        doc = {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": "digits"}}
        with pytest.raises(SpecError, match=r"spec\.checkpoint\.path: .*inside the run folder"):
            parse_manifest({**doc, "spec": {"checkpoint": {"path": outside}}})


def test_a_mirror_deletes_pruned_checkpoints_in_whichever_folder_they_were():
    assert is_checkpoint_file("round-000012-0a1b2c3d.pt") and is_checkpoint_file("round-000012-0a1b2c3d.json")
    assert not is_checkpoint_file("model.pt") and not is_checkpoint_file("metrics.jsonl")


def test_an_existing_claim_and_object_storage_are_not_the_operators_to_make():
    mine = fed({"pvc": {"claimName": "team-results"}})
    assert not owns_claim(mine) and artifacts_base(mine) == "pvc://team-results/digits"
    remote = fed({"uri": "s3://team-bucket/feds/", "secretRef": {"name": "s3"}})
    assert not owns_claim(remote)
    assert run_location(remote) == artifacts_base(remote) == "s3://team-bucket/feds/digits"


@pytest.mark.parametrize(
    ("storage", "field", "words"),
    [
        ({"uri": "gs://bucket/x"}, "spec.storage.uri", "unknown scheme 'gs'"),
        ({"uri": "bucket/x"}, "spec.storage.uri", "unknown scheme"),
        ({"uri": "s3://UPPER/x"}, "spec.storage.uri", "valid bucket name"),
        ({"pvc": {"size": "1Gi"}, "uri": "s3://bucket/x"}, "spec.storage", "not both"),
        ({"pvc": {"claimName": "c", "size": "2Gi"}}, "spec.storage.pvc", "claimName"),
        ({"pvc": {"size": "lots"}}, "spec.storage.pvc.size", "quantity"),
        ({"pvc": {"claimName": "Not_A_Name"}}, "spec.storage.pvc.claimName", "DNS subdomain"),
        ({"secretRef": {"name": "s3"}}, "spec.storage.secretRef", "needs storage.uri"),
        ({"uri": "s3://bucket", "secretRef": {"name": "a b"}}, "spec.storage.secretRef.name", "Secret name"),
        ({"retain": "yes"}, "spec.storage.retain", "true or false"),
        ({"bucket": "x"}, "spec.storage.bucket", "unknown field"),
    ],
)
def test_bad_storage_is_refused_with_the_field_named(storage, field, words):
    with pytest.raises(SpecError) as err:
        fed(storage)
    assert any(p.startswith(f"{field}:") and words in p for p in err.value.problems), err.value.problems


def test_a_mirror_pushes_changes_only_and_removes_pruned_checkpoints(tmp_path, s3):
    local = tmp_path / "run"
    (local / "checkpoints").mkdir(parents=True)
    (local / "metrics.jsonl").write_text('{"round": 1}\n')
    (local / "checkpoints" / "round-000001-ab.pt").write_bytes(b"tensors")
    (local / "checkpoints" / "round-000001-ab.json").write_text("{}")
    (local / ".summary.json.tmp").write_text("half")  # an atomic write in flight is never uploaded
    mirror = Mirror(local, f"{s3}/runs/digits")
    assert mirror.push() == 3
    assert mirror.push() == 0, "nothing changed, nothing uploaded"
    (local / "metrics.jsonl").write_text('{"round": 1}\n{"round": 2}\n')
    (local / "checkpoints" / "round-000001-ab.pt").unlink()  # pruned by the checkpointer
    (local / "checkpoints" / "round-000001-ab.json").unlink()
    (local / "checkpoints" / "round-000002-ab.pt").write_bytes(b"newer")
    assert mirror.push() == 2

    fresh = tmp_path / "fresh"
    assert Mirror(fresh, f"{s3}/runs/digits").pull() == 2
    assert sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file()) == [
        "checkpoints/round-000002-ab.pt",
        "metrics.jsonl",
    ]
    assert (fresh / "metrics.jsonl").read_text().count("round") == 2


def test_a_bucket_that_does_not_exist_is_an_error_naming_the_location(tmp_path, s3):
    with pytest.raises(StorageError, match="s3://no-such-bucket-here/x"):
        Mirror(tmp_path, "s3://no-such-bucket-here/x").pull()
    with pytest.raises(StorageError, match="cannot upload"):
        (tmp_path / "a.txt").write_text("a")
        Mirror(tmp_path, "s3://no-such-bucket-here/x").push()


def test_an_unreachable_store_is_an_error_that_names_the_location_and_no_secret(tmp_path, s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-me")
    with pytest.raises(StorageError) as err:
        Mirror(tmp_path, f"{s3}/x").pull()
    assert "do-not-print-me" not in str(err.value) and f"{s3}/x" in str(err.value)


def test_status_names_the_artifacts_and_the_model_once_it_exists():
    sent = []
    sink = StatusSink(sent.append, min_interval_s=0, rayjob="", artifacts="s3://b/feds/digits")
    info = RunInfo(name="digits", namespace="ns", rounds=1, nodes=1, slots=1, topology="star", algorithm="fedavg")
    sink.started(info, [])
    summary = Summary("digits", 1, 0.9, 0.1, seconds_per_round=1.0, nodes=1, slots=1, startup_seconds=1.0)
    sink.finished(summary, None, None)
    sink.close()
    assert sent[-1]["artifacts"] == {
        "model": "s3://b/feds/digits/model.pt",
        "metrics": "s3://b/feds/digits/metrics.jsonl",
        "checkpoint": "s3://b/feds/digits/checkpoints/",
    }
    assert all(body["artifacts"]["checkpoint"] for body in sent)


def test_a_listing_of_the_bucket_finds_what_was_pushed(tmp_path, s3, s3_server):
    (tmp_path / "model.pt").write_bytes(b"weights")
    Mirror(tmp_path, f"{s3}/a/b").push()
    s3fs = fs.S3FileSystem(endpoint_override=s3_server, region="us-east-1")
    assert s3fs.get_file_info(f"{s3[5:]}/a/b/model.pt").size == len(b"weights")


@pytest.mark.parametrize(
    "key", ["../escape.txt", "a/../../escape.txt", "a//b.txt", "./x.txt", "a/./b.txt", "a\x00b", "model.pt/x"]
)
def test_a_hostile_key_in_a_shared_prefix_writes_nothing_anywhere(tmp_path, s3, s3_server, key):
    """Mirror.pull joined each key onto the folder unchecked: `..` and `//` wrote outside it (red fetch from
    S3, red serve s3://, the driver's resume)."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bucket = s3[len("s3://") :]
    client.put_object(Bucket=bucket, Key="run/model.pt", Body=b"weights")
    client.put_object(Bucket=bucket, Key=f"run/{key}", Body=b"theirs")
    into = tmp_path / "deep" / "fetched"
    with pytest.raises(StorageError, match=r"nothing was downloaded|cannot list"):
        Mirror(into, f"{s3}/run").pull()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "a file was written"
