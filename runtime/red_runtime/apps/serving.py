"""Serving a run's final model with Ray Serve: `red serve RUN`, or a RayService importing `build_app`.

    POST /predict  {"inputs": [[...], ...]}  ->  {"predictions": [...], "probabilities": [[...], ...]}
    GET  /healthz                            ->  {"status": "ok", "run": NAME, "input_shape": [...], ...}

With a token (`red serve --token`, build_app's tokenSha256), every request must carry `Authorization: Bearer
TOKEN` or gets a 401; the application keeps only the token's SHA-256. A body over MAX_BODY_BYTES is a 413,
answered from its Content-Length before any of it is read (or as soon as a chunked one passes the limit), and
Serve's proxy ends a request that takes longer than red_api.names.SERVE_REQUEST_TIMEOUT_S.

Inputs are in the scale of the test set the run was evaluated on: for `digits`, each example is the
8x8 image divided by 16 (pixels 0..1, as red_runtime.learn.data.load_digits_pool scales them), 64 numbers
flat or nested as [[[8 numbers] x 8]] (shape 1x8x8); for `synthetic`, `features` numbers. Bad input is
a 400 whose `error` says what was expected; the model call goes through `@serve.batch`, so requests
that arrive together are one forward pass.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from red_api.manifest import load_manifest
from red_api.names import MANIFEST, MODEL, SERVE_REQUEST_TIMEOUT_S
from red_runtime import strict_json
from red_runtime.apps.artifacts import load_model, require_trust
from red_runtime.apps.fetch import fetch_folder
from red_runtime.engine.session import ray_session
from red_runtime.engine.stopping import StopRequest
from red_runtime.report.storage import Mirror, StorageError, is_remote

# A request's examples; more is a client's mistake (or an attempt to tie a replica up), not a batch.
MAX_EXAMPLES = 1024
# Serve's batching: at most this many requests per forward pass, waiting this long for company. A
# replica takes more requests at once than one batch, so the next batch fills while one runs.
MAX_BATCH_REQUESTS = 64
BATCH_WAIT_S = 0.005
MAX_ONGOING_REQUESTS = 2 * MAX_BATCH_REQUESTS
FLOAT32_MAX = float(np.finfo(np.float32).max)
# A request's body: MAX_EXAMPLES digits images as JSON take about 2 MiB; larger inputs take fewer per request.
MAX_BODY_BYTES = 16 * 2**20
APP_ARGS = ("run", "replicas", "cpu", "gpu", "trustCode", "tokenSha256")


def token_sha256(token: str) -> str:
    """What the application keeps of a bearer token: its SHA-256, so that neither Serve's config nor the
    Ray dashboard shows the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def authorized(header: str | None, expected_sha256: str) -> bool:
    """Whether an Authorization header carries the bearer token whose SHA-256 is `expected_sha256` (compared
    in constant time); with no token configured, every request is."""
    if not expected_sha256:
        return True
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token_sha256(token.strip()), expected_sha256)


def body_too_large(content_length: str | None) -> bool:
    """A declared Content-Length over MAX_BODY_BYTES (or not a number): refused before the body is read."""
    if content_length is None:
        return False
    return not content_length.strip().isdigit() or int(content_length) > MAX_BODY_BYTES


class InputError(ValueError):
    """A request the model cannot take; the message says what was expected (an HTTP 400)."""


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _expected(shape: Sequence[int]) -> str:
    size = math.prod(shape)
    if len(shape) == 1:
        return f"a list of {size} numbers"
    return f"a list of {size} numbers, or nested lists of shape {_shape_text(shape)}"


