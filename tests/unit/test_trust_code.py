"""A run folder's federation.yaml may name code ("package.module:name"); whoever can write the folder (a shared
claim or bucket) chose it. `red fetch --evaluate` and `red serve` import it only with --trust-code, and say
which references they would import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from red_api.manifest import load_manifest
from red_runtime.apps.artifacts import require_trust

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = """apiVersion: red.dev/v1alpha1
kind: Federation
metadata: {name: theirs}
spec: {task: {model: {name: 'planted:Net'}}}
"""


def folder_with(tmp_path: Path, manifest: str = MANIFEST) -> Path:
    run = tmp_path / "run"
    run.mkdir(parents=True)
    (run / "federation.yaml").write_text(manifest)
    (run / "model.pt").write_bytes(b"not read")
    (run.parent / "planted.py").write_text("open(__file__ + '.ran', 'w').close()\nclass Net: ...\n")
    return run


def test_code_a_folder_names_is_refused_without_trust_and_named(tmp_path):
    run = folder_with(tmp_path)
    fed = load_manifest(str(run / "federation.yaml"))
    with pytest.raises(ValueError, match=r"spec\.task\.model\.name: 'planted:Net'.*--trust-code"):
        require_trust(fed, str(run), trust_code=False)
    require_trust(fed, str(run), trust_code=True)
    require_trust(fed, str(run), trust_code=["planted:Net"])  # what a RayService's own Federation names
    with pytest.raises(ValueError, match="'planted:Net'"):
        require_trust(fed, str(run), trust_code=["mine:Net"])
    plain = load_manifest(str(folder_with(tmp_path / "b", MANIFEST.replace("planted:Net", "mlp")) / "federation.yaml"))
    require_trust(plain, "b", trust_code=False)  # built-in models need no trust


def test_red_serve_refuses_before_anything_starts_and_imports_nothing(tmp_path):
    run = folder_with(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "api"), str(ROOT / "runtime")])}
    proc = subprocess.run(
        [sys.executable, "-m", "red_runtime.apps.cli", "serve", str(run), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "'planted:Net'" in proc.stderr and "--trust-code" in proc.stderr, proc.stderr
    assert not (tmp_path / "planted.py.ran").exists(), "the planted module ran"


def test_red_serve_of_an_s3_folder_refuses_before_ray_starts(tmp_path, s3):
    """It refused only inside Serve's replicas, after Ray started, in a multi-line deployment traceback."""
    from red_runtime.report.storage import Mirror

    Mirror(folder_with(tmp_path), f"{s3}/theirs").push()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "api"), str(ROOT / "runtime")])}
    proc = subprocess.run(
        [sys.executable, "-m", "red_runtime.apps.cli", "serve", f"{s3}/theirs", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "'planted:Net'" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
