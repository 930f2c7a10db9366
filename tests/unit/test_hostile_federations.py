"""No Federation can stop the operator: random mutations of every example and targeted hostile ones, through
the parser and a whole reconcile pass (the operator's Passes over an in-memory API, as in test_passes).

For each: no exception escapes; an invalid spec creates nothing and ends Failed with InvalidSpec; a valid one
renders every child (no ReconcileError); every refusal is "field: value: reason".
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from red_api.kinds import SpecError
from red_api.limits import MAX_MANIFEST_BYTES
from red_api.manifest import MAX_DEPTH, read_manifest
from red_api.spec import parse_manifest
from red_operator.children import ApiSeen
from red_operator.handlers import SpecDigestDiffBase, essence
from red_operator.passes import Passes, key_of
from tests.operator.test_reconcile import FakeRest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
# A problem line: a field path (spec..., metadata..., or the document itself), its value, and why.
PROBLEM = re.compile(r"^(spec|metadata|apiVersion|kind|manifest)[^:]*: .+: .+", re.S)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


HOSTILE = [
    None,
    True,
    -1,
    2**63,
    10**400,
    math.inf,
    math.nan,
    1e300,
    "",
    "1e400",
    "x" * 270_000,
    "ab\u0000",
    [],
    {},
    {"a": 1},
    ["x"],
    1.5,
    nested(400),
    nested(5000),
]


def paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += paths(value, (*prefix, i))
    return out


def mutate(doc: dict, rng: random.Random) -> dict:
    doc = copy.deepcopy(doc)
    path = rng.choice([p for p in paths(doc) if p and p[0] in ("spec", "metadata")])
    *parents, leaf = path
    target = doc
    for part in parents:
        target = target[part]
    op = rng.random()
    if op < 0.7:
        target[leaf] = rng.choice(HOSTILE)
    elif op < 0.85 and isinstance(target, dict):
        del target[leaf]
    elif isinstance(target[leaf], dict):
        target[leaf]["unknownField"] = rng.choice(HOSTILE)
    else:
        target[leaf] = rng.choice(HOSTILE)
    return doc


def stored(doc: dict) -> dict:
    """As the API server would hand it over (namespaced, with a uid and a generation)."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    return {**doc, "metadata": {**meta, "namespace": "ns", "uid": "u1", "generation": 1}, "status": {}}


class Recorded(FakeRest):
    """The in-memory API, with the Events the pass posts."""

    def post(self, obj: dict) -> dict:
        self.log.append(("event", obj["reason"], obj["message"]))
        return obj


def one_pass(body: dict) -> tuple[FakeRest, dict]:
    """One reconcile of `body` through the operator's Passes, over the operator's index essence of it."""
    rest = Recorded()
    kept = essence(body)
    key = key_of(kept)
    rest.objects[("Federation", key[1])] = copy.deepcopy(kept)
    result = Passes(rest, {key: [kept]}, ApiSeen(rest)).run(key, "create")
    return rest, result.status if result else {}


def check(doc: dict) -> None:
    body = stored(doc)
    try:
        parse_manifest(body, stored=True)
        refused = None
    except SpecError as err:
        refused = err.problems
    rest, status = one_pass(body)  # must not raise, whatever the body
    if refused is None:
        assert status.get("reason") != "ReconcileError", status
        return
    assert refused and all(PROBLEM.match(p) for p in refused), refused
    assert all(len(p) < 2000 for p in refused), "a problem repeats a value whole"
    assert not [entry for entry in rest.log if entry[0] == "create"], rest.log
    assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec", status
    assert all(len(entry[2]) <= 1024 for entry in rest.log if entry[0] == "event")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_random_mutations_of_every_example_never_escape_and_create_nothing_when_invalid(example):
    doc = yaml.safe_load(example.read_text())
    rng = random.Random(example.stem)
    for _ in range(40):
        check(mutate(doc, rng))


