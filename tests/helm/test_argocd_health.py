"""The Argo CD health check of a Federation, run by a real Lua 5.1 (Argo CD's gopher-lua speaks 5.1) on the
status the operator really writes, as Argo CD runs it: the object as the global `obj`, a table returned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.federation_states import states

pytestmark = pytest.mark.unit

GITOPS = Path(__file__).resolve().parents[2] / "docs" / "gitops"
SCRIPT = (GITOPS / "federation-health.lua").read_text()


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    from lupa.lua51 import LuaRuntime

    lua = LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(SCRIPT)
    return hs["status"], hs["message"]


@pytest.mark.parametrize(
    ("state", "health", "says"),
    [
        ("new", "Progressing", "waiting for the Red operator"),
        ("provisioning", "Progressing", "Provisioning: RayCluster digits-star-ray is new"),
        ("running", "Healthy", "Running: RayJob digits-star-1a2b3-1 is running (round 7/20)"),
        ("succeeded", "Healthy", "Succeeded: Ray job SUCCEEDED (round 20/20)"),
        ("failed", "Degraded", "Failed: the RayJob exceeded activeDeadlineSeconds"),
        ("suspended", "Suspended", "Suspended: spec.suspend is true"),
        ("queued", "Progressing", "Queued: waiting in LocalQueue team-a"),
        ("stale", "Progressing", "not yet observed generation 2"),
    ],
)
def test_each_federation_state_has_its_argocd_health(state: str, health: str, says: str):
    status, message = argocd_health(states()[state])
    assert (status, says in message) == (health, True), message


def test_a_failure_the_operator_has_not_yet_seen_past_is_not_degraded():
    """A user fixes a Failed Federation's spec: until the operator acts on the fix, the old verdict is stale."""
    fixed = states()["failed"]
    fixed["metadata"]["generation"] = 2
    assert argocd_health(fixed)[0] == "Progressing"


def test_the_argocd_cm_snippet_carries_the_same_lua():
    cm = yaml.safe_load((GITOPS / "argocd-cm.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"] == {"resource.customizations.health.red.dev_Federation": SCRIPT}
