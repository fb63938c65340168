"""SlidingWindowPacer with a fake clock: limits, window boundaries, pauses and threads."""

from __future__ import annotations

import threading
from bisect import bisect_right

import pytest

from target_omnisend.pacer import SlidingWindowPacer, acquire_together


class FakeClock:
    """A clock that only moves when someone sleeps (thread-safe)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the pacer must never ask for a zero or negative sleep"
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds


def make(limit: int, window: float = 60.0) -> tuple[SlidingWindowPacer, FakeClock]:
    clock = FakeClock()
    return SlidingWindowPacer(limit, window, clock=clock, sleep=clock.sleep), clock


def max_starts_in_any_window(starts: list[float], window: float) -> int:
    """The most starts any half-open window (t - window, t] holds."""
    starts = sorted(starts)
    best = 0
    for index, start in enumerate(starts):
        # starts within [start, start + window) share a window with `start`
        end = bisect_right(starts, start + window - 1e-12)
        best = max(best, end - index)
    return best


def test_first_limit_starts_do_not_wait() -> None:
    pacer, clock = make(5)
    for _ in range(5):
        assert pacer.acquire() == 0.0
    assert clock.sleeps == []
    assert pacer.in_window() == 5


def test_the_next_start_waits_for_the_oldest_to_leave_the_window() -> None:
    pacer, clock = make(3, window=10.0)
    pacer.acquire()
    clock.now += 4
    pacer.acquire()
    pacer.acquire()
    waited = pacer.acquire()  # the first start (t=1000) leaves at t=1010; now is 1004
    assert waited == pytest.approx(6.0)
    assert clock.now == pytest.approx(1010.0)


def test_a_start_exactly_one_window_old_no_longer_counts() -> None:
    pacer, clock = make(1, window=10.0)
    pacer.acquire()
    clock.now += 10.0
    assert pacer.try_acquire() == 0.0  # boundary: the window is (now - 10, now]


def test_a_start_just_inside_the_window_still_counts() -> None:
    pacer, clock = make(1, window=10.0)
    pacer.acquire()
    clock.now += 9.5
    assert pacer.try_acquire() == pytest.approx(0.5)
    assert pacer.in_window() == 1


def test_never_more_than_limit_starts_in_any_window() -> None:
    pacer, clock = make(7, window=5.0)
    starts = []
    for index in range(100):
        pacer.acquire()
        starts.append(clock())
        clock.now += (index % 3) * 0.13  # irregular gaps between callers
    assert max_starts_in_any_window(starts, 5.0) == 7


def test_steady_rate_matches_the_limit() -> None:
    pacer, clock = make(10, window=1.0)
    start = clock()
    for _ in range(50):
        pacer.acquire()
    # 50 starts at 10/s: the 41st-50th fit in the fifth second
    assert clock() - start == pytest.approx(4.0)


def test_pause_holds_callers_until_the_deadline() -> None:
    pacer, clock = make(100)
    pacer.acquire()
    pacer.pause_until(clock() + 7.5)
    assert pacer.try_acquire() == pytest.approx(7.5)
    waited = pacer.acquire()
    assert waited == pytest.approx(7.5)
    assert clock() == pytest.approx(1007.5)


def test_an_earlier_pause_does_not_shorten_a_later_one() -> None:
    pacer, _ = make(100)
    pacer.pause_for(10)
    pacer.pause_for(2)
    assert pacer.paused_until == pytest.approx(1010.0)
    assert pacer.acquire() == pytest.approx(10.0)


def test_pause_then_window_both_apply() -> None:
    pacer, _ = make(1, window=10.0)
    pacer.acquire()  # t=1000, blocks the window until 1010
    pacer.pause_until(1003.0)
    assert pacer.acquire() == pytest.approx(10.0)  # 3 s of pause, then 7 s of window


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        SlidingWindowPacer(0)
    with pytest.raises(ValueError):
        SlidingWindowPacer(1, window=0)


def test_thread_safe_under_contention() -> None:
    pacer, clock = make(20, window=2.0)
    starts: list[float] = []
    starts_lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            pacer.acquire()
            with starts_lock:
                starts.append(clock())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(starts) == 200
    assert max_starts_in_any_window(starts, 2.0) <= 20


def test_thread_safe_with_a_real_clock() -> None:
    pacer = SlidingWindowPacer(1000, window=60.0)
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        for _ in range(100):
            pacer.acquire()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pacer.in_window() == 600  # no start lost or double-counted


def test_acquire_together_takes_a_slot_in_every_window_at_the_same_instant() -> None:
    clock = FakeClock(start=0.0)
    brand = SlidingWindowPacer(3, 60.0, clock=clock, sleep=clock.sleep)
    tags = SlidingWindowPacer(2, 60.0, clock=clock, sleep=clock.sleep)
    for _ in range(3):  # the brand window fills up with other requests
        brand.acquire()
    clock.sleep(10)
    waited, stamp = acquire_together([tags, brand])
    # It waited for the brand window, and only then took its tags slot: at the same instant.
    assert waited == pytest.approx(50.0)
    assert tags._starts[-1] == brand._starts[-1] == pytest.approx(60.0)
    assert tags.in_window() == 1
    assert brand.in_window() == 1  # the three others left the window as this one started
    assert stamp == pytest.approx(60.0)


def test_restamp_holds_the_slot_from_the_answer() -> None:
    pacer, clock = make(2, window=10.0)
    _, first = pacer.acquire_stamped()  # t=1000
    pacer.acquire()  # t=1000: the window is full
    clock.sleep(3)
    pacer.restamp(first)  # its answer came at t=1003: it counts until 1013, not 1010
    assert pacer.try_acquire() == pytest.approx(7.0)  # the second start leaves at 1010
    clock.sleep(7)
    assert pacer.try_acquire() == 0.0  # t=1010
    assert pacer.try_acquire() == pytest.approx(3.0)  # the restamped one holds until 1013