def federation(spec: Any, **metadata: Any) -> dict:
    return {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": "f", **metadata}, "spec": spec}


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"ray": {"runtimeEnv": {"env_vars": {"A": "x" * 270_000}}}}, "spec.ray.runtimeEnv.env_vars.A"),
        ({"ray": {"runtimeEnv": {"env_vars": {"A": "x" * 40_000}}}}, "spec.ray.runtimeEnv.env_vars[A]"),
        ({"ray": {"runtimeEnv": nested(400)}}, "spec.ray.runtimeEnv"),
        ({"ray": {"runtimeEnv": {"env_vars": nested(5000)}}}, "spec.ray.runtimeEnv.env_vars"),
        ({"algorithm": {"options": nested(500)}}, "spec.algorithm.options"),
        ({"ray": {"head": {"cpu": "1e400"}}}, "spec.ray.head.cpu"),
        ({"ray": {"head": {"cpu": 1e400}}}, "spec.ray.head.cpu"),
        ({"ray": {"head": {"memory": "1e30"}}}, "spec.ray.head.memory"),
        ({"ray": {"workerGroups": [{"name": "w", "cpu": "5000"}]}}, "spec.ray.workerGroups[0].cpu"),
        ({"task": {"train": {"lr": 1e300}}}, "spec.task.train.lr"),
        ({"task": {"train": {"lr": 1e400}}}, "spec.task.train.lr"),
        ({"task": {"model": {"hidden": [10**9]}}}, "spec.task.model.hidden"),
        ({"task": {"train": {"batchSize": 10**9}}}, "spec.task.train.batchSize"),
        ({"checkpoint": {"path": "x" * 10_000_000}}, "spec.checkpoint.path"),
        ({"checkpoint": {"path": "../../../.."}}, "spec.checkpoint.path"),
        # Memory: found asking for about 16 GB before any field was named (the class table alone).
        (
            {"nodes": {"count": 100_000}, "task": {"dataset": {"name": "synthetic", "classes": 10_000}}},
            "spec.nodes.count",
        ),
        (
            {"task": {"dataset": {"name": "synthetic", "classes": 10_000, "features": 100_000}}},
            "spec.task.dataset.classes",
        ),
        (
            {"task": {"dataset": {"name": "synthetic", "samplesPerNode": 10**6, "features": 10**4}}},
            "spec.task.dataset.samplesPerNode",
        ),
        ({"checkpoint": {"path": "/home/ray/.bashrc.d"}}, "spec.checkpoint.path"),
        # Pod Security: the README says "restricted as built"; these annotations would unmake it.
        (
            {
                "ray": {
                    "head": {"annotations": {"container.apparmor.security.beta.kubernetes.io/ray-head": "unconfined"}}
                }
            },
            "spec.ray.head.annotations[container.apparmor.security.beta.kubernetes.io/ray-head]",
        ),
        (
            {
                "ray": {
                    "workerGroups": [{"name": "w", "annotations": {"seccomp.security.alpha.kubernetes.io/pod": "x"}}]
                }
            },
            "spec.ray.workerGroups[0].annotations",
        ),
        ({"ray": {"image": "x" * 10_000}}, "spec.ray.image"),
        ({"ray": {"head": {"affinity": {"nodeAffinity": nested(300)}}}}, "spec.ray.head.affinity"),
        ({"ray": {"workerGroups": [{"name": f"g{i}"} for i in range(100)]}}, "spec.ray.workerGroups"),
    ],
)
@pytest.mark.timeout(60)  # a bound on a hang, not on speed: the YAML and JSON work is bounded
def test_hostile_specs_are_refused_naming_the_field_and_create_nothing(spec, field):
    with pytest.raises(SpecError) as err:
        parse_manifest(stored(federation(spec)), stored=True)
    assert any(p.startswith(field) for p in err.value.problems), err.value.problems
    assert all(len(p) < 2000 for p in err.value.problems)
    check(federation(spec))


