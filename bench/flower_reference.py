"""The reference workload on Flower's simulation engine (flwr[simulation]), for bench_flower.py.

The same work as `red run` on bench_runtime.py's manifest: the same nodes' data, model, local training
(Red's own train_local, so that only the orchestration differs), FedAvg weighted by samples, the global
model evaluated on the same test set after every round, and the final model saved. Each node's data is
built once per Flower worker process and kept, as Red's actors keep theirs (`task.dataset.cache: auto`).
Runs under bench/.venv (Flower and the Ray it pins); prints the final accuracy.

    bench/.venv/bin/python bench/flower_reference.py --nodes 100 --rounds 5 --out /tmp/flower-model.pt
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

sys.path.insert(0, str(Path(__file__).parent))
from bench_runtime import manifest  # noqa: E402

from red_api.spec import parse_manifest  # noqa: E402
from red_runtime.engine.node import round_generator  # noqa: E402
from red_runtime.learn.data import DataSource  # noqa: E402
from red_runtime.learn.models import build_model, get_flat, set_flat  # noqa: E402
from red_runtime.learn.training import evaluate, local_splits, train_local  # noqa: E402

ARGS = argparse.Namespace(nodes=100, rounds=5, out=Path("flower-model.pt"))


@functools.cache
def workload(nodes: int, rounds: int):
    fed = parse_manifest(manifest(nodes, rounds))
    source = DataSource(fed.spec.task, nodes)
    model = build_model(fed.spec.task.model, source.input_shape, source.classes, fed.spec.task.seed)
    return fed.spec, source, model


@functools.cache
def node_state(nodes: int, rounds: int, index: int):
    spec, source, _ = workload(nodes, rounds)
    return local_splits(source.node_rows(index).arrays(), spec.nodes.roles, spec.task.seed, index)


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)
    nodes, rounds = int(os.environ["RED_BENCH_NODES"]), int(os.environ["RED_BENCH_ROUNDS"])
    index = int(context.node_config["partition-id"])
    spec, _, model = workload(nodes, rounds)
    state = node_state(nodes, rounds, index)
    start = msg.content["arrays"].to_numpy_ndarrays()[0]
    round_no = int(msg.content["config"]["server-round"])
    params, loss = train_local(
        model, start, state, spec.task.train, round_generator(spec.task.seed, index, round_no), torch.device("cpu")
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord([params]),
            "metrics": MetricRecord({"train_loss": float(loss), "num-examples": len(state.train)}),
        }
    )
    return Message(content=content, reply_to=msg)


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    spec, source, model = workload(ARGS.nodes, ARGS.rounds)
    test_set = source.test_set()
    strategy = FedAvg(
        fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=ARGS.nodes, min_available_nodes=ARGS.nodes
    )
    scores = {}

    def central(round_no: int, arrays: ArrayRecord) -> MetricRecord:
        loss, accuracy = evaluate(model, arrays.to_numpy_ndarrays()[0], test_set, torch.device("cpu"))
        scores[round_no] = accuracy
        return MetricRecord({"loss": loss, "accuracy": accuracy})

    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([get_flat(model)]),
        num_rounds=ARGS.rounds,
        evaluate_fn=central,
    )
    set_flat(model, result.arrays.to_numpy_ndarrays()[0])
    torch.save(model.state_dict(), ARGS.out)
    print(f"flower: accuracy {scores[max(scores)]:.4f} after {ARGS.rounds} rounds", flush=True)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("flower-model.pt"))
    # Ray pickles the apps' functions by module: they must come from an importable module, not __main__, and
    # the workers Ray starts inherit this process's environment (how they find it, and learn the workload).
    import flower_reference as apps

    parser.parse_args(namespace=apps.ARGS)
    here = str(Path(__file__).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    os.environ.update(RED_BENCH_NODES=str(apps.ARGS.nodes), RED_BENCH_ROUNDS=str(apps.ARGS.rounds))
    run_simulation(
        server_app=apps.server,
        client_app=apps.client,
        num_supernodes=apps.ARGS.nodes,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )


if __name__ == "__main__":
    run()