def _number(value: Any, where: str) -> float:
    # bool is an int to Python, but `true` is not a pixel.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: {_shown(value)} is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits: JSON has no limit
        number = math.inf if value > 0 else -math.inf
    else:
        if not math.isfinite(number):
            raise InputError(f"{where}: {value} is not a finite number")
    if abs(number) > FLOAT32_MAX:
        raise InputError(f"{where}: {_shown(value)} is out of the float32 range")
    return number


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, str | int | float | bool | type(None)):
        text = json.dumps(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return "an object"


def _nested(value: Any, shape: Sequence[int], where: str, expected: str, out: list[float]) -> None:
    if not isinstance(value, list) or len(value) != shape[0]:
        raise InputError(f"{where}: expected a list of {shape[0]}, got {_shown(value)} (each example: {expected})")
    for j, item in enumerate(value):
        if len(shape) == 1:
            out.append(_number(item, f"{where}[{j}]"))
        else:
            _nested(item, shape[1:], f"{where}[{j}]", expected, out)


def _example(value: Any, index: int, shape: Sequence[int]) -> list[float]:
    where = f"inputs[{index}]"
    size = math.prod(shape)
    if not isinstance(value, list):
        raise InputError(f"{where}: expected {_expected(shape)}, got {_shown(value)}")
    flat = not any(isinstance(v, list) for v in value)
    if flat:
        if len(value) != size:
            raise InputError(f"{where}: expected {_expected(shape)}, got a list of {len(value)} numbers")
        return [_number(v, f"{where}[{j}]") for j, v in enumerate(value)]
    if len(shape) == 1:
        raise InputError(f"{where}: expected {_expected(shape)}, got nested lists")
    out: list[float] = []
    _nested(value, shape, where, _expected(shape), out)
    return out


def parse_inputs(body: Any, input_shape: Sequence[int], max_examples: int = MAX_EXAMPLES) -> np.ndarray:
    """The examples of a decoded JSON request body, as float32 of shape (n, *input_shape).

    `body` must be {"inputs": [example, ...]} with 1 to `max_examples` examples, each either flat
    (prod(input_shape) numbers) or nested in input_shape; every number finite. The numbers are taken as
    they are, in the scale of the run's test set (digits: pixel / 16, so 0..1). Raises InputError (a
    ValueError) naming the example index and the shape expected.
    """
    shape = tuple(int(d) for d in input_shape)
    usage = f'expected a JSON object {{"inputs": [example, ...]}}, each example {_expected(shape)}'
    if not isinstance(body, dict):
        raise InputError(f"the body is not a JSON object: {usage}")
    if "inputs" not in body:
        raise InputError(f'missing "inputs": {usage}')
    examples = body["inputs"]
    if not isinstance(examples, list):
        raise InputError(f'"inputs" is not a list: {usage}')
    if not examples:
        raise InputError(f'"inputs" is an empty list: {usage}')
    if len(examples) > max_examples:
        raise InputError(f'"inputs" has {len(examples)} examples: at most {max_examples} per request')
    rows = [_example(value, i, shape) for i, value in enumerate(examples)]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), *shape)


def missing_files(location: str) -> list[str]:
    """The files a servable run folder lacks (model.pt, federation.yaml), local or s3://; OSError if the
    folder is not there at all, StorageError if object storage cannot be read."""
    needed = [MODEL, MANIFEST]
    if is_remote(location):
        from pyarrow import fs

        mirror = Mirror(Path(tempfile.gettempdir()), location)  # for its checks and listing; nothing is copied
        mirror.check()
        try:
            infos = mirror.fs.get_file_info([f"{mirror.root}/{name}" for name in needed])
        except OSError as err:
            raise StorageError(f"{location}: cannot read: {err}") from err
        return [name for name, info in zip(needed, infos) if info.type != fs.FileType.File]
    folder = Path(location)
    if not folder.is_dir():
        raise FileNotFoundError(f"{location}: no such run folder")
    return [name for name in needed if not (folder / name).is_file()]


def check_run(location: str) -> None:
    """Raise (naming the location) unless it holds a finished run's model.pt and federation.yaml."""
    missing = missing_files(location)
    if missing:
        raise FileNotFoundError(
            f"{location}: not a finished run folder: no {' or '.join(missing)} (`red run` writes both when it ends)"
        )


class ModelServer:
    """A run folder's final model, rebuilt from its federation.yaml, ready to predict.

    An s3:// folder is fetched into a temporary folder (credentials from the environment), loaded, and
    the copy removed: the model lives in memory from then on.
    """

    def __init__(self, location: str, device: str = "cpu", trust_code: bool | list[str] = False):
        import torch  # deferred: torch only in a replica, not in `red serve`'s own process

        self.location = location
        staging = Path(tempfile.mkdtemp(prefix="red-serve-")) if is_remote(location) else None
        try:
            if staging is not None:
                fetch_folder(location, staging)
            folder = staging or Path(location)
            check_run(str(folder))
            fed = load_manifest(str(folder / MANIFEST))
            require_trust(fed, location, trust_code)
            model, source = load_model(fed, folder)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        self.name = fed.name
        self.input_shape = tuple(source.input_shape)
        self.classes = source.classes
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def predict(self, batch: np.ndarray) -> tuple[list[int], list[list[float]]]:
        """Class and class probabilities (softmax) for each example of `batch`, shaped (n, *input_shape)."""
        import torch

        with torch.inference_mode():
            logits = self.model(torch.as_tensor(batch, dtype=torch.float32, device=self.device))
            probabilities = torch.softmax(logits, dim=1).cpu()
        return probabilities.argmax(dim=1).tolist(), probabilities.tolist()

    def describe(self) -> dict[str, Any]:
        return {"run": self.name, "input_shape": list(self.input_shape), "classes": self.classes}


