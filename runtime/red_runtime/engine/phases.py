"""Where a run's wall-clock time goes, from the process start to its files written (summary.json `phases`).

Phases can overlap: the node actors start (importing torch, preparing their data) while the driver prepares its
own data and model, so their sum may exceed `total`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

NAMES = ("ray_start", "actors", "data", "rounds", "evaluate", "write")
_IMPORTED_AT = time.time()  # the process start where /proc cannot tell it


def process_started() -> float:
    """This process's start, in time.time()'s clock: from /proc on Linux, else when this module was imported."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            # Field 22, after the command name in parentheses (which may hold spaces): clock ticks since boot.
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return _IMPORTED_AT
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


class Phases:
    """Seconds per phase, added up as the run goes; `origin` is the process start (time.time())."""

    def __init__(self, origin: float | None = None):
        self.origin = process_started() if origin is None else origin
        self.seconds = dict.fromkeys(NAMES, 0.0)

    @contextmanager
    def timing(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - began)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds

    def since_start(self) -> float:
        return time.time() - self.origin

    def as_dict(self) -> dict[str, float]:
        """The phases and `total`, the process's age now, rounded to milliseconds."""
        return {**{k: round(v, 3) for k, v in self.seconds.items()}, "total": round(self.since_start(), 3)}
