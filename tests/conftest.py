"""Shared pytest wiring for all test tiers.

Cluster fixtures (used by tests marked ``cluster`` / ``e2e``):

``kube`` (session)
    A ready Kubernetes cluster, as a :class:`Kube` object: ``.kubeconfig`` (path),
    ``.api`` (a ``kubernetes.client.ApiClient``), ``.core`` / ``.custom`` (typed API
    shortcuts), ``.kubectl(...)`` (real kubectl with that kubeconfig), ``.wait_for(...)``.

    * With ``RED_TEST_KUBECONFIG=/path/to/kubeconfig`` that cluster is used (kind, k3d,
      a real one ...) and nothing is started or stopped.
    * Otherwise ``tests/cluster/ctl up`` starts the local control plane (etcd,
      kube-apiserver, kube-controller-manager, kube-scheduler, KubeRay, kwok nodes);
      at session end ``tests/cluster/ctl down`` runs, but only if this session was the
      one that started it (set ``RED_TEST_KEEP_CLUSTER=1`` to leave it running).

``namespace`` (function)
    A fresh namespace per test (name returned), deleted afterwards.

``kubectl`` (session)
    ``kube.kubectl``: ``kubectl("get", "pods", "-n", ns)`` -> ``CompletedProcess`` (text).

Servers for any tier: ``s3_server`` / ``s3`` (moto's S3) and ``mlflow_server`` (a real MLflow tracking
server with a SQLite backend, its URL).

Nothing cluster-related is imported, built or started unless a selected test requests
one of these fixtures, so ``pytest -m unit`` / ``-m ray`` never touch it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent
CLUSTER_DIR = TESTS_DIR / "cluster"
CTL = CLUSTER_DIR / "ctl"
CLUSTER_FIXTURES = {"kube", "namespace", "kubectl"}


def _bin_dir() -> Path:
    return Path(os.environ.get("RED_CLUSTER_BIN", CLUSTER_DIR / ".bin"))


def _find_kubectl() -> str:
    """RED_TEST_KUBECTL, else the kubectl built by ctl, else the one on PATH."""
    explicit = os.environ.get("RED_TEST_KUBECTL")
    if explicit:
        return explicit
    built = _bin_dir() / "kubectl"
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    found = shutil.which("kubectl")
    if found:
        return found
    raise RuntimeError("no kubectl: build it with `tests/cluster/ctl build` or set RED_TEST_KUBECTL")


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


class Kube:
    """A handle on a ready cluster."""

    def __init__(self, kubeconfig: str, started_here: bool = False):
        self.kubeconfig = kubeconfig
        self.started_here = started_here
        self.kubectl_path = _find_kubectl()
        self._api = None

    # ------------------------------------------------------------- python client
    @property
    def api(self):
        """A ``kubernetes.client.ApiClient`` for this cluster (created lazily)."""
        if self._api is None:
            from kubernetes import config

            self._api = config.new_client_from_config(config_file=self.kubeconfig)
        return self._api

    @property
    def core(self):
        from kubernetes import client

        return client.CoreV1Api(self.api)

    @property
    def custom(self):
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    # ------------------------------------------------------------------ kubectl
    def env(self) -> dict[str, str]:
        """Environment for subprocesses that should talk to this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
        namespace: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Run real kubectl against this cluster. Raises KubectlError if check and rc != 0."""
        cmd = [self.kubectl_path, "--kubeconfig", self.kubeconfig]
        if namespace:
            cmd += ["--namespace", namespace]
        cmd += list(args)
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def token_kubeconfig(self, token: str, path: str | Path, server: str | None = None) -> Path:
        """Write a kubeconfig that authenticates ONLY by a bearer token (same CA; `server` may point at a relay)."""
        cfg = json.loads(self.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout)
        cluster = cfg["clusters"][0]
        if server:
            cluster = {**cluster, "cluster": {**cluster["cluster"], "server": server}}
        token_cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "token", "context": {"cluster": cluster["name"], "user": "token"}}],
            "current-context": "token",
        }
        Path(path).write_text(json.dumps(token_cfg))
        return Path(path)

    def service_account_token(self, namespace: str, name: str, duration: str = "1h") -> str:
        """A token for `name` from the TokenRequest API, as the kubelet would mount into a Pod."""
        return self.kubectl("create", "token", name, f"--duration={duration}", namespace=namespace).stdout.strip()

    def kubectl_as_token(self, token: str, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        """Run kubectl authenticated ONLY by a bearer token (same server/CA, no client cert)."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return Kube(str(self.token_kubeconfig(token, Path(tmp) / "token.kubeconfig"))).kubectl(*args, **kw)

    def kubectl_json(self, *args: str, **kw: Any) -> Any:
        """``kubectl ... -o json`` parsed."""
        return json.loads(self.kubectl(*args, "-o", "json", **kw).stdout)

    def apply(self, manifest: str | dict | list, namespace: str | None = None) -> None:
        """``kubectl apply -f -`` of a YAML/JSON string or (list of) dict(s)."""
        if not isinstance(manifest, str):
            items = manifest if isinstance(manifest, list) else [manifest]
            manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        self.kubectl("apply", "-f", "-", input=manifest, namespace=namespace)

    def apply_crd(self, path: str | Path, name: str = "federations.red.dev") -> None:
        """Apply a CRD server-side (as its size needs) and wait until it is Established.

        Polled here rather than with ``kubectl wait --for=condition=Established``: right after an apply the
        CRD may have no ``status.conditions`` yet, and kubectl then fails at once ("<nil> is of the type
        <nil>") instead of waiting."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))

        def established() -> bool:
            conditions = self.kubectl_json("get", "crd", name).get("status", {}).get("conditions") or []
            return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

        self.wait_for(established, timeout=60, message=f"CRD {name} to be Established")

    # ------------------------------------------------------------------ waiting
    @staticmethod
    def wait_for(
        predicate: Callable[[], Any],
        timeout: float = 60,
        interval: float = 0.5,
        message: str | Callable[[], str] = "condition",
    ) -> Any:
        """Poll ``predicate`` until it returns something truthy; return it.

        Exceptions from the predicate count as "not yet" (the last one is reported).
        """
        deadline = time.monotonic() + timeout
        last_exc: BaseException | None = None
        while True:
            try:
                result = predicate()
                if result:
                    return result
            except Exception as exc:  # noqa: BLE001 - reported below
                last_exc = exc
            if time.monotonic() >= deadline:
                what = message() if callable(message) else message
                detail = f" (last error: {last_exc!r})" if last_exc else ""
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}{detail}")
            time.sleep(interval)


def _ctl(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(CTL), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _wants_cluster(item: pytest.Item) -> bool:
    return bool(CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ())))


TIERS = ("unit", "ray", "cluster", "e2e")
_tier_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Time each tier spends, fixtures included (the first cluster test's share holds `ctl up`)."""
    tier = next((t for t in TIERS if t in report.keywords), "unmarked")
    _tier_seconds[tier] = _tier_seconds.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Where the suite's time went, tier by tier: CI has 90 minutes (issue 38)."""
    if _tier_seconds:
        parts = [f"{tier} {_tier_seconds[tier] / 60:.1f} min" for tier in (*TIERS, "unmarked") if tier in _tier_seconds]
        terminalreporter.write_sep("=", "time by tier: " + ", ".join(parts))


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` deselection: `pytest -m unit` must never build Kubernetes
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Build the control-plane binaries before any test runs, outside per-test timeouts.

    Only when a selected test needs the cluster and no external cluster is given: a cold
    build (kubernetes from source) takes far longer than the per-test timeout.
    """
    if os.environ.get("RED_TEST_KUBECONFIG") or config.option.collectonly:
        return
    if not any(_wants_cluster(item) for item in items):
        return
    sys.stderr.write(
        "\n[conftest] tests/cluster/ctl build: checking the control-plane binaries"
        " (a cold build compiles kubernetes from source: about 20 min on 2 cores)\n"
    )
    proc = subprocess.run([str(CTL), "build"], stdin=subprocess.DEVNULL, text=True, capture_output=True)
    if proc.returncode != 0:
        # don't fail collection: the `kube` fixture will retry and report it per test
        sys.stderr.write(f"[conftest] ctl build failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}\n")


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    external = os.environ.get("RED_TEST_KUBECONFIG")
    if external:
        if not Path(external).is_file():
            pytest.fail(f"RED_TEST_KUBECONFIG={external} does not exist")
        k = Kube(external, started_here=False)
        yield k
        k.close()
        return

    already = _ctl("status").returncode == 0
    try:
        proc = _ctl("up", timeout=float(os.environ.get("RED_TEST_CLUSTER_UP_TIMEOUT", 3600)))
    except subprocess.TimeoutExpired as exc:
        if not already:
            _ctl("down", timeout=300)
        pytest.fail(f"tests/cluster/ctl up timed out:\n{(exc.stderr or b'')[-6000:]!r}", pytrace=False)
    if proc.returncode != 0:
        if not already:  # don't leave half a control plane running
            _ctl("down", timeout=300)
        pytest.fail(f"tests/cluster/ctl up failed (rc={proc.returncode}):\n{proc.stderr[-6000:]}", pytrace=False)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if not last.startswith("KUBECONFIG="):
        pytest.fail(f"tests/cluster/ctl up printed no KUBECONFIG= line:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    k = Kube(last.split("=", 1)[1], started_here=not already)
    try:
        yield k
    finally:
        k.close()
        if k.started_here and not os.environ.get("RED_TEST_KEEP_CLUSTER"):
            down = _ctl("down", timeout=300)
            if down.returncode != 0:
                sys.stderr.write(f"[conftest] ctl down failed: {down.stderr[-2000:]}\n")


@pytest.fixture(scope="session")
def kubectl(kube: Kube) -> Callable[..., subprocess.CompletedProcess]:
    return kube.kubectl


# Pods of a test namespace run on kwok's fake nodes, as a plain operator test expects (Running at once, no
# containers): the API server's PodNodeSelector and PodTolerationRestriction admission plugins read these
# annotations (tests/cluster/ctl enables them) and tolerate the taint that keeps other Pods off kwok's CPU
# nodes. A test whose Pods must really run asks for `node_namespace` instead, which lands on the real node.
KWOK_ONLY = {
    "scheduler.alpha.kubernetes.io/node-selector": "type=kwok",
    "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
        [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
    ),
}


# Pod Security admission's strictest profile, enforced (Pods that fail it are refused), at the newest version.
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def _test_namespace(
    kube: Kube, request: pytest.FixtureRequest, annotations: dict[str, str], labels: dict[str, str] | None = None
) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-") or "t"
    name = f"t-{base}-{uuid.uuid4().hex[:6]}"
    doc = {"apiVersion": "v1", "kind": "Namespace"}
    labels = {"red.test/ephemeral": "true", **(labels or {})}
    doc["metadata"] = {"name": name, "labels": labels, "annotations": annotations}
    kube.kubectl("create", "-f", "-", input=json.dumps(doc))
    try:
        yield name
    finally:
        if not os.environ.get("RED_TEST_KEEP_NAMESPACES"):
            kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, its Pods on kwok's nodes; deleted (not awaited) afterwards."""
    yield from _test_namespace(kube, request, KWOK_ONLY)


@pytest.fixture
def node_namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace whose Pods the scheduler places as in any cluster: on the real node, for this suite.
    It enforces Pod Security `restricted`, as locked-down clusters do: every Pod Red creates must pass."""
    yield from _test_namespace(kube, request, {}, RESTRICTED)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 wire-protocol server on 127.0.0.1 (moto's), for the whole session: its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, and the standard AWS variables pointing at it, as a Secret would set them: its URI."""
    from pyarrow import fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "red-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "red-test-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    bucket = f"red-{uuid.uuid4().hex[:10]}"
    fs.S3FileSystem(endpoint_override=s3_server, region="us-east-1", allow_bucket_creation=True).create_dir(bucket)
    return f"s3://{bucket}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1 for the whole session: a SQLite backend, artifacts stored
    by the server itself (clients upload over HTTP, as to a remote one). Its URL."""
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # The console script installed beside the interpreter running the tests, else the one on PATH.
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    cmd = [
        mlflow or "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination", str(root / "artifacts"),
        "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server writes it until the session ends
    # A session of its own: the server's worker processes go with it.
    # No job runner: it serves MLflow's GenAI jobs, which these tests never start, with a dozen processes.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )

    # A first start on a cold machine creates the SQLite schema: tens of seconds on two loaded cores.
    deadline = time.monotonic() + 180
    while True:
        problem = f"mlflow server exited with {proc.returncode}" if proc.poll() is not None else None
        if problem is None:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                problem = f"mlflow server at {url} not healthy within 180s"
        if problem:
            _stop_group(proc)
            log.close()
            pytest.fail(f"{problem}:\n{(root / 'server.log').read_text(errors='replace')[-4000:]}", pytrace=False)
        time.sleep(0.25)
    try:
        yield url
    finally:
        _stop_group(proc)
        log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group this fixture started, SIGKILL to whatever of it is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