def _response(status: int, payload: Mapping[str, Any]) -> Any:
    from starlette.responses import Response

    # strict JSON: a diverged model's NaN probabilities become null, never an unparseable body.
    return Response(strict_json.dumps(payload), status_code=status, media_type="application/json")


class ModelDeployment:
    """The Serve replica: HTTP in, `@serve.batch` around the model, HTTP out."""

    def __init__(self, run: str, gpu: float = 0.0, trust_code: bool | list[str] = False, token_hash: str = ""):
        from ray import serve  # deferred: Serve, only in a replica

        self.token_hash = token_hash
        self.server = ModelServer(run, device="cuda" if gpu > 0 else "cpu", trust_code=trust_code)
        # Decorated here, not on the class, so that importing this module (for parse_inputs) needs no Ray.
        self._predict_batch = serve.batch(max_batch_size=MAX_BATCH_REQUESTS, batch_wait_timeout_s=BATCH_WAIT_S)(
            self._predict_many
        )
        self.requests = self.batches = self.largest_batch = 0

    async def _predict_many(self, batches: list[np.ndarray]) -> list[tuple[list[int], list[list[float]]]]:
        """One forward pass over every waiting request's examples, split back per request."""
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batches))
        predictions, probabilities = self.server.predict(np.concatenate(batches))
        out, start = [], 0
        for batch in batches:
            end = start + len(batch)
            out.append((predictions[start:end], probabilities[start:end]))
            start = end
        return out

    async def __call__(self, request: Any) -> Any:
        path, method = request.url.path.rstrip("/") or "/", request.method
        if not authorized(request.headers.get("authorization"), self.token_hash):
            reply = _response(401, {"error": "missing or wrong bearer token: send Authorization: Bearer TOKEN"})
            reply.headers["WWW-Authenticate"] = 'Bearer realm="red"'
            return reply
        if path == "/healthz":
            if method != "GET":
                return _response(405, {"error": f"{method} /healthz: use GET"})
            stats = {"requests": self.requests, "batches": self.batches, "largest_batch": self.largest_batch}
            return _response(200, {"status": "ok", **self.server.describe(), **stats})
        if path != "/predict":
            return _response(404, {"error": f"{request.url.path}: no such endpoint (POST /predict, GET /healthz)"})
        if method != "POST":
            return _response(405, {"error": f"{method} /predict: use POST with a JSON body"})
        raw = await _bounded_body(request)
        if raw is None:
            limit = f"{MAX_BODY_BYTES // 2**20} MiB"
            return _response(413, {"error": f"the body is over {limit}: send fewer examples per request"})
        # ValueError: JSONDecodeError, UnicodeDecodeError, and an integer past Python's 4,300 digits.
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as err:
            shape = _expected(self.server.input_shape)
            return _response(400, {"error": f'the body is not JSON ({err}): expected {{"inputs": [...]}}, {shape}'})
        try:
            batch = parse_inputs(body, self.server.input_shape)
        except InputError as err:
            return _response(400, {"error": str(err)})
        self.requests += 1
        predictions, probabilities = await self._predict_batch(batch)
        return _response(200, {"predictions": predictions, "probabilities": probabilities})


async def _bounded_body(request: Any) -> bytes | None:
    """The request's body, or None once it is known to pass MAX_BODY_BYTES: from its Content-Length before
    reading anything, else while its chunks arrive."""
    if body_too_large(request.headers.get("content-length")):
        return None
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            return None
    return bytes(raw)


def _number_arg(args: Mapping[str, Any], key: str, default: float, whole: bool) -> Any:
    """args[key] as a number (a `serve run key=value` string too); ValueError naming the key otherwise."""
    value = args.get(key, default)
    kind = "a whole number at least 1" if whole else "a number at least 0"
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value) if whole and not isinstance(value, float) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"build_app args: {key}: {value!r}: must be {kind}") from None
    if whole and (not isinstance(number, int) or number < 1):
        raise ValueError(f"build_app args: {key}: {value!r}: must be {kind}")
    if not whole and not (math.isfinite(number) and number >= 0):
        raise ValueError(f"build_app args: {key}: {value!r}: must be {kind}")
    return number


