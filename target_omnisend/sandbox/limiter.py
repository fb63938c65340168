"""A true sliding-window rate limiter, one window per (brand, bucket)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass
class Decision:
    """The outcome of one request against a window."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # wall seconds, >= 1 when refused
    reset: int  # wall seconds until a slot frees up (0 when the window is empty)


class SlidingWindowLimiter:
    """Counts requests in the last ``window`` wall seconds for each key."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def hit(
        self, key: tuple[str, str], limit: int, window: float, now: float | None = None
    ) -> Decision:
        """Record a request for ``key`` if the window has room; say whether it may pass."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - window:
                hits.popleft()
            if len(hits) < limit:
                hits.append(now)
                reset = hits[0] + window - now
                return Decision(True, limit, limit - len(hits), 0, _ceil(reset))
            wait = hits[0] + window - now
            return Decision(False, limit, 0, max(1, _ceil(wait)), _ceil(wait))

    def spend(self, key: tuple[str, str], limit: int, window: float) -> None:
        """Use one slot of ``key`` if there is room (the simulated second app)."""
        self.hit(key, limit, window)

    def brands_seen(self) -> list[tuple[str, str]]:
        """Every key seen so far."""
        with self._lock:
            return list(self._hits)

    def reset(self) -> None:
        """Forget every window."""
        with self._lock:
            self._hits.clear()


def _ceil(seconds: float) -> int:
    return max(0, math.ceil(seconds - 1e-9))
