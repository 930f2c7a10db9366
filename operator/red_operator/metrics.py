"""Prometheus metrics of the operator: how often it reconciles, how often that fails, Federations per phase."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, start_http_server

from red_operator.status import PHASES

RECONCILES = Counter("red_operator_reconciles_total", "Reconcile passes of a Federation", ["trigger"])
ERRORS = Counter("red_operator_reconcile_errors_total", "Reconcile passes that raised", ["kind"])
FEDERATIONS = Gauge("red_operator_federations", "Federations known to this operator, by phase", ["phase"])

_lock = threading.Lock()
_phases: dict[str, str] = {}


def set_phase(key: str, phase: str | None) -> None:
    """Record a Federation's phase (None: it is gone) and refresh the per-phase gauge."""
    with _lock:
        if phase is None:
            _phases.pop(key, None)
        else:
            _phases[key] = phase
        counts = dict.fromkeys(PHASES, 0)
        for value in _phases.values():
            counts[value] = counts.get(value, 0) + 1
    for phase_name, count in counts.items():
        FEDERATIONS.labels(phase=phase_name).set(count)


def known() -> int:
    """How many Federations have a recorded phase: the liveness probe's payload."""
    with _lock:
        return len(_phases)


def serve(port: int) -> None:
    """Expose /metrics on `port` (0 turns it off)."""
    if port:
        start_http_server(port)
