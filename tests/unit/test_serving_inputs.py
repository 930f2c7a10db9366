"""What `POST /predict` accepts, and what build_app takes: pure checks, no Ray."""

import json

import numpy as np
import pytest

from red_runtime.apps.serving import (
    MAX_BODY_BYTES,
    MAX_EXAMPLES,
    InputError,
    app_options,
    authorized,
    body_too_large,
    parse_inputs,
    token_sha256,
)

pytestmark = pytest.mark.unit

DIGITS = (1, 8, 8)


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(DIGITS, dtype=np.float32)


def test_flat_and_nested_examples_give_the_same_batch():
    a, b = image(0), image(1)
    batch = parse_inputs({"inputs": [a.ravel().tolist(), b.tolist()]}, DIGITS)
    assert batch.dtype == np.float32 and batch.shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(batch, np.stack([a, b]))


def test_integers_are_numbers_and_values_are_taken_as_they_are():
    batch = parse_inputs({"inputs": [[0, 1, 16]]}, (3,))
    np.testing.assert_array_equal(batch, [[0.0, 1.0, 16.0]])


def test_one_dimensional_inputs():
    assert parse_inputs({"inputs": [[0.5] * 5] * 3}, (5,)).shape == (3, 5)


@pytest.mark.parametrize(
    "body, message",
    [
        ([[0.0] * 64], 'the body is not a JSON object: expected a JSON object {"inputs": [example, ...]}'),
        (
            {"input": [[0.0] * 64]},
            'missing "inputs": expected a JSON object {"inputs": [example, ...]}, each '
            "example a list of 64 numbers, or nested lists of shape 1x8x8",
        ),
        ({"inputs": "0,1,2"}, '"inputs" is not a list'),
        ({"inputs": []}, '"inputs" is an empty list'),
        (
            {"inputs": [[0.0] * 64, [0.0] * 63]},
            "inputs[1]: expected a list of 64 numbers, or nested lists of shape 1x8x8, got a list of 63 numbers",
        ),
        ({"inputs": [0.5] * 64}, "inputs[0]: expected a list of 64 numbers, or nested lists of shape 1x8x8, got 0.5"),
        (
            {"inputs": [np.zeros((8, 8)).tolist()]},
            "inputs[0]: expected a list of 1, got a list of 8 (each example: "
            "a list of 64 numbers, or nested lists of shape 1x8x8)",
        ),
        ({"inputs": [np.zeros((1, 8, 7)).tolist()]}, "inputs[0][0][0]: expected a list of 8, got a list of 7"),
        ({"inputs": [["a"] * 64]}, 'inputs[0][0]: "a" is not a number'),
        ({"inputs": [[0.0] * 63 + [True]]}, "inputs[0][63]: true is not a number"),
        ({"inputs": [[0.0] * 63 + [None]]}, "inputs[0][63]: null is not a number"),
        ({"inputs": [[0.0] * 63 + [{"x": 1}]]}, "inputs[0][63]: an object is not a number"),
        ({"inputs": [[float("nan")] + [0.0] * 63]}, "inputs[0][0]: nan is not a finite number"),
        ({"inputs": [[0.0] * 10 + [float("-inf")] + [0.0] * 53]}, "inputs[0][10]: -inf is not a finite number"),
        ({"inputs": [[1e300] + [0.0] * 63]}, "inputs[0][0]: 1e+300 is out of the float32 range"),
        ({"inputs": [[-(10**400)] + [0.0] * 63]}, "inputs[0][0]: -100000000000000000000000000000000000... is out of"),
        (
            {"inputs": [[0.0] * 64] * (MAX_EXAMPLES + 1)},
            f'"inputs" has {MAX_EXAMPLES + 1} examples: at most {MAX_EXAMPLES} per request',
        ),
    ],
)
def test_bad_requests_say_what_was_expected(body, message):
    with pytest.raises(InputError) as err:
        parse_inputs(body, DIGITS)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_nested_lists_refused_for_flat_inputs():
    with pytest.raises(InputError, match=r"inputs\[0\]: expected a list of 4 numbers, got nested lists"):
        parse_inputs({"inputs": [[[1, 2], [3, 4]]]}, (4,))


