"""`red serve` as a user runs it: a finished run's model behind Ray Serve, answering real HTTP requests."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
import torch

from red_api.manifest import load_manifest
from red_api.names import MANIFEST
from red_runtime.apps.artifacts import load_model
from tests.runtime.conftest import example
from tests.runtime.test_cli import red, write

pytestmark = pytest.mark.ray

START_S = 300  # an embedded Ray, Serve's controller and proxy, a replica importing torch: on 2 busy cores
TOKEN = "token-of-the-suite"  # the module's server answers only requests that carry it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, timeout=60, token=TOKEN):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), json.loads(resp.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A finished digits run: four nodes, three rounds."""
    tmp = tmp_path_factory.mktemp("serve-run")
    out = tmp / "run"
    proc = red("run", str(write(tmp, example(rounds=3, **{"nodes.count": 4}))), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def expected(run_folder):
    """The run's model evaluated in this process on the first 100 test-set examples."""
    model, source = load_model(load_manifest(str(run_folder / MANIFEST)), run_folder)
    test = source.test_set()
    x = test.x[:100]
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    return x, probabilities.argmax(axis=1), probabilities, test.y[:100]


def start_serve(run, port, log, *extra, env=None):
    """`red serve` in a session of its own with SIGINT at its default, as a shell's foreground job has it.
    Its output goes to a file: Serve's logs would fill a pipe nobody reads until the end."""
    with open(log, "w") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "red_runtime.apps.cli", "serve", str(run), "--port", str(port), *extra],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def wait_healthy(proc, port, log):
    """Until `red serve` says it serves and /healthz answers 200 (its reply)."""
    deadline = time.monotonic() + START_S
    while True:
        assert proc.poll() is None, log.read_text()[-4000:]
        if "red: serving " in log.read_text():
            try:
                status, _, body = request(port, "GET", "/healthz", timeout=10)
                if status == 200:
                    return body
            except (OSError, ValueError):  # not listening yet, or the proxy's plain-text answer before the app
                pass
        assert time.monotonic() < deadline, f"not serving within {START_S}s:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(run_folder, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    port = free_port()
    proc = start_serve(run_folder, port, log, "--token", TOKEN)
    try:
        health = wait_healthy(proc, port, log)
        yield {"proc": proc, "port": port, "log": log, "health": health}
    finally:
        if proc.poll() is None:  # a test failed before the signal test stopped it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_healthz_names_the_run_and_its_inputs(server, run_folder):
    assert server["health"]["status"] == "ok"
    assert server["health"]["run"] == "digits-star"
    assert server["health"]["input_shape"] == [1, 8, 8] and server["health"]["classes"] == 10
    assert f"red: serving {run_folder} at http://127.0.0.1:{server['port']}/predict" in server["log"].read_text()


def test_100_test_set_requests_get_the_in_process_predictions(server, expected):
    x, labels, probabilities, truth = expected
    port = server["port"]

    def predict_one(i):
        # Half the examples flat (64 numbers), half nested as the model's input shape (1x8x8).
        example = x[i].ravel().tolist() if i % 2 else x[i].tolist()
        status, kind, body = request(port, "POST", "/predict", {"inputs": [example]})
        assert status == 200 and kind == "application/json", body
        return body

    answers = [predict_one(i) for i in range(20)]  # one at a time
    with ThreadPoolExecutor(16) as pool:  # and many at once, so Serve batches them
        answers += list(pool.map(predict_one, range(20, 100)))
    got = np.array([a["predictions"][0] for a in answers])
    np.testing.assert_array_equal(got, labels)
    np.testing.assert_allclose([a["probabilities"][0] for a in answers], probabilities, atol=1e-5)
    assert (got == truth).mean() > 0.5, "the served model has learned the digits"
    health = request(port, "GET", "/healthz")[2]
    assert health["largest_batch"] > 1, f"concurrent requests were never batched: {health}"


def test_requests_of_several_examples_get_their_own_answers(server, expected):
    """Requests of different sizes batched together: each gets back exactly its own examples' answers."""
    x, labels, _, _ = expected
    port = server["port"]
    cuts = np.cumsum([0, 1, 7, 3, 12, 5, 2, 9, 1, 30, 30])
    assert cuts[-1] == 100

    def predict(k):
        lo, hi = cuts[k], cuts[k + 1]
        status, _, body = request(port, "POST", "/predict", {"inputs": x[lo:hi].reshape(hi - lo, -1).tolist()})
        assert status == 200, body
        assert len(body["predictions"]) == len(body["probabilities"]) == hi - lo
        return body["predictions"]

    with ThreadPoolExecutor(len(cuts) - 1) as pool:
        got = list(pool.map(predict, range(len(cuts) - 1)))
    for k, predictions in enumerate(got):
        assert predictions == labels[cuts[k] : cuts[k + 1]].tolist()


