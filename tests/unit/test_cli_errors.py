"""`red`'s answers to a user's slips: one line that says what is wrong, never a traceback (no Ray starts)."""

from __future__ import annotations

import pytest

from red_runtime import __version__
from red_runtime.apps.cli import main

pytestmark = pytest.mark.unit


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"red {__version__}\n"


def test_a_missing_manifest_is_named_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["validate", str(missing)]) == 2
    assert capsys.readouterr().err == f"red: {missing}: no such file or directory\n"


def test_no_kubeconfig_is_one_line_saying_what_to_set(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["fetch", "digits", "-n", "team-a"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"red: no Kubernetes credentials in {tmp_path / 'absent'}: ") and err.count("\n") == 1
    assert "set KUBECONFIG" in err and "Traceback" not in err