@pytest.mark.parametrize(
    "spec",
    [
        {"sweep": {"params": ["task.train.lr=choice:[,1"]}},
        {"sweep": {1: 2, "params": ["task.train.lr=choice:0.1"]}},
        {"storage": {"pvc": [1], "uri": "s3://bucket/x"}},
        {"storage": {"pvc": "ab"}},
        {"ray": {"head": {"volumes": 5, "volumeMounts": [{"name": "a", "mountPath": "/a"}]}}},
        {"ray": {"head": {"volumes": [{"name": [1]}], "volumeMounts": [None]}}},
        {"ray": {"workerGroups": [None]}},
        {"ray": {"head": {"tolerations": [None], "imagePullSecrets": [None]}}},
        {"task": {"model": {"hidden": [None, 4]}}},
        {"nodes": {"count": 3}, "algorithm": {"name": "krum"}},
    ],
    ids=repr,
)
def test_odd_shapes_never_raise_anything_but_a_spec_error(spec):
    """Found by review: each raised TypeError, ValueError or a YAML error, or passed as an unset value."""
    check(federation(spec))
    for metadata in ([1], "abc"):
        check({**federation(spec), "metadata": metadata})


def test_a_large_annotation_is_not_copied_into_kopfs_own_annotation():
    """kopf kept spec, labels and annotations in one annotation; a 135 KB annotation of the Federation's own
    then made kopf's patch exceed the API server's 262,144 bytes for all annotations."""
    body = federation({"rounds": 3}, annotations={"note": "x" * 135_000})
    essence_of = SpecDigestDiffBase(prefix="red.dev", key="last-handled-configuration").build(body=body)
    assert len(json.dumps(essence_of)) < 200
    changed = federation({"rounds": 4}, annotations={"note": "x" * 135_000})
    assert SpecDigestDiffBase(prefix="red.dev").build(body=changed) != essence_of
    check(body)  # and the Federation itself is valid: its annotations are not Red's to bound
    kept = essence({**body, "metadata": {**body["metadata"], "managedFields": [{"fieldsV1": {"f:spec": {}}}]}})
    assert "annotations" not in kept["metadata"] and "managedFields" not in kept["metadata"], "the index holds them"


def test_a_body_nested_beyond_recursion_is_an_invalid_spec_not_a_crash():
    """One stored before the CRD bounded it: the operator's index cannot even copy it."""
    body = stored(federation({"algorithm": {"options": nested(20_000)}}))
    rest, status = one_pass(body)
    assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec"
    assert not [entry for entry in rest.log if entry[0] == "create"]


@pytest.mark.parametrize(
    "text, says",
    [
        (
            "a: &a [1,1,1,1,1,1,1,1,1]\n"
            + "".join(
                f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")
            ),
            "expands to more than",
        ),
        ("[" * 5000 + "]" * 5000, f"nested more than {MAX_DEPTH} levels deep"),
        ("spec:\n" + "  a:\n" * 3 + "    b: " + "{a: " * 400 + "1" + "}" * 400, f"more than {MAX_DEPTH} levels"),
        ("x: " + "y" * (2 * 1024 * 1024), "larger than"),
    ],
    ids=["alias-bomb", "flow-nesting-5000", "block-and-flow-nesting", "2MiB-file"],
)
@pytest.mark.timeout(30)  # an alias bomb or deep nesting hung validate: a bound on a hang, not on speed
def test_a_hostile_file_is_refused_at_once_naming_the_file_and_line(tmp_path, text, says):
    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        read_manifest(str(path))
    (problem,) = err.value.problems
    assert problem.startswith(str(path)) and says in problem, problem


def test_an_alias_within_bounds_still_reads(tmp_path):
    path = tmp_path / "f.yaml"
    head = "apiVersion: red.dev/v1alpha1\nkind: Federation\nmetadata: {name: f}\n"
    path.write_text(head + "spec:\n  rounds: &r 3\n  nodes: {count: *r}\n")
    doc, fed = read_manifest(str(path))
    assert fed.spec.nodes.count == 3 and doc["spec"]["rounds"] == 3


def test_the_size_limit_is_far_under_the_annotation_cap():
    assert MAX_MANIFEST_BYTES * 2 <= 262_144
