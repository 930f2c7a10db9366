"""The spec model: defaults filled in, and every problem reported with its field path and value."""

import pytest

from red_api.manifest import load_manifest
from red_api.spec import MAX_NAME_LENGTH, SpecError, parse_manifest, parse_spec

pytestmark = pytest.mark.unit


def manifest(spec=None, name="fed"):
    return {
        "apiVersion": "red.dev/v1alpha1",
        "kind": "Federation",
        "metadata": {"name": name},
        "spec": spec or {},
    }


def problems(spec=None, name="fed"):
    with pytest.raises(SpecError) as err:
        parse_manifest(manifest(spec, name))
    return err.value.problems


def test_empty_spec_gets_defaults():
    spec = parse_spec({})
    assert spec.rounds == 10
    assert spec.topology.kind == "star"
    assert spec.nodes.count == 8 and spec.nodes.roles == {"train", "eval"}
    assert spec.nodes.resources.cpu == 1.0 and spec.nodes.resources.gpu == 0.0
    assert spec.algorithm.name == "fedavg" and spec.algorithm.fraction == 1.0
    assert spec.task.dataset.name == "digits" and spec.task.model.hidden == (64,)
    assert spec.placement.strategy == "PACK"


def test_example_manifest_parses(repo_root):
    fed = load_manifest(str(repo_root / "manifests/examples/digits-star.yaml"))
    assert fed.name == "digits-star"
    assert fed.spec.rounds == 20 and fed.spec.nodes.count == 8
    assert fed.spec.task.partition.kind == "dirichlet" and fed.spec.task.partition.alpha == 0.5


@pytest.mark.parametrize(
    "spec, path, value",
    [
        ({"topology": {"kind": "torus"}}, "spec.topology.kind", "'torus'"),
        ({"algorithm": {"name": "fedsgd"}}, "spec.algorithm.name", "'fedsgd'"),
        ({"task": {"dataset": {"name": "mnist"}}}, "spec.task.dataset.name", "'mnist'"),
        ({"task": {"model": {"name": "resnet"}}}, "spec.task.model.name", "'resnet'"),
        ({"task": {"partition": {"kind": "shards"}}}, "spec.task.partition.kind", "'shards'"),
        ({"rounds": 0}, "spec.rounds", "0"),
        ({"rounds": -3}, "spec.rounds", "-3"),
        ({"nodes": {"count": 0}}, "spec.nodes.count", "0"),
        ({"nodes": {"role": "train-serve"}}, "spec.nodes.role", "'train-serve'"),
        ({"nodes": {"role": "eval"}}, "spec.nodes.role", "'eval'"),
        ({"nodes": {"resources": {"cpu": 0, "gpu": 0}}}, "spec.nodes.resources", "'cpu': 0"),
        ({"nodes": {"resources": {"gpu": 1.5}}}, "spec.nodes.resources.gpu", "1.5"),
        ({"topology": {"kind": "kregular", "degree": 8}}, "spec.topology.degree", "8"),
        ({"topology": {"kind": "kregular", "degree": 3}, "nodes": {"count": 7}}, "spec.topology.degree", "3"),
        ({"topology": {"kind": "kregular"}}, "spec.topology.degree", "None"),
        ({"topology": {"kind": "custom", "edges": [[0, 9]]}}, "spec.topology.edges[0]", "[0, 9]"),
        ({"topology": {"kind": "custom", "edges": [[1, 1]]}}, "spec.topology.edges[0]", "[1, 1]"),
        (
            {"topology": {"kind": "custom", "edges": [[0, 1], [2, 3]]}, "nodes": {"count": 4}},
            "spec.topology.edges",
            "not connected",
        ),
        ({"topology": {"kind": "hierarchical", "groups": 9}}, "spec.topology.groups", "9"),
        ({"algorithm": {"fraction": 0}}, "spec.algorithm.fraction", "0"),
        ({"algorithm": {"fraction": 1.5}}, "spec.algorithm.fraction", "1.5"),
        ({"algorithm": {"minNodes": 9}}, "spec.algorithm.minNodes", "9"),
        ({"algorithm": {"name": "krum", "options": {"f": 3}}}, "spec.algorithm.options.f", "3"),
        ({"algorithm": {"name": "fedprox", "options": {"nu": 1}}}, "spec.algorithm.options.nu", "1"),
        ({"algorithm": {"name": "fedprox", "options": {"mu": -1}}}, "spec.algorithm.options.mu", "-1"),
        ({"topology": {"kind": "ring"}, "algorithm": {"name": "krum"}}, "spec.algorithm.name", "'krum'"),
        ({"task": {"train": {"lr": 0}}}, "spec.task.train.lr", "0"),
        ({"task": {"train": {"optimizer": "rmsprop"}}}, "spec.task.train.optimizer", "'rmsprop'"),
        (
            {"task": {"dataset": {"name": "synthetic"}, "model": {"name": "cnn"}}},
            "spec.task.model.name",
            "'cnn'",
        ),
        ({"placement": {"strategy": "RANDOM"}}, "spec.placement.strategy", "'RANDOM'"),
        ({"roundz": 3}, "spec.roundz", "3"),
        ({"nodes": {"cont": 3}}, "spec.nodes.cont", "3"),
        ({"rounds": "ten"}, "spec.rounds", "'ten'"),
        (
            {"task": {"partition": {"kind": "labels", "labels": 20}}},
            "spec.task.partition.labels",
            "20: is more than the 10",
        ),
        (
            {"task": {"dataset": {"name": "synthetic", "classes": 4}, "partition": {"kind": "labels", "labels": 5}}},
            "spec.task.partition.labels",
            "5: is more than the 4",
        ),
    ],
)
def test_each_problem_names_field_and_value(spec, path, value):
    found = problems(spec)
    assert any(p.startswith(f"{path}:") and value in p for p in found), found


