"""Topology graphs (pure) and the topology manager actor that routes messages along their edges.

Participants are named: "server" for the star's hub, "agg-<g>" for hierarchical aggregators and
"node-<i>" for federation nodes. The manager only ever holds object references: a model is put into
the object store once by its sender, and every receiver reads that one copy.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import networkx as nx

from red_api.spec import Topology

SERVER = "server"


def manager_name(federation: str) -> str:
    """Node actors find the manager by name: a handle passed to an actor constructor lives in the
    object store, and Ray cannot restart an actor whose constructor arguments are gone."""
    return f"red-{federation}-topology"


def node_id(index: int) -> str:
    return f"node-{index}"


def node_index(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def aggregator_id(group: int) -> str:
    return f"agg-{group}"


def group_of(index: int, groups: int) -> int:
    return index % groups


class TopologyError(RuntimeError):
    """A participant tried to send to one it is not connected to."""


def build_graph(topology: Topology, count: int, seed: int) -> nx.Graph:
    """The communication graph a manifest describes; raises ValueError naming the field if impossible."""
    ids = [node_id(i) for i in range(count)]
    g = nx.Graph()
    g.add_nodes_from(ids)
    kind = topology.kind
    if kind == "star":
        g.add_edges_from((SERVER, n) for n in ids)
    elif kind == "ring":
        g.add_edges_from((ids[i], ids[(i + 1) % count]) for i in range(count) if count > 1)
    elif kind == "mesh":
        g.add_edges_from((a, b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    elif kind == "kregular":
        g.add_edges_from(_regular_edges(topology.degree or 0, count, seed))
    elif kind == "custom":
        g.add_edges_from((ids[a], ids[b]) for a, b in topology.edges)
    elif kind == "hierarchical":
        groups = topology.groups or 1
        for grp in range(groups):
            g.add_edge(SERVER, aggregator_id(grp))
        g.add_edges_from((aggregator_id(group_of(i, groups)), n) for i, n in enumerate(ids))
    else:
        raise ValueError(f"spec.topology.kind: {kind!r}: unknown topology")
    return g


def _regular_edges(degree: int, count: int, seed: int) -> list[tuple[str, str]]:
    if degree >= count or (degree * count) % 2:
        raise ValueError(f"spec.topology.degree: {degree}: no {degree}-regular graph on {count} nodes exists")
    # A random regular graph can come out disconnected for small degrees; redraw deterministically.
    for attempt in range(100):
        g = nx.random_regular_graph(degree, count, seed=seed + attempt)
        if nx.is_connected(g):
            return [(node_id(a), node_id(b)) for a, b in g.edges]
    raise ValueError(f"spec.topology.degree: {degree}: no connected {degree}-regular graph found on {count} nodes")


def relink(g: nx.Graph, kind: str, failed: list[str]) -> nx.Graph:
    """The graph without `failed` nodes; a ring closes each gap. Raises TopologyError if it falls apart."""
    out = g.copy()
    for name in failed:
        if name not in out:
            continue
        neighbours = list(out.neighbors(name))
        out.remove_node(name)
        if kind == "ring" and len(neighbours) == 2 and neighbours[0] != neighbours[1]:
            out.add_edge(*neighbours)
    members = [n for n in out if n.startswith("node-")]
    if kind in ("ring", "mesh", "kregular", "custom") and members and not nx.is_connected(out.subgraph(members)):
        parts = sorted((sorted(c) for c in nx.connected_components(out.subgraph(members))), key=len)
        raise TopologyError(
            f"the {kind} topology is disconnected after {', '.join(failed)} failed: "
            f"{len(parts)} separate groups (smallest: {', '.join(parts[0][:5])})"
        )
    return out


def metropolis_weights(g: nx.Graph, name: str) -> dict[str, float]:
    """Metropolis-Hastings mixing weights of `name` over itself and its neighbours (doubly stochastic)."""
    deg = g.degree
    weights = {nbr: 1.0 / (1 + max(deg[name], deg[nbr])) for nbr in g.neighbors(name)}
    weights[name] = 1.0 - sum(weights.values())
    return weights


def datasize_weights(g: nx.Graph, name: str, sizes: dict[str, int]) -> dict[str, float]:
    """Mix in proportion to each neighbour's sample count (itself included)."""
    members = [name, *g.neighbors(name)]
    total = sum(sizes[m] for m in members)
    return {m: sizes[m] / total for m in members}


class TopologyManager:
    """Holds the graph and the mailboxes; refuses any message that does not follow an edge.

    Run as a Ray actor (see `remote_manager`). Payloads are lists wrapping ObjectRefs, so Ray hands
    the references through untouched and the manager never copies a model.
    """

    def __init__(self, edges: list[tuple[str, str]], participants: list[str], kind: str):
        self.graph = nx.Graph()
        self.graph.add_nodes_from(participants)
        self.graph.add_edges_from(edges)
        self.kind = kind
        self.mailboxes: dict[str, list[tuple[int, tuple[str, ...], Any]]] = defaultdict(list)
        self.posted = 0

    def check(self, src: str, dst: str) -> None:
        if not self.graph.has_edge(src, dst):
            raise TopologyError(f"{src} may not send to {dst}: they are not neighbours in the {self.kind} topology")

    def post(self, round_no: int, srcs: list[str], dsts: list[str], payload: Any) -> int:
        """Deliver one payload from `srcs` (a pooled update speaks for all of them) to each of `dsts`."""
        for dst in dsts:
            for src in srcs:
                self.check(src, dst)
        for dst in dsts:
            self.mailboxes[dst].append((round_no, tuple(srcs), payload))
        self.posted += len(dsts)
        return len(dsts)

    def collect(self, round_no: int, receivers: list[str]) -> dict[str, list[tuple[tuple[str, ...], Any]]]:
        """This round's messages for each receiver. Late messages of earlier rounds are discarded;
        a later round's stay queued (a straggler catching up must not eat its own next model)."""
        out = {}
        for r in receivers:
            box = self.mailboxes.pop(r, [])
            out[r] = [(srcs, payload) for rnd, srcs, payload in box if rnd == round_no]
            later = [m for m in box if m[0] > round_no]
            if later:
                self.mailboxes[r] = later
        return out

    def set_edges(self, edges: list[tuple[str, str]], participants: list[str]) -> None:
        """Replace the graph, after nodes failed and the driver re-linked around them."""
        self.graph = nx.Graph()
        self.graph.add_nodes_from(participants)
        self.graph.add_edges_from(edges)

    def neighbours(self, name: str) -> list[str]:
        return sorted(self.graph.neighbors(name))

    def edges(self) -> list[tuple[str, str]]:
        return sorted(tuple(sorted(e)) for e in self.graph.edges)

    def messages_posted(self) -> int:
        return self.posted
