"""`red operator`: run the Federation operator against the current kubeconfig, or in-cluster."""

from __future__ import annotations

import os


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
    import kopf

    import red_operator.handlers  # noqa: F401 - registers the handlers with kopf
    from red_operator.metrics import serve

    kopf.configure(verbose=verbose)
    serve(metrics_port)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        liveness_endpoint=liveness or None,
    )
    return 0