def test_all_problems_are_reported_at_once():
    found = problems({"rounds": 0, "nodes": {"count": 0}, "topology": {"kind": "torus"}})
    assert {p.split(":")[0] for p in found} >= {"spec.rounds", "spec.nodes.count", "spec.topology.kind"}


def test_name_too_long_for_kuberay_children():
    found = problems(name="a" * (MAX_NAME_LENGTH + 1))
    assert found[0].startswith("metadata.name:") and str(MAX_NAME_LENGTH) in found[0]


def test_wrong_kind_and_version():
    with pytest.raises(SpecError) as err:
        parse_manifest({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})
    assert any(p.startswith("apiVersion:") for p in err.value.problems)
    assert any(p.startswith("kind:") for p in err.value.problems)


def test_user_references_are_accepted_by_shape():
    spec = parse_spec({"task": {"dataset": {"name": "mypkg.data:load"}, "model": {"name": "mypkg.nets:Net"}}})
    assert spec.task.dataset.name == "mypkg.data:load"
    assert spec.task.model.name == "mypkg.nets:Net"


def test_valid_topologies():
    assert parse_spec({"topology": {"kind": "kregular", "degree": 3}}).topology.degree == 3
    custom = parse_spec({"topology": {"kind": "custom", "edges": [[0, 1], [1, 2], [2, 3]]}, "nodes": {"count": 4}})
    assert custom.topology.edges == ((0, 1), (1, 2), (2, 3))
    assert parse_spec({"topology": {"kind": "hierarchical", "groups": 2}}).topology.groups == 2


def test_as_many_labels_per_node_as_classes_is_fine():
    assert parse_spec({"task": {"partition": {"kind": "labels", "labels": 10}}}).task.partition.labels == 10


def load_problems(tmp_path, text):
    path = tmp_path / "fed.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_manifest(str(path))
    (problem,) = err.value.problems
    return problem.removeprefix(f"{path}: ")


FED = "apiVersion: red.dev/v1alpha1\nkind: Federation\nmetadata: {name: fed}\n"


