"""The rules across a Federation's sections: each said once, in CEL for the API server beside its Python for the
parser (spec.FederationSpec.RULES is this list). Rules within one section sit beside its fields in spec.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from red_api import catalog
from red_api.kinds import Rule, excerpt

if TYPE_CHECKING:
    from red_api.spec import FederationSpec

DECENTRALIZED = ("ring", "mesh", "kregular", "custom")


def decentralized(spec: FederationSpec) -> bool:
    return spec.topology.kind in DECENTRALIZED


def _kregular(s: FederationSpec, raw: Mapping[str, Any]) -> tuple[Any, str] | None:
    t, count = s.topology, s.nodes.count
    if t.kind != "kregular":
        return None
    if t.degree is None:
        return None, "is required for a kregular topology"
    if t.degree >= count:
        return t.degree, f"is not below nodes.count ({count})"
    if (t.degree * count) % 2:
        return t.degree, f"times nodes.count ({count}) must be even for a regular graph"
    return None


def _hierarchical(s: FederationSpec, raw: Mapping[str, Any]) -> tuple[Any, str] | None:
    t = s.topology
    if t.kind != "hierarchical":
        return None
    if t.groups is None:
        return None, "is required for a hierarchical topology"
    if t.groups > s.nodes.count:
        return t.groups, f"is more than nodes.count ({s.nodes.count}): a group would be empty"
    return None


def _raw_edges(raw: Mapping[str, Any]) -> Any:
    topology = raw.get("topology")
    return topology.get("edges") if isinstance(topology, Mapping) else None


def _edges(s: FederationSpec, raw: Mapping[str, Any]) -> tuple[Any, str] | None:
    """A custom topology's edges: within nodes.count, no self loops, and connected (which CEL cannot say)."""
    t, count, given = s.topology, s.nodes.count, _raw_edges(raw)
    if t.kind != "custom":
        return (given, "is only used by a custom topology") if given else None
    if not isinstance(given, list) or not given:
        return given, "a custom topology needs a non-empty list of [a, b] node index pairs"
    for i, (a, b) in enumerate(t.edges):
        if not (0 <= a < count and 0 <= b < count):
            return f"[{i}]", [a, b], f"node index out of range 0..{count - 1}"
        if a == b:
            return f"[{i}]", [a, b], "is a self loop"
    if len(t.edges) != len(given):
        return None  # an edge that is not a pair is reported by its item
    seen, frontier = {0}, [0]
    adjacency: dict[int, set[int]] = {}
    for a, b in t.edges:
        adjacency.setdefault(a, set()).add(b)
        adjacency.setdefault(b, set()).add(a)
    while frontier:
        for nxt in adjacency.get(frontier.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    if len(seen) != count:
        missing = sorted(set(range(count)) - seen)
        return excerpt(given), f"graph is not connected: nodes {missing[:10]} are unreachable from node 0"
    return None


def _privacy_linear(s: FederationSpec, raw: Mapping[str, Any]) -> tuple[Any, str] | None:
    a = s.algorithm
    if a.privacy is not None and not catalog.CATALOG[a.name].linear:
        return "set", f"needs a linear strategy; {a.name} must see every raw update"
    return None


def _privacy_model_only(s: FederationSpec, raw: Mapping[str, Any]) -> tuple[Any, str] | None:
    a = s.algorithm
    if a.privacy is not None and catalog.CATALOG[a.name].control_variates:
        return "set", f"{a.name}'s control variates are not clipped or noised; use a model-only strategy"
    return None


def _algorithm_rules() -> tuple[Rule, ...]:
    asynchronous = [n for n, e in catalog.CATALOG.items() if e.asynchronous]
    nonlinear = [n for n, e in catalog.CATALOG.items() if not e.linear or e.control_variates or e.asynchronous]
    return (
        Rule(
            "algorithm.minNodes",
            "is more than nodes.count",
            lambda s, raw: (
                (s.algorithm.minNodes, f"is more than nodes.count ({s.nodes.count})")
                if s.algorithm.minNodes > s.nodes.count
                else None
            ),
            cel="self.algorithm.minNodes <= self.nodes.count",
        ),
        Rule(
            "algorithm.name",
            "ring, mesh, kregular and custom topologies need fedavg; they mix with topology.mixing",
            lambda s, raw: (
                (s.algorithm.name, "is a server-side strategy; decentralised topologies mix with topology.mixing")
                if decentralized(s) and s.algorithm.name != "fedavg"
                else None
            ),
            cel=f"!(self.topology.kind in {list(DECENTRALIZED)}) || self.algorithm.name == 'fedavg'",
        ),
        Rule(
            "algorithm.fraction",
            "decentralised topologies train every node each round; use 1.0",
            lambda s, raw: (
                (s.algorithm.fraction, "decentralised topologies train every node each round; use 1.0")
                if decentralized(s) and s.algorithm.fraction != 1.0
                else None
            ),
            cel=f"!(self.topology.kind in {list(DECENTRALIZED)}) || self.algorithm.fraction == 1.0",
        ),
        Rule(
            "algorithm.privacy",
            "needs a linear, model-only, synchronous strategy",
            _privacy_linear,
            cel=f"!has(self.algorithm.privacy) || !(self.algorithm.name in {nonlinear})",
        ),
        Rule(
            "algorithm.privacy",
            "control variates are not clipped or noised",
            _privacy_model_only,
        ),
        Rule(
            "algorithm.name",
            f"{', '.join(asynchronous)} runs asynchronous rounds on a star topology",
            lambda s, raw: (
                (s.algorithm.name, f"runs asynchronous rounds on a star topology, not {s.topology.kind}")
                if catalog.CATALOG[s.algorithm.name].asynchronous and s.topology.kind != "star"
                else None
            ),
            cel=f"!(self.algorithm.name in {asynchronous}) || self.topology.kind == 'star'",
        ),
        Rule(
            "algorithm.privacy",
            "asynchronous updates arrive at no fixed rate, which the accounting assumes",
            lambda s, raw: (
                ("set", f"{s.algorithm.name}'s updates arrive at no fixed rate, which its accounting assumes")
                if catalog.CATALOG[s.algorithm.name].asynchronous and s.algorithm.privacy is not None
                else None
            ),
        ),
        Rule(
            "algorithm.privacy",
            "applies to server-side rounds (star, hierarchical)",
            lambda s, raw: (
                ("set", "applies to server-side rounds (star, hierarchical)")
                if s.algorithm.privacy is not None and decentralized(s)
                else None
            ),
            cel=f"!has(self.algorithm.privacy) || !(self.topology.kind in {list(DECENTRALIZED)})",
        ),
    )


def _personal_field(s: FederationSpec) -> tuple[str, Any]:
    model = s.task.model
    return (".personal", list(model.personal)) if model.personal else (".localNorm", True)


_PERSONAL = "(has(self.task.model.personal) && size(self.task.model.personal) > 0) || self.task.model.localNorm"


def _personal_gossip(s: FederationSpec, raw: Mapping[str, Any]) -> tuple[str, Any, str] | None:
    if s.task.model.personalised and decentralized(s):
        return *_personal_field(s), "applies to server-side rounds (star, hierarchical): gossip mixes every layer"
    return None


def _personal_test(s: FederationSpec, raw: Mapping[str, Any]) -> tuple[str, Any, str] | None:
    if s.task.model.personalised and "test" not in s.nodes.roles:
        return *_personal_field(
            s
        ), "needs nodes.role with test: personalised models are judged on each node's own split"
    return None


def _serve_gpu(s: FederationSpec, raw: Mapping[str, Any]) -> tuple[Any, str] | None:
    # The RayService's Pods are the Federation's (spec.ray): a replica that needs GPUs needs a Pod that has them.
    if s.serve and s.serve.gpu and not any(g.replicas and g.gpu >= s.serve.gpu for g in s.ray.workerGroups):
        return s.serve.gpu, "no worker group of spec.ray.workerGroups has a Pod with that many GPUs"
    return None


def _compression_server(s: FederationSpec, raw: Mapping[str, Any]) -> tuple[Any, str] | None:
    kind = s.communication.compression.kind
    if kind != "none" and decentralized(s):
        return kind, "applies to updates sent to a server (star, hierarchical)"
    if kind != "none" and s.algorithm.privacy is not None:
        return kind, "cannot be combined with algorithm.privacy: the error fed back is not noised"
    return None


# Synthetic data's sizes, bounded so that a spec cannot ask one process for more memory than a node has. Every
# process that builds node data (the driver and each actor) holds the per-node class table (nodes x classes:
# shares, counts and their temporaries, about 24 bytes a cell) and the class centres (classes x features
# float32); one node's data is samplesPerNode x features float32 while it trains.
MAX_NODE_CLASS_CELLS = 20_000_000  # about 0.5 GB of class table
MAX_CLASS_FEATURE_CELLS = 50_000_000  # 200 MB of class centres
MAX_NODE_DATA_CELLS = 50_000_000  # 200 MB of one node's samples
GB = 1e9


def _synthetic_size(left: str, right: str, cells: int, bytes_per_cell: int, what: str) -> Rule:
    """A rule that the product of two synthetic-data fields stays within `cells` (the message says the memory
    that the product would take, so the user sees why)."""
    a_path, b_path = left.split("."), right.split(".")

    def value(s: FederationSpec, path: list[str]) -> int:
        obj: Any = s
        for part in path:
            obj = getattr(obj, part)
        return int(obj)

    def check(s: FederationSpec, raw: Mapping[str, Any]) -> tuple[Any, str] | None:
        if s.task.dataset.name != "synthetic":
            return None
        a, b = value(s, a_path), value(s, b_path)
        if a * b <= cells:
            return None
        need = a * b * bytes_per_cell / GB
        return a, (
            f"times {right} ({b}) is {a * b:,} cells of {what}, about {need:.1f} GB in every process that builds "
            f"node data; keep the product at most {cells:,}"
        )

    return Rule(
        left,
        f"times {right} must be at most {cells} for synthetic data ({what})",
        check,
        cel=f"self.task.dataset.name != 'synthetic' || self.{left} * self.{right} <= {cells}",
    )


FEDERATION_RULES = (
    Rule(
        "topology.degree",
        "is required for a kregular topology",
        _kregular,
        cel="self.topology.kind != 'kregular' || has(self.topology.degree)",
        required=True,
    ),
    Rule(
        "topology.degree",
        "is not below nodes.count",
        cel="self.topology.kind != 'kregular' || !has(self.topology.degree) || self.topology.degree < self.nodes.count",
    ),
    Rule(
        "topology.degree",
        "times nodes.count must be even for a regular graph",
        cel="self.topology.kind != 'kregular' || !has(self.topology.degree) || "
        "(self.topology.degree * self.nodes.count) % 2 == 0",
    ),
    Rule(
        "nodes.count",
        "ring, mesh, kregular and custom topologies need at least 2 nodes",
        lambda s, raw: (
            (s.nodes.count, f"a {s.topology.kind} topology needs at least 2 nodes")
            if decentralized(s) and s.nodes.count < 2
            else None
        ),
        cel=f"!(self.topology.kind in {list(DECENTRALIZED)}) || self.nodes.count >= 2",
    ),
    Rule(
        "topology.groups",
        "is required for a hierarchical topology",
        _hierarchical,
        cel="self.topology.kind != 'hierarchical' || has(self.topology.groups)",
        required=True,
    ),
    Rule(
        "topology.groups",
        "is more than nodes.count: a group would be empty",
        cel="self.topology.kind != 'hierarchical' || !has(self.topology.groups) || "
        "self.topology.groups <= self.nodes.count",
    ),
    Rule(
        "topology.edges",
        "a custom topology needs a non-empty list of [a, b] node index pairs",
        _edges,
        cel="self.topology.kind != 'custom' || (has(self.topology.edges) && size(self.topology.edges) > 0)",
        required=True,
    ),
    Rule(
        "topology.edges",
        "is only used by a custom topology",
        cel="!has(self.topology.edges) || size(self.topology.edges) == 0 || self.topology.kind == 'custom'",
    ),
    Rule(
        "topology.edges",
        "node index out of range 0..nodes.count-1",
        cel="!has(self.topology.edges) || self.topology.edges.all(e, e.all(v, v < self.nodes.count))",
    ),
    Rule(
        "topology.edges",
        "a self loop [a, a] is not an edge",
        cel="!has(self.topology.edges) || self.topology.edges.all(e, e[0] != e[1])",
    ),
    *_algorithm_rules(),
    _synthetic_size("nodes.count", "task.dataset.classes", MAX_NODE_CLASS_CELLS, 24, "the per-node class table"),
    _synthetic_size("task.dataset.classes", "task.dataset.features", MAX_CLASS_FEATURE_CELLS, 4, "class centres"),
    _synthetic_size("task.dataset.samplesPerNode", "task.dataset.features", MAX_NODE_DATA_CELLS, 4, "one node's data"),
    Rule(
        "communication.compression.kind",
        "applies to updates sent to a server, without algorithm.privacy",
        _compression_server,
        cel=f"self.communication.compression.kind == 'none' || (!(self.topology.kind in {list(DECENTRALIZED)})"
        " && !has(self.algorithm.privacy))",
    ),
    Rule(
        "task.model",
        "a personalised model (personal, localNorm) applies to server-side rounds (star, hierarchical)",
        _personal_gossip,
        cel=f"!({_PERSONAL}) || !(self.topology.kind in {list(DECENTRALIZED)})",
    ),
    Rule(
        "task.model",
        "a personalised model (personal, localNorm) needs nodes.role with test",
        _personal_test,
        cel=f"!({_PERSONAL}) || self.nodes.role.contains('test')",
    ),
    Rule(
        "serve.gpu",
        "no worker group of spec.ray.workerGroups has a Pod with that many GPUs",
        _serve_gpu,
        cel="!has(self.serve) || self.serve.gpu == 0.0 || (has(self.ray.workerGroups) && "
        "self.ray.workerGroups.exists(g, g.replicas > 0 && double(g.gpu) >= self.serve.gpu))",
    ),
)