NAN = ("[" + ", ".join(["NaN"] + ["0.5"] * 63) + "]").encode()


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        ("POST", "/predict", b"{inputs: 1", 400, "the body is not JSON (Expecting property name"),
        ("POST", "/predict", {"input": [[0.5] * 64]}, 400, 'missing "inputs": expected a JSON object {"inputs": '),
        ("POST", "/predict", {"inputs": []}, 400, '"inputs" is an empty list'),
        (
            "POST",
            "/predict",
            {"inputs": [[0.5] * 64, [0.5] * 10]},
            400,
            "inputs[1]: expected a list of 64 numbers, or nested lists of shape 1x8x8, got a list of 10 numbers",
        ),
        ("POST", "/predict", {"inputs": [["0.5"] * 64]}, 400, 'inputs[0][0]: "0.5" is not a number'),
        ("POST", "/predict", b'{"inputs": [' + NAN + b"]}", 400, "inputs[0][0]: nan is not a finite number"),
        ("POST", "/predict", b'{"inputs": [[' + b"9" * 5000 + b"]]}", 400, "the body is not JSON (Exceeds the limit"),
        ("POST", "/predict", b"\xff\xfe{", 400, "the body is not JSON"),
        ("GET", "/predict", None, 405, "GET /predict: use POST with a JSON body"),
        ("POST", "/predictions", {"inputs": [[0.5] * 64]}, 404, "/predictions: no such endpoint"),
    ],
    ids=[
        "not-json",
        "no-inputs",
        "empty",
        "wrong-shape",
        "strings",
        "nan",
        "huge-integer",
        "not-utf",
        "get-predict",
        "unknown-path",
    ],
)
def test_bad_requests_get_a_4xx_saying_what_was_expected(server, method, path, body, status, message):
    got, kind, answer = request(server["port"], method, path, body)
    assert (got, kind) == (status, "application/json")
    assert list(answer) == ["error"] and message in answer["error"], answer


@pytest.mark.parametrize("token", [None, "not-the-token"])
def test_a_request_without_the_token_gets_401_and_no_prediction(server, token):
    status, kind, answer = request(server["port"], "POST", "/predict", {"inputs": [[0.5] * 64]}, token=token)
    assert (status, kind) == (401, "application/json") and "bearer token" in answer["error"], answer
    assert request(server["port"], "GET", "/healthz", token=token)[0] == 401, "nor what the model is"


def test_a_64_mib_body_gets_413_before_it_is_sent(server):
    """Declared 64 MiB, the body never follows: the answer comes from the Content-Length alone (were the body
    read first, this request would wait for bytes that never come)."""
    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=60)
    try:
        conn.putrequest("POST", "/predict")
        for key, value in {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
                           "Content-Length": str(64 * 2**20)}.items():  # fmt: skip
            conn.putheader(key, value)
        conn.endheaders(b'{"inputs": [[0.5')
        resp = conn.getresponse()
        assert resp.status == 413, resp.read()
        assert "the body is over 16 MiB" in json.loads(resp.read())["error"]
    finally:
        conn.close()


def test_sigint_stops_serve_and_ray_cleanly(server):
    """Last in this file: it ends the module's server."""
    proc, port = server["proc"], server["port"]
    assert request(port, "GET", "/healthz")[0] == 200, "bad requests left it serving"
    spawned = psutil.Process(proc.pid).children(recursive=True)
    assert spawned, "an embedded Ray runs under red serve"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 0, server["log"].read_text()[-4000:]
    log = server["log"].read_text()
    assert "SIGINT: shutting Serve and Ray down; send it again to stop at once" in log
    assert "red: stopped by signal SIGINT; Serve and Ray shut down" in log
    _, alive = psutil.wait_procs(spawned, timeout=30)
    assert alive == [], [p.info for p in alive]
    with socket.create_server(("127.0.0.1", port)):  # the port is free again
        pass


def test_a_folder_that_is_not_a_finished_run_fails_before_ray(tmp_path, run_folder):
    gone = red("serve", str(tmp_path / "nope"))
    assert gone.returncode == 2 and f"red: {tmp_path / 'nope'}: no such run folder" in gone.stderr
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / MANIFEST).write_text((run_folder / MANIFEST).read_text())
    half = red("serve", str(tmp_path / "half"))
    assert half.returncode == 2
    assert f"{tmp_path / 'half'}: not a finished run folder: no model.pt" in half.stderr
    assert "Ray" not in gone.stderr + half.stderr


def test_serving_beyond_this_machine_needs_a_token(run_folder):
    proc = red("serve", str(run_folder), "--host", "0.0.0.0")
    assert proc.returncode == 2 and "--host 0.0.0.0: other machines could reach the model; give --token" in proc.stderr
    proc = red("serve", str(run_folder), "--host", "127.example.com")
    assert proc.returncode == 2 and "--host 127.example.com: other machines" in proc.stderr
    proc = red("serve", str(run_folder), "--address", "ray://ray-head:10001")
    assert proc.returncode == 2 and "--address ray://ray-head:10001: a shared cluster's Serve" in proc.stderr


def test_a_port_in_use_fails_before_ray(run_folder):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = red("serve", str(run_folder), "--port", str(port))
    assert proc.returncode == 2 and f"--port {port}: 127.0.0.1:{port} is in use" in proc.stderr


def test_a_model_in_object_storage_serves_the_same(s3, run_folder, expected):
    from red_runtime.apps.serving import ModelServer
    from red_runtime.report.storage import Mirror

    uri = f"{s3}/runs/digits-star"
    Mirror(run_folder, uri).push()
    server = ModelServer(uri)
    x, labels, probabilities, _ = expected
    predictions, got = server.predict(x)
    assert predictions == labels.tolist()
    np.testing.assert_allclose(got, probabilities, atol=1e-6)
    assert server.describe() == {"run": "digits-star", "input_shape": [1, 8, 8], "classes": 10}
    missing = red("serve", f"{s3}/runs/other", env=dict(os.environ))
    assert missing.returncode == 2
    assert f"{s3}/runs/other: not a finished run folder: no model.pt or federation.yaml" in missing.stderr