def test_a_duplicate_key_is_refused_naming_the_key_and_line(tmp_path):
    problem = load_problems(tmp_path, FED + "spec:\n  nodes:\n    count: 4\n    count: 5000\n")
    assert problem.startswith("line 7,") and "duplicate key 'count' (first at line 6)" in problem


def test_a_yaml_merge_key_may_still_be_overridden(tmp_path):
    path = tmp_path / "fed.yaml"
    path.write_text(FED + "spec:\n  <<: {rounds: 3, suspend: true}\n  rounds: 4\n")
    spec = load_manifest(str(path)).spec
    assert spec.rounds == 4 and spec.suspend


def test_two_federations_in_one_file_are_refused(tmp_path):
    problem = load_problems(tmp_path, FED + "---\n" + FED.replace("name: fed", "name: other"))
    assert "2 Federation documents" in problem and "`red run` takes one" in problem


@pytest.mark.parametrize(
    "text, expected",
    [
        (FED + "spec: {rounds: [1}\n", "line 4, column"),
        (FED + "spec:\n\trounds: 3\n", "line 5, column 1"),
        (FED + "spec: \x01\n", "not YAML"),
    ],
)
def test_a_file_that_is_not_yaml_is_a_spec_error_with_its_line(tmp_path, text, expected):
    assert load_problems(tmp_path, text).startswith(expected)


def test_a_file_that_is_not_text_is_a_spec_error(tmp_path):
    path = tmp_path / "fed.yaml"
    path.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_manifest(str(path))


def test_a_field_of_a_newer_crd_is_ignored_in_a_stored_object_but_refused_in_a_file():
    """The API server prunes what its CRD does not declare, so an unknown field in a stored Federation
    comes from a CRD newer than this code (an upgrade in progress), not from a typo: refusing it would
    make every running Federation InvalidSpec, and the operator would release their compute."""
    doc = {
        "apiVersion": "red.dev/v1alpha1",
        "kind": "Federation",
        "metadata": {"name": "f", "namespace": "ns"},
        "spec": {"rounds": 3, "faultTolerance": {"someFutureField": "x"}, "someFutureSection": {}},
    }
    fed = parse_manifest(doc, stored=True)
    assert fed.spec.rounds == 3
    with pytest.raises(SpecError, match=r"spec.faultTolerance.someFutureField: 'x': unknown field"):
        parse_manifest(doc)


def test_serve_is_off_unless_given_and_gets_defaults():
    assert parse_spec({}).serve is None and parse_spec({"serve": None}).serve is None
    serve = parse_spec({"serve": {}}).serve
    assert (serve.replicas, serve.cpu, serve.gpu) == (1, 1.0, 0.0)
    gpu = {"serve": {"replicas": 2, "cpu": 1.5, "gpu": 1}, "ray": {"workerGroups": [{"name": "g", "gpu": 1}]}}
    served = parse_spec(gpu).serve
    assert (served.replicas, served.cpu, served.gpu) == (2, 1.5, 1.0)


@pytest.mark.parametrize(
    ("serve", "field", "value"),
    [
        ({"replicas": 0}, "spec.serve.replicas", "0"),
        ({"replicas": "two"}, "spec.serve.replicas", "'two'"),
        ({"cpu": 0}, "spec.serve.cpu", "0"),
        ({"gpu": 1.5}, "spec.serve.gpu", "1.5"),
        ({"gpu": -1}, "spec.serve.gpu", "-1"),
        ({"gpu": 1}, "spec.serve.gpu", "1.0"),  # no worker group has a GPU
        ({"port": 80}, "spec.serve.port", "80"),
        ("yes", "spec.serve", "'yes'"),
    ],
)
def test_a_bad_serve_names_the_field_and_value(serve, field, value):
    found = problems({"serve": serve})
    assert any(p.startswith(f"{field}: {value}: ") for p in found), found
    assert all(p.startswith(field) for p in found), found
