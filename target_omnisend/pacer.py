"""`SlidingWindowPacer`: keeps request starts under a limit per sliding time window.

One pacer per brand and limit is shared by every sink and thread (see `client.shared_pacer`), so
the whole process stays under Omnisend's per-brand limit and 429 answers stay rare. After a 429,
`pause_until` holds every caller until the server's retry time has passed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

__all__ = ["SlidingWindowPacer", "acquire_together"]


class SlidingWindowPacer:
    """A true sliding window: at most `limit` starts within any `window` seconds.

    A start at time `s` counts until the clock reaches `s + window`. `acquire()` blocks (through
    the injected `sleep`) until a start fits, then records it. Thread-safe; sleeping happens
    outside the lock, so a paused or saturated pacer never blocks callers of other methods.
    """

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        """Create a pacer allowing `limit` starts per `window` seconds of `clock`."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if window <= 0:
            raise ValueError("window must be positive")
        self.limit = int(limit)
        self.window = float(window)
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._paused_until = float("-inf")
        self._lock = threading.Lock()
        self.waited = 0.0  # total seconds callers spent waiting (for stats and benchmarks)

    def __repr__(self) -> str:
        return f"SlidingWindowPacer(limit={self.limit}, window={self.window})"

    def _delay(self, now: float) -> float:
        """Seconds until a start may happen at `now` (0: it may start now). Lock held."""
        if now < self._paused_until:
            return self._paused_until - now
        starts = self._starts
        horizon = now - self.window
        while starts and starts[0] <= horizon:
            starts.popleft()
        if len(starts) < self.limit:
            return 0.0
        return starts[0] - horizon

    def delay(self) -> float:
        """Seconds until a start would fit (0.0: one fits now); records nothing."""
        with self._lock:
            return max(0.0, self._delay(self._clock()))

    def seconds_for(self, count: int) -> float:
        """Seconds until `count` more starts can have happened, at best (records nothing).

        Starts as early as the window allows, counting the starts it holds now (and a pause):
        the floor a progress line's ETA uses.
        """
        if count <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._delay(now)  # drops starts that left the window
            first = max(now, self._paused_until)
            starts = list(self._starts)
        limit, window = self.limit, self.window
        last = first
        for _ in range(count):
            last = max(first, starts[-limit] + window) if len(starts) >= limit else first
            starts.append(last)
        return last - now

    def try_acquire(self) -> float:
        """Record a start if one fits now; return 0.0, else the seconds to wait first."""
        with self._lock:
            now = self._clock()
            delay = self._delay(now)
            if delay <= 0:
                self._starts.append(now)
            return delay

    def acquire(self) -> float:
        """Block until a request may start; record its start. Returns the seconds waited."""
        return self.acquire_stamped()[0]

    def acquire_stamped(self) -> tuple[float, float]:
        """Like `acquire`; also returns the start's stamp, for `restamp` once the answer came."""
        return acquire_together([self])

    def restamp(self, stamp: float) -> None:
        """The request started at `stamp` got its answer: count it from now instead.

        The server counts a request when it arrives, somewhere between its start and its answer;
        a start can leave late (a busy thread) or arrive late, so the window is held from the
        answer, the latest moment the server can have counted it.
        """
        with self._lock:
            with contextlib.suppress(ValueError):  # already out of the window: a slow answer
                self._starts.remove(stamp)
            self._starts.append(self._clock())  # no earlier than every stamp held: stays sorted

    def pause_until(self, deadline: float) -> None:
        """Hold every caller until `deadline` (on this pacer's clock), e.g. after a 429."""
        with self._lock:
            self._paused_until = max(self._paused_until, deadline)

    def pause_for(self, seconds: float) -> None:
        """Hold every caller for `seconds` from now."""
        self.pause_until(self._clock() + max(0.0, seconds))

    @property
    def paused_until(self) -> float:
        """The clock time before which nobody may start (-inf when not paused)."""
        with self._lock:
            return self._paused_until

    def in_window(self) -> int:
        """How many starts the current window holds."""
        with self._lock:
            self._delay(self._clock())
            return len(self._starts)

    def now(self) -> float:
        """The pacer's clock."""
        return self._clock()


def acquire_together(pacers: Sequence[SlidingWindowPacer]) -> tuple[float, float]:
    """Block until every pacer has room, then record one start in each at the same instant.

    A request counted by two limits (a tag call: the brand's 400/min and the tags endpoint's
    60/min) must not take a slot in one window and then wait for the other: the server would see
    it later than the first pacer counted it, and a later request could then fall inside the
    server's window. Returns (seconds waited, the start's stamp for `restamp`).
    """
    ordered = sorted(set(pacers), key=id)  # one lock order for every caller: no deadlock
    waited = 0.0
    while True:
        for pacer in ordered:
            pacer._lock.acquire()
        try:
            now = ordered[0]._clock()
            delay = max(pacer._delay(now) for pacer in ordered)
            if delay <= 0:
                for pacer in ordered:
                    pacer._starts.append(now)
                    pacer.waited += waited
        finally:
            for pacer in reversed(ordered):
                pacer._lock.release()
        if delay <= 0:
            return waited, now
        ordered[0]._sleep(delay)
        waited += delay
