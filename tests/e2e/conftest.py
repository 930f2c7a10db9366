"""The whole stack, with only the containers simulated.

Real: the API server with etcd, kube-controller-manager, kube-scheduler, the Federation CRD, `red operator`,
the KubeRay operator, Ray (`ray start --head` with its dashboard), the driver and its training. Simulated:
the head Pod's container. kwok marks the Pod Running; a real Ray head on 127.0.0.1 plays its container; an
/etc/hosts entry makes the head Service's DNS name resolve to it, so KubeRay submits the RayJob (HTTPMode)
to that dashboard exactly as it would in a cluster. The Ray head carries only a token of the Federation's
own ServiceAccount (TokenRequest API), which is what the head Pod would have mounted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.e2e.real_node import chart, real_node  # noqa: F401 - fixtures of the tests in real Pods
from tests.helm.conftest import helm  # noqa: F401 - the chart fixture installs with it
from tests.operator.conftest import ROOT, crd, free_port, operator  # noqa: F401 - fixtures shared with the operator tests

DASHBOARD_PORT = 8265  # the head Service's "dashboard" port, which KubeRay's HTTPMode submits to
HOSTS = Path("/etc/hosts")
HOSTS_MARK = "# red-e2e"


@pytest.fixture(autouse=True)
def _local_control_plane_only():
    if os.environ.get("RED_TEST_KUBECONFIG"):
        pytest.skip("e2e plays the head Pod with a Ray on 127.0.0.1, which a remote cluster's KubeRay cannot reach")


def head_service_host(cluster: str, namespace: str) -> str:
    """The name KubeRay dials for a RayCluster's dashboard (its head Service, cluster.local domain)."""
    return f"{cluster}-head-svc.{namespace}.svc.cluster.local"


@contextmanager
def hosts_entry(hostname: str, address: str = "127.0.0.1") -> Iterator[None]:
    """Resolve `hostname` to `address` for every process on this machine, then take the line out again."""
    line = f"{address} {hostname} {HOSTS_MARK}\n"
    try:
        with HOSTS.open("a") as fh:
            fh.write(line)
    except OSError as err:
        pytest.fail(f"e2e needs to add {hostname} to {HOSTS} (run the suite as root): {err}")
    try:
        yield
    finally:
        kept = [entry for entry in HOSTS.read_text().splitlines(keepends=True) if entry != line]
        HOSTS.write_text("".join(kept))


class RayHead:
    """`ray start --head --block` in its own process group: the head Pod's container, on this machine."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path = env, log_path
        self.headers = {"x-ray-authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"}  # as KubeRay sends it
        self.temp_dir = tempfile.mkdtemp(prefix="red-e2e-", dir="/tmp")  # short: Ray's socket paths are bounded
        self.proc: subprocess.Popen | None = None
        self.dashboard = f"http://127.0.0.1:{DASHBOARD_PORT}"

    def start(self, timeout: float = 120) -> None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", DASHBOARD_PORT)) == 0:
                pytest.fail(f"port {DASHBOARD_PORT} is taken: stop the Ray dashboard that holds it (`ray stop`)")
        ray_cli = str(Path(sys.executable).parent / "ray")
        cmd = [ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}"]
        cmd += ["--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD_PORT}", "--include-dashboard=true"]
        cmd += ["--num-cpus=2", "--num-gpus=0", f"--temp-dir={self.temp_dir}", "--disable-usage-stats"]
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"ray start exited {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}")
            try:
                request = urllib.request.Request(f"{self.dashboard}/api/version", headers=self.headers)
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"the Ray dashboard did not answer within {timeout}s:\n{self.log_path.read_text()[-4000:]}")

    def jobs(self) -> list[dict]:
        """What Ray itself knows about submitted jobs (its Job API, as KubeRay sees it)."""
        request = urllib.request.Request(f"{self.dashboard}/api/jobs/", headers=self.headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def logs(self, submission_id: str) -> str:
        request = urllib.request.Request(f"{self.dashboard}/api/jobs/{submission_id}/logs", headers=self.headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["logs"]

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # Ray's workers may outlive `ray start --block` briefly; nothing of this head may survive the test.
        subprocess.run(["pkill", "-KILL", "-f", self.temp_dir], check=False)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.proc = None


@pytest.fixture
def ray_head(tmp_path) -> Iterator[callable]:
    """Start a Ray head with the head Pod's credentials: `ray_head(kubeconfig_path, ray_token)` -> RayHead."""
    heads: list[RayHead] = []

    def start(kubeconfig: Path, ray_token: str, extra_env: dict[str, str] | None = None) -> RayHead:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "KUBE"))}
        # What KubeRay and the kubelet give the head container: Ray's auth token (from the RayCluster's
        # Secret) and the ServiceAccount's token, the driver's only Kubernetes credential. tests/ is on the
        # path for the test models, as a user's image would carry their own code.
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=ray_token, KUBECONFIG=str(kubeconfig))
        env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **(extra_env or {}))
        # The RayJob's entrypoint says `python`: let that be this interpreter (a virtualenv that is not
        # activated, too), not whichever python comes first on PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        head = RayHead(env, tmp_path / "ray-head.log")
        heads.append(head)
        head.start()
        return head

    yield start
    for head in heads:
        head.stop()


class Relay:
    """A TCP relay to the API server that can go dark: in-flight connections reset, new ones refused, as when
    the API server restarts. Only the process pointed at the relay sees the outage; the rest of the shared
    control plane keeps running."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener:
            with suppress(OSError):  # shutdown, not just close: it wakes the thread blocked in accept()
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relay(kube) -> Iterator[Relay]:
    server = json.loads(kube.kubectl("config", "view", "--minify", "-o", "json").stdout)["clusters"][0]["cluster"]
    host, _, port = server["server"].removeprefix("https://").partition(":")
    r = Relay((host, int(port)))
    yield r
    r.cut()
