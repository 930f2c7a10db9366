"""Fixtures for the operator's cluster tests: the Federation CRD installed, and `red operator` running.

The operator runs as a real subprocess (`red operator --namespace NS`), watching only the test's namespace,
so a test can kill and restart it, and tests never see each other's Federations.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "federation.yaml"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))


@pytest.fixture(scope="session")
def crd(kube) -> str:
    """The Federation CRD, applied server-side (as its size and the KubeRay CRDs' need) and Established."""
    kube.apply_crd(CRD)
    return "federations.red.dev"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Operator:
    """`python -m red_operator` (as its image runs it) as a child process, with a liveness endpoint to know
    when it is up; `namespace` one, or a list of them.

    `source` runs the operator of another checkout (a release's `runtime/` and `operator/` folders, started as
    that release's `red operator`) instead of this one: what an upgrade test starts from."""

    def __init__(
        self, kube, namespace: str | list[str], log_dir: Path, interval_s: float = 2.0, source: Path | None = None
    ):
        self.kube, self.namespace, self.log_dir, self.interval_s = kube, namespace, log_dir, interval_s
        self.source = source
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        port = free_port()
        self.starts += 1
        env = {**self.kube.env(), "RED_RECONCILE_INTERVAL": str(self.interval_s), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "red_operator"]
        if self.source:
            env["PYTHONPATH"] = os.pathsep.join(str(self.source / part) for part in ("runtime", "operator"))
            # The previous release's own entry point: its runtime was one flat package (red_runtime.cli).
            cmd = [sys.executable, "-m", "red_runtime.cli", "operator"]
        log = open(self.log_dir / f"operator-{self.starts}.log", "w")  # noqa: SIM115 - closed by the child's exit
        for namespace in [self.namespace] if isinstance(self.namespace, str) else self.namespace:
            cmd += ["--namespace", namespace]
        cmd += ["--metrics-port", "0", "--liveness", f"http://127.0.0.1:{port}/healthz", "--verbose"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"red operator exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"red operator not live after 60 s: {self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.log_dir.glob("operator-*.log")))


@pytest.fixture
def operator(kube, crd, namespace, tmp_path) -> Iterator[Operator]:
    op = Operator(kube, namespace, tmp_path)
    op.start()
    try:
        yield op
    finally:
        # The operator puts no finalizer on a Federation; one started from an older release might have.
        if op.proc is None:
            op.start()
        kube.kubectl("delete", "federations", "--all", "--wait=true", "--timeout=60s", namespace=namespace, check=False)
        op.stop()
        if os.environ.get("RED_TEST_OPERATOR_LOG"):
            sys.stderr.write(op.log()[-20000:])
