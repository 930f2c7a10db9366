"""Node health from the actors' incarnations: restarts, straggling and nodes that are gone for good.

Ray restarts a crashed actor up to `maxNodeRestarts` times; a new incarnation behind a slot is a
restart, and its nodes are Restarting until they report again. An incarnation is a token each actor draws
when it starts, not its process id: in a replacement Pod the restarted actor often gets the same pid as
the one that died. A slot whose actor Ray gave up on takes its nodes out of the federation. The monitor
asks only `ping(slot) -> incarnation`, so it unit-tests with a fake.
"""

from __future__ import annotations

from collections.abc import Callable

from red_runtime.engine.events import FAILED, HEALTHY, RESTARTING, STRAGGLING, NodeStatus, now_iso
from red_runtime.engine.topology import node_id


class SlotGone(Exception):
    """The actor behind a slot is dead for good (or did not come back in time)."""


class HealthMonitor:
    def __init__(
        self,
        nodes: list[NodeStatus],
        nodes_in: Callable[[int], list[int]],
        slot_of: Callable[[int], int],
        ping: Callable[..., str],  # ping(slot, startup=False) -> incarnation; raises SlotGone
    ):
        self.nodes = nodes
        self.nodes_in = nodes_in
        self.slot_of = slot_of
        self.ping = ping
        self.incarnations: dict[int, str] = {}  # slot -> the actor incarnation last seen
        self.dead_slots: set[int] = set()

    def failed_indices(self) -> set[int]:
        return {i for i, n in enumerate(self.nodes) if n.state == FAILED}

    def started(self, slot: int) -> None:
        """A slot's actor answered for the first time (or again): remember who it is."""
        self.saw(slot, self.ping(slot, startup=True))

    def round_done(self, round_no: int, results: list[dict], straggling: set[int], crashed: set[int]) -> list[str]:
        """Mark this round's nodes; returns the ids of nodes that failed for good in it."""
        seen = now_iso()
        for r in results:
            status = self.nodes[r["index"]]
            status.state, status.lastRound, status.lastSeen = HEALTHY, round_no, seen
        for i in straggling:
            self.nodes[i].state = STRAGGLING
        for r in results:  # after marking: a restarted actor's nodes stay Restarting for this round
            self.saw(self.slot_of(r["index"]), r["incarnation"])
        gone: list[str] = []
        for slot in sorted({self.slot_of(i) for i in crashed} - self.dead_slots):
            try:
                self.saw(slot, self.ping(slot))
            except SlotGone:
                self.dead_slots.add(slot)
                for i in self.nodes_in(slot):
                    self.nodes[i].state = FAILED
                    gone.append(node_id(i))
        return gone

    def saw(self, slot: int, incarnation: str) -> None:
        known = self.incarnations.get(slot)
        self.incarnations[slot] = incarnation
        if known is not None and known != incarnation:
            for i in self.nodes_in(slot):
                self.nodes[i].restarts += 1
                if self.nodes[i].state != FAILED:
                    self.nodes[i].state = RESTARTING
