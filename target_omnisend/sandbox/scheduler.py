"""One background thread running delayed jobs (batch processing, tag changes, segments)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

LOGGER = logging.getLogger(__name__)


class Scheduler:
    """Runs callables at a monotonic time, in order, on one worker thread."""

    def __init__(self) -> None:
        self._jobs: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="sandbox-scheduler", daemon=True)

    def start(self) -> None:
        """Start the worker."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker; pending jobs are dropped."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def clear(self) -> None:
        """Drop every pending job."""
        with self._cond:
            self._jobs.clear()

    def after(self, delay: float, job: Callable[[], None]) -> None:
        """Run ``job`` after ``delay`` wall seconds."""
        with self._cond:
            heapq.heappush(self._jobs, (time.monotonic() + delay, next(self._seq), job))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    wait = self._jobs[0][0] - time.monotonic() if self._jobs else None
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(timeout=wait)
                if self._stopped:
                    return
                _, _, job = heapq.heappop(self._jobs)
            try:
                job()
            except Exception:  # a broken job must not kill the sandbox
                LOGGER.exception("sandbox job failed")
