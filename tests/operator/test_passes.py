"""The operator's passes: one status write path, serialised, from indices, and nothing for idle Federations."""

from __future__ import annotations

import copy
import threading

import pytest

from red_operator.children import IndexSeen, by_controller, by_name
from red_operator.passes import Passes
from tests.operator.test_reconcile import DRIVER_DONE, FakeRest, federation

pytestmark = pytest.mark.unit

KINDS = ("RayCluster", "RayJob", "RayService", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim")


class NoReads(FakeRest):
    """The API as the operator should use it in a pass: writes only, every read answered by an index."""

    def get(self, kind, namespace, name):
        raise AssertionError(f"GET {kind} {name}: a pass reads from its indices")

    def list(self, kind, namespace, selector):
        raise AssertionError(f"LIST {kind}: a pass reads from its indices")

    def post(self, obj):
        self.log.append(("post", obj["kind"], obj["reason"]))
        return obj

    def patch(self, kind, namespace, name, body, subresource=""):
        self.log.append(("patch", kind, name))
        if kind == "Federation":
            fed = self.objects[("Federation", name)]
            fed["status"] = {**fed.get("status", {}), **copy.deepcopy(body["status"])}
            return {"metadata": {"resourceVersion": str(len(self.log))}}
        return super().patch(kind, namespace, name, body, subresource)


class Watched:
    """kopf indices kept up to date from the fake API, as the watches keep them."""

    def __init__(self, rest, federations_lag=False):
        self.rest, self.lag = rest, federations_lag
        self.frozen = None

    def federations(self):
        if self.lag and self.frozen is not None:
            return self.frozen
        index = {("ns", n): [copy.deepcopy(o)] for (k, n), o in self.rest.objects.items() if k == "Federation"}
        if self.lag:
            self.frozen = index
        return index

    def seen(self):
        """Children as the indices hold them: built from the fake API by the index functions at each look."""
        return self

    def get(self, kind, namespace, name):
        return self.index().get(kind, namespace, name)

    def jobs(self, namespace, fed_name, fed_uid):
        return self.index().jobs(namespace, fed_name, fed_uid)

    def accounts(self, namespace, fed_name, fed_uid):
        return self.index().accounts(namespace, fed_name, fed_uid)

    def index(self):
        by_kind = {kind: {} for kind in KINDS}
        controlled = {"RayJob": {}, "ServiceAccount": {}}
        for (kind, _), obj in self.rest.objects.items():
            if kind in by_kind:
                for key, value in by_name(obj).items():
                    by_kind[kind].setdefault(key, []).append(value)
            if kind in controlled:
                for key, value in by_controller(obj).items():
                    controlled[kind].setdefault(key, []).append(value)
        return IndexSeen(by_kind, controlled["RayJob"], controlled["ServiceAccount"])


class FedIndex(dict):
    def __init__(self, watched):
        super().__init__()
        self.watched = watched

    def get(self, key, default=None):
        return self.watched.federations().get(key, default)

    def __iter__(self):
        return iter(self.watched.federations())


def setup(lag=False, body=None):
    rest = NoReads()
    rest.objects[("Federation", "f")] = body or federation()
    watched = Watched(rest, federations_lag=lag)
    return rest, Passes(rest, FedIndex(watched), watched.seen())


def status_patches(rest):
    return [entry for entry in rest.log if entry[:2] == ("patch", "Federation")]


def test_a_pass_reads_nothing_from_the_api_and_an_unchanged_one_writes_nothing():
    rest, passes = setup()
    passes.run(("ns", "f"), "create")
    assert len(status_patches(rest)) == 1
    log = list(rest.log)
    passes.run(("ns", "f"), "resync")
    assert rest.log == log, "nothing changed: no request at all"


def test_a_pass_never_works_from_a_status_older_than_its_own_last_write():
    """The watch has not brought the operator's last patch back yet: the next pass sees that patch anyway,
    so it neither repeats it nor restarts the conditions' transition times."""
    rest, passes = setup(lag=True)
    first = passes.run(("ns", "f"), "create").status
    second = passes.run(("ns", "f"), "child").status
    assert len(status_patches(rest)) == 1
    assert second["conditions"] == first["conditions"]


def test_passes_of_one_federation_never_overlap():
    rest, passes = setup()
    inside, overlaps = [0], []
    real = passes.rest.patch

    def slow_patch(*args, **kw):
        inside[0] += 1
        overlaps.append(inside[0])
        threading.Event().wait(0.01)
        inside[0] -= 1
        return real(*args, **kw)

    passes.rest.patch = slow_patch
    threads = [threading.Thread(target=passes.run, args=(("ns", "f"), "child")) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlaps) == 1


def test_idle_federations_cost_no_requests_in_the_resync():
    done = federation(status={**DRIVER_DONE, "phase": "Succeeded", "observedGeneration": 1})
    rest, passes = setup(body=done)
    stop, indexed = threading.Event(), threading.Event()
    indexed.set()
    thread = threading.Thread(target=passes.resync, args=(stop, indexed, 0.01))
    thread.start()
    threading.Event().wait(0.2)
    stop.set()
    thread.join()
    assert rest.log == []
    rest.objects[("Federation", "f")]["metadata"]["generation"] = 2  # a spec change wakes it
    stop.clear()
    thread = threading.Thread(target=passes.resync, args=(stop, indexed, 0.01))
    thread.start()
    threading.Event().wait(0.2)
    stop.set()
    thread.join()
    assert status_patches(rest)


def test_every_child_created_and_every_phase_change_is_an_event():
    rest, passes = setup()
    passes.run(("ns", "f"), "create")
    posted = [entry[2] for entry in rest.log if entry[0] == "post"]
    assert {"CreatedServiceAccount", "CreatedRole", "CreatedRoleBinding", "CreatedRayCluster", "CreatedRayJob"} <= set(
        posted
    )
    assert "Provisioning" in posted


def test_a_conflict_is_an_event_once():
    rest, passes = setup()
    rest.objects[("RayCluster", "f-ray")] = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "f-ray", "namespace": "ns", "uid": "theirs"},
    }
    for _ in range(3):
        passes.run(("ns", "f"), "resync")
    assert [entry[2] for entry in rest.log if entry[0] == "post"].count("Conflict") == 1
