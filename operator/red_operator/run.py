"""`red operator` (or `python -m red_operator`, as the operator image runs it): run the Federation operator
against the current kubeconfig, or in-cluster."""

from __future__ import annotations

import argparse
import os
import socket


def operator_identity() -> str:
    """Who this operator is to kopf: the host (in a Pod, the Pod's name) and the process.

    kopf's default asks the password database for the user's name, and an image that runs as a numeric
    uid with no passwd entry (ours does, as restricted Pods should) has none: kopf would crash at start.
    """
    return f"{socket.gethostname()}/{os.getpid()}"


def run_operator(
    namespaces: list[str] | None = None,
    kubeconfig: str | None = None,
    liveness: str | None = "http://0.0.0.0:8080/healthz",
    metrics_port: int = 8000,
    verbose: bool = False,
) -> int:
    """Block until SIGINT/SIGTERM. Without namespaces the operator watches the whole cluster.

    Standalone: one replica, no peering objects; run several only with different namespaces.
    """
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    import kopf  # deferred: kopf and the handlers, which `red --help` never needs

    import red_operator.handlers  # noqa: F401 - registers the handlers with kopf
    from red_operator.metrics import serve

    kopf.configure(verbose=verbose)
    serve(metrics_port)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        liveness_endpoint=liveness or None,
        identity=operator_identity(),
    )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--namespace", action="append", help="watch only this namespace (repeatable; default: all)")
    parser.add_argument("--kubeconfig", help="default: KUBECONFIG, ~/.kube/config, or in-cluster credentials")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint ('' turns it off)")
    parser.add_argument("--metrics-port", type=int, default=8000, help="Prometheus /metrics port (0 turns it off)")
    parser.add_argument("--verbose", action="store_true")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    return run_operator(args.namespace, args.kubeconfig, args.liveness, args.metrics_port, args.verbose)
