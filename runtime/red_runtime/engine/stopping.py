"""SIGINT and SIGTERM in one place: the first asks the run to stop, a second one stops it at once.

Python's default SIGINT handler raises KeyboardInterrupt wherever the main thread happens to be, and an
exception raised inside a finaliser, a weakref callback or library code with a broad `except` is
swallowed: the Ctrl-C is lost and training goes on. On Kubernetes the driver gets SIGTERM, which Ray's
`ray.init` turns into a bare `sys.exit`. Here a handler only records the signal; the driver checks it
between rounds and while it waits for a round, so the request cannot be lost and the stop is orderly:
finish or abandon the round within a grace period, checkpoint, flush, remove the placement group.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("red.stop")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_FAILED, EXIT_INVALID = 1, 2  # a run that failed; a manifest that cannot run
# How long a stopping run waits for the round in flight. Kubernetes kills a Pod 30 s after SIGTERM by
# default, and the checkpoint, the last status patch and Ray's shutdown must fit in what is left.
GRACE_S = float(os.environ.get("RED_STOP_GRACE_S", "10"))
# The head Pod's preStop hook (red_runtime.apps.drain) asks the driver to stop by creating this file. A file, not a
# signal: KubeRay stopping the Ray job sends SIGTERM too, and that one must not count as a second signal.
STOP_FILE = Path(os.environ.get("RED_STOP_FILE", "/tmp/red-driver.stop"))


class Interrupted(KeyboardInterrupt):
    """A stop by signal: raised at once by a second signal, or by the driver after an orderly stop."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as shells report them
        super().__init__(message or f"stopped by signal {signal.Signals(signum).name}")


class RoundAbandoned(Exception):
    """The round in flight did not finish within the grace period of a stop request."""


class StopRequest:
    """Records SIGINT/SIGTERM while installed (main thread only); a second signal raises Interrupted."""

    def __init__(self, grace_s: float = GRACE_S, action: str = ""):
        self.grace_s = grace_s
        self.action = action  # what the first signal sets going, as the log line says it
        self.signum: int | None = None
        self.repeated = False
        self.requested_at: float | None = None
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        self._by_signal = False  # whether the request in effect came from a signal (not the stop file)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and self._by_signal:
            self.repeated = True
            raise Interrupted(signum, self.describe())
        if self.signum is not None:  # the stop file came first: this is the first signal, the stop goes on
            self._by_signal = True
            log.warning("%s while stopping for the Pod's preStop hook: still stopping", signal.Signals(signum).name)
            return
        self.request(signum)

    def watch_file(self, path: Path = STOP_FILE, every_s: float = 0.5) -> None:
        """Stop as a SIGTERM would once `path` exists (the preStop hook's request). A file left by an earlier
        driver in this container is removed first: it asked that one to stop, not this one."""
        path.unlink(missing_ok=True)

        def poll() -> None:
            # Ends with any stop request, a signal's too.
            while not self._event.wait(every_s):
                if path.exists():
                    self._record(signal.SIGTERM)
                    log.warning(
                        "%s: the Pod is going; stopping after the current round (at most %.0fs)", path, self.grace_s
                    )
                    return

        threading.Thread(target=poll, name="red-stop-file", daemon=True).start()

    def request(self, signum: int) -> None:
        """Ask the run to stop, as the first signal does (tests and callers may call it directly)."""
        self._by_signal = True
        self._record(signum)
        action = self.action or f"stopping after the current round (at most {self.grace_s:.0f}s)"
        log.warning("%s: %s; send it again to stop at once", signal.Signals(signum).name, action)

    def _record(self, signum: int) -> None:
        self.signum = signum
        self.requested_at = time.monotonic()
        self._event.set()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested (True) or `timeout` seconds pass (False)."""
        return self._event.wait(timeout)

    def grace_left(self) -> float:
        """Seconds the round in flight may still take; infinite while no stop is requested."""
        if self.requested_at is None:
            return float("inf")
        return self.requested_at + self.grace_s - time.monotonic()

    def interrupted(self, message: str) -> Interrupted:
        assert self.signum is not None
        return Interrupted(self.signum, message)

    def describe(self) -> str:
        """What stopped the run, for a KeyboardInterrupt that lost its type crossing Ray's native code."""
        if self.repeated:
            return f"stopped at once by a second signal {self.name}"
        return f"stopped by signal {self.name}" if self.signum is not None else "interrupted"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)
