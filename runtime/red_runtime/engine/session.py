"""Ray for one run: started (or connected to) in a thread of its own, so that the driver's imports (torch, a
second and more) go on while Ray's processes come up (about three seconds on a 2-core machine), and a
session that always shuts it down.

Torch-free, and Ray-free until Ray starts: `red run` begins this before it imports the driver.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from red_runtime.engine.phases import Phases
from red_runtime.engine.stopping import StopRequest


class _NoThreadWarning(logging.Filter):
    """ray.init off the main thread warns that it set no SIGTERM handler: StopRequest sets its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


class RayStart:
    """`begin()` starts Ray in the background; `wait()` blocks until it is up (raising what ray.init raised);
    `shutdown()` ends it. With no address, an embedded Ray sized to this machine; "local" always starts a fresh
    one, even when another Ray runs here.

    The thread lives until shutdown: Ray ties the processes it starts to their parent with the kernel's
    parent-death signal, which fires when the *thread* that started them ends, not the process.
    """

    def __init__(self, address: str | None):
        self.address = address
        self._ready = threading.Event()
        self._release = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="red-ray-start", daemon=True)

    def begin(self) -> RayStart:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            import ray

            kwargs = (
                {"address": self.address}
                if self.address
                else {"address": "local", "num_cpus": os.cpu_count(), "include_dashboard": False}
            )
            quiet = _NoThreadWarning()
            worker_log = logging.getLogger("ray._private.worker")
            worker_log.addFilter(quiet)
            try:
                ray.init(logging_level=logging.WARNING, log_to_driver=True, **kwargs)
            finally:
                worker_log.removeFilter(quiet)
        except BaseException as err:  # noqa: BLE001 - handed to whoever waits
            self._error = err
        finally:
            self._ready.set()
        self._release.wait()

    def wait(self) -> None:
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def shutdown(self) -> None:
        """Stop Ray (once it has finished starting: ray.init cannot be cut short) and end the thread."""
        if not self._thread.is_alive() and not self._ready.is_set():
            return  # never begun
        self._ready.wait()
        if self._error is None:
            import ray

            ray.shutdown()
        self._release.set()
        self._thread.join()


@contextmanager
def ray_session(
    address: str | None, stop: StopRequest, start: RayStart | None = None, phases: Phases | None = None
) -> Iterator[None]:
    """Connect to `address`, or start an embedded Ray sized to this machine; always shut down. `start`: a
    RayStart the caller began earlier, so that its own imports went on while Ray came up.

    The stop request's signal handlers go in after `ray.init`, which sets a SIGTERM handler of its own
    that would exit without cleaning up, and come out before Ray shuts down. `phases` gets `ray_start`: the
    process's age once Ray is up, everything before the driver can begin (imports included).
    """
    import ray  # here, not at the top: imported in RayStart's thread, while the caller imports torch

    if start is None and ray.is_initialized():
        with stop:
            yield
        return
    start = start or RayStart(address).begin()
    try:
        start.wait()
        if phases is not None:
            phases.add("ray_start", phases.since_start())
        with stop:
            yield
    finally:
        start.shutdown()