def test_nan_as_json_decodes_it():
    # Python's json (and so the server) reads NaN and Infinity tokens: they must still be refused.
    body = json.loads('{"inputs": [[NaN, 1, 2]]}')
    with pytest.raises(InputError, match=r"inputs\[0\]\[0\]: nan is not a finite number"):
        parse_inputs(body, (3,))


def test_a_long_string_is_shortened_in_the_message():
    with pytest.raises(InputError) as err:
        parse_inputs({"inputs": [["x" * 10_000, 1, 2]]}, (3,))
    assert len(str(err.value)) < 100


def test_app_options_defaults_and_serve_run_strings():
    assert app_options({"run": "runs/a"}) == {
        "run": "runs/a",
        "replicas": 1,
        "cpu": 1.0,
        "gpu": 0.0,
        "trustCode": False,
        "tokenSha256": "",
    }
    # `serve run red_runtime.apps.serving:build_app run=... replicas=2` passes strings.
    assert app_options({"run": "s3://b/p/a", "replicas": "2", "cpu": "0.5", "gpu": 1, "trustCode": "true"}) == {
        "run": "s3://b/p/a",
        "replicas": 2,
        "cpu": 0.5,
        "gpu": 1.0,
        "trustCode": True,
        "tokenSha256": "",
    }


@pytest.mark.parametrize(
    "args, message",
    [
        ({}, "build_app args: run: None: must name a run folder"),
        ({"run": ""}, "build_app args: run: '': must name a run folder"),
        ({"run": 3}, "build_app args: run: 3: must name a run folder"),
        ({"run": "r", "replicas": 0}, "build_app args: replicas: 0: must be a whole number at least 1"),
        ({"run": "r", "trustCode": "yes"}, "build_app args: trustCode: 'yes': must be true or false"),
        ({"run": "r", "replicas": 1.5}, "build_app args: replicas: 1.5: must be a whole number at least 1"),
        ({"run": "r", "replicas": "two"}, "build_app args: replicas: 'two': must be a whole number at least 1"),
        ({"run": "r", "replicas": True}, "build_app args: replicas: True: must be a whole number at least 1"),
        ({"run": "r", "cpu": -1}, "build_app args: cpu: -1: must be a number at least 0"),
        ({"run": "r", "gpu": "nan"}, "build_app args: gpu: 'nan': must be a number at least 0"),
        ({"run": "r", "memory": 1}, "build_app args: memory: unknown (known: run, replicas, cpu, gpu, trustCode, "),
        ({"run": "r", "tokenSha256": "secret"}, "build_app args: tokenSha256: must be a token's SHA-256"),
        (["run"], "build_app args: expected a mapping"),
    ],
)
def test_app_options_name_the_bad_key(args, message):
    with pytest.raises(ValueError) as err:
        app_options(args)
    assert message in str(err.value)


def test_a_token_is_kept_as_its_hash_and_checked_in_constant_time():
    digest = token_sha256("s3cret-token")
    assert len(digest) == 64 and "s3cret" not in digest
    assert authorized("Bearer s3cret-token", digest) and authorized("bearer  s3cret-token", digest)
    for header in (None, "", "Bearer", "Bearer wrong", "Basic s3cret-token", "s3cret-token"):
        assert not authorized(header, digest), header
    assert authorized(None, ""), "no token configured: every request is"


@pytest.mark.parametrize("length, refused", [(None, False), ("2048", False), (str(MAX_BODY_BYTES + 1), True),
                                             (str(64 * 2**20), True), ("-1", True), ("12abc", True)])  # fmt: skip
def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(length, refused):
    assert body_too_large(length) is refused
