"""A message outlives its sender in the manager's mailbox, but its objects do not: a node actor owns what it
ray.put()s, and when its Pod goes (the actor's process and the node's object store with it) Ray drops them.

This runs a two-node Ray of its own (ray.cluster_utils.Cluster, as Ray's own tests do) in a subprocess, and
removes the second node after its actor posted, as deleting a worker Pod does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.ray

SCRIPT = textwrap.dedent(
    """
    import json, types
    import numpy as np
    import ray
    from ray.cluster_utils import Cluster
    from red_runtime.engine.messages import readable
    from red_runtime.engine.rounds.base import collect_updates
    from red_runtime.engine.topology import SERVER, TopologyManager

    @ray.remote(num_cpus=0)
    class Sender:
        def send(self, manager, src, value):
            update = np.full(50_000, value)  # a model's size: kept in this node's object store
            rows = [{"index": int(src.split("-")[1])}]
            return ray.get(manager.post.remote(1, [src], [SERVER], [ray.put(update), ray.put(rows)]))

    head = {"num_cpus": 1, "include_dashboard": False, "resources": {"head": 10}}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    pod = cluster.add_node(num_cpus=1, resources={"pod": 1})
    ray.init(address=cluster.address, log_to_driver=False)
    nodes = ["node-0", "node-1", "node-2"]
    on_head = {"resources": {"head": 1}}
    manager = ray.remote(TopologyManager).options(num_cpus=0, **on_head).remote(
        [(n, SERVER) for n in nodes], [*nodes, SERVER], "star"
    )
    senders = [Sender.options(**on_head).remote(), Sender.options(resources={"pod": 1}).remote()]
    senders.append(Sender.options(**on_head).remote())
    ray.get([s.send.remote(manager, n, i) for i, (s, n) in enumerate(zip(senders, nodes))])
    peek = ray.get(manager.collect.remote(1, [SERVER]))[SERVER]
    cluster.remove_node(pod)  # the Pod of node-1's actor is deleted before the server reads its update
    values = readable([p[:1] for _, p in peek])
    out = {"readable": {srcs[0]: None if v is None else float(v[0][0]) for (srcs, _), v in zip(peek, values)}}
    ray.get([manager.post.remote(1, list(srcs), [SERVER], p) for srcs, p in peek])  # back in the mailbox
    arrived = collect_updates(types.SimpleNamespace(manager=manager), 1, SERVER)
    out.update(updates=sorted(float(u[0]) for u in arrived.updates), indices=sorted(arrived.indices))
    print(json.dumps(out))
    ray.shutdown()
    cluster.shutdown()
    """
)


def test_a_message_whose_senders_pod_went_is_dropped_and_the_others_arrive():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["readable"] == {"node-0": 0.0, "node-1": None, "node-2": 2.0}, "in order, the lost one marked"
    assert out["updates"] == [0.0, 2.0] and out["indices"] == [0, 2]
