"""`red validate FILE` through the real CLI: a bad manifest exits 2 naming the field, never with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
HEAD = "apiVersion: red.dev/v1alpha1\nkind: Federation\nmetadata: {name: fed}\n"

# (what the file holds, what stderr must name)
BAD = {
    "krum f as a word": (HEAD + "spec: {algorithm: {name: krum, options: {f: x}}}\n", "spec.algorithm.options.f: 'x'"),
    "NaN option": (HEAD + "spec: {algorithm: {name: trimmedmean, options: {beta: .nan}}}\n", "options.beta: nan"),
    "infinite rounds": (HEAD + "spec: {rounds: .inf}\n", "spec.rounds: inf"),
    "infinite learning rate": (HEAD + "spec: {task: {train: {lr: -.inf}}}\n", "spec.task.train.lr: -inf"),
    "duplicate key": (HEAD + "spec:\n  rounds: 3\n  rounds: 4\n", "line 6, column 3: duplicate key 'rounds'"),
    "two Federations": (HEAD + "---\n" + HEAD.replace("fed", "other"), "2 Federation documents"),
    "more labels than classes": (
        HEAD + "spec: {task: {partition: {kind: labels, labels: 20}}}\n",
        "spec.task.partition.labels: 20: is more than the 10 classes",
    ),
    "more nodes than samples": (HEAD + "spec: {nodes: {count: 5000}}\n", "spec.nodes.count: 5000: leaves 3563"),
    "not YAML": (HEAD + "spec: {rounds: [3}\n", "line 4, column"),
    "not a Federation": ("- 1\n- 2\n", "no document of kind Federation"),
    "spec not a mapping": (HEAD + "spec: x\n", "spec: 'x': must be a mapping"),
    "metadata a list": (HEAD.replace("{name: fed}", "[fed]"), "metadata.name"),
    "a number as a key": (HEAD + "spec: {1: 2, rounds: 3}\n", "spec.1: 2: unknown field"),
    "quantity of the wrong type": (HEAD + "spec: {ray: {head: {cpu: [2]}}}\n", "spec.ray.head.cpu: [2]"),
    "huge integer": (HEAD + "spec: {task: {train: {batchSize: " + "9" * 30 + "}}}\n", "spec.task.train.batchSize"),
}


def validate(path: Path, *flags: str) -> subprocess.CompletedProcess:
    parts = [str(ROOT / part) for part in ("api", "runtime", "operator")]
    pythonpath = os.pathsep.join([*parts, os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "red_runtime.apps.cli", "validate", str(path), *flags],
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_manifest_exits_2_naming_the_field(tmp_path, case):
    text, named = BAD[case]
    path = tmp_path / "fed.yaml"
    path.write_text(text)
    proc = validate(path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2 and named in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_a_file_that_is_not_text_or_not_there_exits_2(tmp_path):
    binary = tmp_path / "fed.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    for path, named in ((binary, "not UTF-8"), (tmp_path / "missing.yaml", "missing.yaml: no such file or directory")):
        proc = validate(path)
        assert proc.returncode == 2 and named in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_good_manifest_exits_0_with_what_each_node_gets():
    proc = validate(ROOT / "manifests" / "examples" / "digits-star.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "Federation digits-star is valid: 8 nodes with" in proc.stdout


def manifest_naming(tmp_path: Path, dataset: str, model: str = "mlp") -> Path:
    path = tmp_path / "fed.yaml"
    spec = f"{{task: {{dataset: {{name: '{dataset}'}}, model: {{name: '{model}'}}}}}}"
    path.write_text(f"apiVersion: red.dev/v1alpha1\nkind: Federation\nmetadata: {{name: f}}\nspec: {spec}\n")
    return path


def test_validate_calls_no_code_a_manifest_names(tmp_path):
    """It imported the dataset reference and called it: `builtins:print` printed, `time:sleep` hung."""
    (tmp_path / "loud.py").write_text("print('imported!')\ndef make():\n    print('called!')\n")
    path = manifest_naming(tmp_path, "loud:make", "time:sleep")
    proc = subprocess.run(
        [sys.executable, "-m", "red_runtime.apps.cli", "validate", str(path)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "api"), str(ROOT / "runtime")])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "imported!" not in proc.stdout and "called!" not in proc.stdout
    assert "checked when `red run` loads it" in proc.stdout


def test_validate_import_imports_the_references_and_calls_nothing(tmp_path):
    (tmp_path / "loud.py").write_text("print('imported!')\ndef make():\n    print('called!')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "api"), str(ROOT / "runtime")])}
    cmd = [sys.executable, "-m", "red_runtime.apps.cli", "validate", "--import"]
    proc = subprocess.run(
        [*cmd, str(manifest_naming(tmp_path, "loud:make"))], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "imported!" in proc.stdout and "called!" not in proc.stdout, proc
    missing = subprocess.run(
        [*cmd, str(manifest_naming(tmp_path, "loud:nothing"))], env=env, capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 2 and "spec.task.dataset.name: 'loud:nothing'" in missing.stderr, missing.stderr
    nowhere = subprocess.run(
        [*cmd, str(manifest_naming(tmp_path, "nope.mod:load"))], env=env, capture_output=True, text=True, timeout=120
    )
    assert nowhere.returncode == 2 and "spec.task.dataset.name: 'nope.mod:load'" in nowhere.stderr, nowhere.stderr