def app_options(args: Mapping[str, Any]) -> dict[str, Any]:
    """build_app's args checked: {"run": str, "replicas": int, "cpu": float, "gpu": float}."""
    if not isinstance(args, Mapping):
        raise ValueError(f"build_app args: expected a mapping with {', '.join(APP_ARGS)}, got {args!r}")
    unknown = sorted(set(args) - set(APP_ARGS))
    if unknown:
        raise ValueError(f"build_app args: {', '.join(map(str, unknown))}: unknown (known: {', '.join(APP_ARGS)})")
    run = args.get("run")
    if not isinstance(run, str) or not run.strip():
        raise ValueError(f"build_app args: run: {run!r}: must name a run folder (a local path or s3://bucket/prefix)")
    return {
        "run": run,
        "replicas": _number_arg(args, "replicas", 1, whole=True),
        "cpu": _number_arg(args, "cpu", 1.0, whole=False),
        "gpu": _number_arg(args, "gpu", 0.0, whole=False),
        "trustCode": _flag_arg(args, "trustCode"),
        "tokenSha256": _digest_arg(args, "tokenSha256"),
    }


def _digest_arg(args: Mapping[str, Any], key: str) -> str:
    """args[key]: a SHA-256 in hex, or empty for no token; ValueError naming the key otherwise."""
    value = args.get(key, "")
    if not isinstance(value, str) or (value and not re.fullmatch(r"[0-9a-f]{64}", value)):
        raise ValueError(f"build_app args: {key}: must be a token's SHA-256 in lowercase hex (64 characters)")
    return value


def _flag_arg(args: Mapping[str, Any], key: str) -> bool | list[str]:
    """args[key] as true or false (`serve run key=true` passes a string), or a list of the references trusted;
    ValueError naming the key otherwise."""
    value = args.get(key, False)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if not isinstance(value, bool):
        raise ValueError(f"build_app args: {key}: {value!r}: must be true or false, or a list of references")
    return value


def build_app(args: Mapping[str, Any]) -> Any:
    """The Serve application for `serve run red_runtime.apps.serving:build_app run=...` and a RayService's
    serveConfigV2 (import_path red_runtime.apps.serving:build_app): args {"run": LOCATION (a local run
    folder or an s3:// one), "replicas": 1, "cpu": 1, "gpu": 0, "trustCode": false}. Each replica loads the
    model itself; trustCode lets it import the code the folder's federation.yaml names (a RayService's own run
    folder, which its own driver wrote, is trusted so)."""
    from ray import serve

    opts = app_options(args)
    deployment = serve.deployment(
        ModelDeployment,
        name="red-model",
        num_replicas=opts["replicas"],
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
        ray_actor_options={"num_cpus": opts["cpu"], "num_gpus": opts["gpu"]},
    )
    return deployment.bind(opts["run"], opts["gpu"], opts["trustCode"], opts["tokenSha256"])


APP_NAME = "red"


def port_free(host: str, port: int) -> bool:
    """Whether an HTTP proxy could listen on host:port here (checked before Ray starts, not after)."""
    try:
        with socket.create_server((host, port)):
            return True
    except OSError:
        return False


def serve_until_stopped(
    options: Mapping[str, Any], host: str, port: int, address: str | None, label: str | None = None
) -> int:
    """`red serve`: run the app on an embedded Ray (or the one at `address`) until SIGINT or SIGTERM.

    The first signal ends it cleanly (exit 0: for a server that is the normal end): the application is
    deleted, and an embedded Ray's Serve and Ray are shut down. A second signal stops at once (130/143).
    """
    from ray import serve  # deferred: Serve, seconds to import, after the checks

    label = label or options["run"]
    ended = "Serve and Ray shut down" if address is None else f"application {APP_NAME!r} deleted from {address}"
    stop = StopRequest(action="shutting Serve and Ray down")
    try:
        with ray_session(address, stop):
            try:
                serve.start(http_options={"host": host, "port": port, "request_timeout_s": SERVE_REQUEST_TIMEOUT_S})
                # No access log: a line per request through Ray's log monitor costs a core's share on a small box.
                quiet = {"enable_access_log": False}
                serve.run(build_app(options), name=APP_NAME, route_prefix="/", blocking=False, logging_config=quiet)
                guarded = " (bearer token required)" if options.get("tokenSha256") else ""
                print(f"red: serving {label} at http://{host}:{port}/predict{guarded}", file=sys.stderr, flush=True)
                while not stop.wait(1.0):
                    pass
            finally:
                # On a cluster of one's own, Serve goes with Ray; on a shared one only this application does.
                if address is None:
                    serve.shutdown()
                else:
                    serve.delete(APP_NAME)
    except KeyboardInterrupt as err:
        print(f"red: {err}; {ended}", file=sys.stderr)
        return stop.exit_code
    except Exception as err:
        print(f"red: serving {label} failed: {err}", file=sys.stderr)
        return 1
    print(f"red: {stop.describe()}; {ended}", file=sys.stderr)
    return 0
