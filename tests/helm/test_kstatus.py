"""What Flux sees: kstatus, the library behind Flux's health checks (and kpt's), computed by the real Go code
(tests/cluster/go/kstatus) on the status the operator really writes.

kstatus reads observedGeneration and the Ready condition, and calls a resource Failed only for a
`Stalled=True` condition, which the operator writes with phase Failed. A Suspended Federation stays
InProgress to it (Ready is False), so Flux reports it when its health-check timeout runs out.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.helm.conftest import built
from tests.helm.federation_states import states

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def kstatus(kube) -> str:
    """The binary; `kube` makes the session build it (tests/cluster/ctl build)."""
    return built("kstatus")


def compute(binary: str, obj: dict[str, Any]) -> tuple[str, str]:
    proc = subprocess.run([binary], input=json.dumps(obj), capture_output=True, text=True, timeout=30, check=True)
    status, message = (proc.stdout.splitlines() + ["", ""])[:2]
    return status, message


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        # kstatus cannot tell "no status yet" from "needs none": a Federation is Current until the operator
        # writes its first status (within one reconcile, about a second).
        ("new", "Current"),
        ("provisioning", "InProgress"),
        ("running", "Current"),
        ("succeeded", "Current"),
        ("failed", "Failed"),
        ("suspended", "InProgress"),
        ("queued", "InProgress"),
        ("stale", "InProgress"),
    ],
)
def test_each_federation_state_has_its_kstatus(kstatus: str, state: str, expected: str):
    status, message = compute(kstatus, states()[state])
    assert status == expected, message


def test_a_stale_status_is_reported_as_such(kstatus: str):
    assert compute(kstatus, states()["stale"]) == (
        "InProgress",
        "Federation generation is 2, but latest observed generation is 1",
    )
