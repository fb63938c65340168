"""`BatchPipeline`: pipelined batch submission, economical polling, per-contact accounting.

`submit` cuts contacts into batches (the generation's item limit and at most 1 MB), submits
them and returns without waiting for Omnisend to process them; at most `max_in_flight` batches
are unconfirmed at once (a full pipeline pumps until any batch finishes). `pump` polls when due:
one `GET /batches` answers for many batches, `/items` is read only for batches with errors or
stopped ones. Each finished batch is accounted for with one `on_result(ticket, result)` call.
Items a stopped batch never processed, or that failed with 5xx/429, are resubmitted (bounded);
what cannot be accounted for raises `UnaccountedBatchError`.

Newer values never lose (per identifier, email or phone): a contact goes out only once no earlier
submitted contact sharing an identifier is unresolved at Omnisend (still processing, waiting to be
resubmitted after a stopped batch or a transient item error). Until then it waits here, holding
its submit's sequence number open, and is sent after the earlier one ended. Omnisend documents no
processing order between batches, so this does not rely on one. A `POST /batches` attempt that
got no answer (timeout, dropped connection, 5xx) may still create a batch later (no idempotency
keys): the identifiers of that chunk stay held for `ghost_horizon` seconds after the attempt even
once the batch we know of ended, so a late duplicate of the older values cannot land after newer
ones. Within one batch, items are applied in order, so contacts sharing an identifier may share it.

Sequence numbers: every `submit` gets the next number; `completed_through(seq)` says whether
every submit numbered `seq` or lower is fully accounted for (the target's STATE gate).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from target_omnisend.client import (
    BATCH_HEAD,
    MAX_BODY_BYTES,
    BatchStatus,
    FatalApiError,
    ItemOutcome,
    PayloadTooLargeError,
    encode_json,
)

__all__ = [
    "BatchPipeline",
    "BatchResult",
    "PipelineProgress",
    "Rejection",
    "UnaccountedBatchError",
    "encode_payload",
]

POLL_SHARE = 0.04  # polls stay at or below this share of requests at the configured rate
MIN_POLL_GAP = 0.2
DEFAULT_MAX_BATCH_AGE = 15 * 60.0
DEFAULT_MAX_RESUBMITS = 5
# How long after an unanswered `POST /batches` attempt the batch it may have created could still
# appear, at Omnisend's 400/min (scaled down with the rate above it, like the pacer's window: a
# sandbox whose clock runs faster). A gateway gives up on a request well within a minute.
DEFAULT_GHOST_HORIZON = 60.0
RETRYABLE_ITEM_CODES = frozenset({0, 408, 429, 500, 502, 503, 504, 520, 522, 524})
TOO_LARGE = "The contact's payload is larger than Omnisend's 1 MB request limit."
NOT_UTF8 = "The contact holds text that is not valid UTF-8 (undecodable input bytes)."


def encode_payload(contact: Any) -> bytes | None:
    """The payload as the pipeline sends it; None leaves it to the pipeline (and its rejects)."""
    try:
        return encode_json(contact.payload, finite=True)
    except (TypeError, ValueError, UnicodeEncodeError):
        return None


class UnaccountedBatchError(FatalApiError):
    """A batch (or some of its contacts) could not be accounted for: the run must fail."""


class PipelineProgress(NamedTuple):
    """Batches submitted and not finished, chunks waiting for the pacer, results undelivered."""

    at_omnisend: int
    waiting_to_send: int
    results_to_deliver: int
    latency: float  # seconds from submit to seen finished, as learned so far


class Rejection(NamedTuple):
    """A contact Omnisend refused, with its error text (unpacks as `contact, error`)."""

    contact: Any
    error: str


@dataclass(frozen=True)
class BatchResult:
    """The accounting of one batch: accepted contacts and rejections."""

    accepted: list[Any]
    rejected: list[Rejection]
    batch_id: str | None = None


@dataclass(eq=False)
class _Batch:
    """One submitted chunk and what it needs for accounting."""

    seq: int
    ticket: Any
    contacts: list[Any]
    encoded: list[bytes]
    submitted_at: float = 0.0
    batch_id: str = ""
    resubmits: int = 0
    # Until when a duplicate of this chunk may still be created (an attempt went unanswered).
    ghost_until: float = 0.0


class _Held(NamedTuple):
    """A contact waiting for an earlier contact sharing an identifier to end at Omnisend."""

    seq: int
    ticket: Any
    contact: Any
    encoded: bytes | None
    ids: tuple[str, ...]


def gate_ids(contact: Any) -> tuple[str, ...]:
    """The identifiers a contact is ordered by: its email and phone."""
    email, phone = contact.email, contact.phone
    if email is None:
        return () if phone is None else (phone,)
    return (email,) if phone is None or phone == email else (email, phone)


@dataclass
class _Failures:
    messages: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.messages.append(message)


class BatchPipeline:
    """Submits batches without waiting, polls economically, accounts for every contact."""

    def __init__(
        self,
        client: Any,
        max_in_flight: int,
        on_result: Callable[[Any, BatchResult], None],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        poll_interval: float | None = None,
        max_batch_age: float = DEFAULT_MAX_BATCH_AGE,
        max_resubmits: int = DEFAULT_MAX_RESUBMITS,
        max_body_bytes: int = MAX_BODY_BYTES,
        background_results: bool = True,
        max_result_backlog: int | None = None,
        ghost_horizon: float | None = None,
    ) -> None:
        """Wire the pipeline to a client (an `OmnisendClient` or anything shaped like it).

        Args:
            client: submits and polls batches (`dialect.batch_limit`, `submit_batch`, `poll`,
                `batch_items`, `max_requests_per_minute`).
            max_in_flight: batches submitted but not yet accounted for, at most.
            on_result: `on_result(ticket, BatchResult)`, once per batch; calls never overlap.
                They run on a results thread (or the polling thread when
                `background_results` is False), so a slow callback (tag calls waiting for
                their own rate limit) never holds up reading, submitting and polling. An
                exception it raises is re-raised from the next `submit`/`pump`/`wait_all`.
            clock: monotonic seconds (tests).
            sleep: how to wait (tests).
            poll_interval: seconds between polls while records flow; default adapts to the
                client's rate so polls stay near 4 % of requests.
            max_batch_age: seconds a batch may stay unfinished before the run fails.
            max_resubmits: how often unprocessed or transiently failed items are resubmitted.
            max_body_bytes: request body limit per batch.
            background_results: deliver results on a background thread.
            max_result_backlog: finished batches whose results may wait for `on_result`
                before submitting pauses (bounds memory); default 4 times max_in_flight, at
                least 64.
            ghost_horizon: seconds after an unanswered `POST /batches` attempt during which
                its chunk's identifiers stay held (default: a minute at 400/min, scaled).
        """
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.client = client
        self.max_in_flight = int(max_in_flight)
        self.on_result = on_result
        self._clock = clock
        self._sleep = sleep
        self.max_batch_age = float(max_batch_age)
        self.max_resubmits = int(max_resubmits)
        self.max_body_bytes = int(max_body_bytes)
        self.batch_limit = int(client.dialect.batch_limit)
        rate = float(getattr(client, "max_requests_per_minute", 400) or 400)
        if poll_interval is None:
            poll_interval = max(MIN_POLL_GAP, 60.0 / (POLL_SHARE * rate))
        if ghost_horizon is None:
            ghost_horizon = DEFAULT_GHOST_HORIZON * min(1.0, 400.0 / rate)
        self.ghost_horizon = float(ghost_horizon)
        self.busy_gap = float(poll_interval)
        self.idle_gap = max(min(MIN_POLL_GAP, self.busy_gap), self.busy_gap / 4)
        self._latency = min(self.busy_gap, 1.0)  # submit → seen finished, learned as we go
        self._lock = threading.RLock()
        self._progress = threading.Condition(self._lock)
        self._poll_lock = threading.Lock()
        self._deliver_lock = threading.RLock()
        self.background_results = background_results
        self.max_result_backlog = int(max_result_backlog or max(64, 4 * self.max_in_flight))
        self._results: queue.SimpleQueue[tuple[Any, BatchResult, int] | None] = queue.SimpleQueue()
        self._results_thread: threading.Thread | None = None
        self._backlog = 0  # results not yet delivered
        self._callback_error: BaseException | None = None
        self._outstanding: dict[str, _Batch] = {}
        self._reserved = 0  # chunks being submitted right now or waiting in _ready
        # Chunks encoded and holding a slot, waiting for the pacer: while the rate-limit window
        # is full the caller goes on reading records instead of blocking in the pacer.
        self._ready: deque[_Batch] = deque()
        self._ready_due = -math.inf  # when the pacer is next expected to have room
        self._send_lock = threading.Lock()
        self._seq = 0
        self._open: dict[int, int] = {}  # seq → unresolved units (chunks + the submit itself)
        self._done_through = 0
        self._broken: set[int] = set()  # seqs that can never complete
        self._failures = _Failures()
        self._last_poll = -math.inf
        self._next_due = math.inf
        # Per identifier: submitted contacts holding it that did not end at Omnisend yet.
        self._busy: dict[str, int] = {}
        self._held: deque[_Held] = deque()
        self._held_ids: dict[str, int] = {}  # identifiers of held contacts (they queue behind)
        self._ghosts: list[tuple[float, tuple[str, ...]]] = []  # (until, identifiers)
        self._ghosts_due = math.inf
        self.polls = 0
        self.batches_submitted = 0
        self.resubmitted_batches = 0
        self.held_contacts = 0  # contacts that waited for an earlier one (for the summary)

    # -- sequence numbers -------------------------------------------------------------------------

    def outstanding_seq(self) -> int:
        """The highest sequence number handed out so far (0 before the first submit)."""
        with self._lock:
            return self._seq

    def completed_seq(self) -> int:
        """The highest S such that every submit numbered S or lower is accounted for."""
        with self._lock:
            return self._done_through

    def completed_through(self, seq: int) -> bool:
        """Whether every submit numbered `seq` or lower is finished and accounted for."""
        with self._lock:
            return self._done_through >= seq

    def _unit_done(self, seq: int) -> None:
        """One chunk (or the submit call) of `seq` is accounted for. Lock held."""
        self._open[seq] -= 1
        while True:
            following = self._done_through + 1
            if following > self._seq or following in self._broken:
                break
            if self._open.get(following, 0) > 0:
                break
            self._open.pop(following, None)
            self._done_through = following

    @property
    def in_flight(self) -> int:
        """Batches submitted (or being submitted) and not yet accounted for."""
        with self._lock:
            return len(self._outstanding) + self._reserved

    def progress(self) -> PipelineProgress:
        """Where the batches are, for the progress line."""
        with self._lock:
            return PipelineProgress(
                at_omnisend=len(self._outstanding),
                waiting_to_send=len(self._ready),
                results_to_deliver=self._backlog,
                latency=self._latency,
            )

    # -- submitting -------------------------------------------------------------------------------

    def submit(
        self,
        contacts: Sequence[Any],
        ticket: Any,
        encoded: Sequence[bytes | None] | None = None,
    ) -> int:
        """Submit contacts (objects with `.key`, `.email`, `.phone`, `.payload`); returns the seq.

        `encoded` may hold each payload as `encode_json(payload, finite=True)` wrote it (None:
        encode it here). Returns once every chunk is queued; processing at Omnisend continues.
        Raises `FatalApiError`/`TransientApiError` from the client, and `UnaccountedBatchError`
        when an earlier batch could not be accounted for.
        """
        self._raise_failures()
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._open[seq] = 1
        try:
            chunks, too_large = self._chunks(list(contacts), encoded, seq, ticket)
            if too_large:
                self._account(seq, ticket, BatchResult([], too_large))
            for chunk_contacts, chunk_encoded in chunks:
                self._wait_for_slot()
                with self._lock:
                    self._open[seq] += 1
                    self._ready.append(_Batch(seq, ticket, chunk_contacts, chunk_encoded))
        except BaseException:
            with self._lock:
                self._broken.add(seq)
            raise
        with self._lock:
            self._unit_done(seq)
        self.pump()  # sends the chunks the pacer has room for
        return seq

    def _send_ready(self, block: bool) -> None:
        """Submit waiting chunks in order: all of them (`block`), or while the pacer has room."""
        if not self._send_lock.acquire(blocking=block):
            return  # another thread is sending them
        try:
            pacer = getattr(self.client, "pacer", None)
            while True:
                with self._lock:
                    if not self._ready:
                        return
                    batch = self._ready[0]
                if not block and pacer is not None:
                    delay = pacer.delay()
                    if delay > 0:
                        self._ready_due = self._clock() + delay
                        return
                with self._lock:
                    self._ready.popleft()
                try:
                    self._submit_chunk(batch, slot_reserved=True, unit_counted=True)
                except BaseException:
                    with self._lock:
                        self._broken.add(batch.seq)
                    raise
        finally:
            self._send_lock.release()

    def _chunks(
        self,
        contacts: list[Any],
        known: Sequence[bytes | None] | None,
        seq: int,
        ticket: Any,
        released: bool = False,
    ) -> tuple[list[tuple[list, list[bytes]]], list]:
        """Cut into chunks of ≤ batch_limit items and ≤ max_body_bytes; oversized contacts.

        A contact sharing an identifier with an unresolved contact (of an earlier chunk, or
        waiting itself) is held instead; the chunks' contacts hold their identifiers.
        `released`: held contacts let go in order, none of them behind another.
        """
        room = self.max_body_bytes - len(BATCH_HEAD) - 2
        chunks: list[tuple[list, list[bytes]]] = []
        too_large: list[Rejection] = []
        current: list[Any] = []
        encoded: list[bytes] = []
        claimed: set[str] = set()  # identifiers the current chunk holds (it may repeat them)
        size = 0
        busy = self._busy
        held_ids: Mapping[str, int] = {} if released else self._held_ids
        with self._lock:
            for index, contact in enumerate(contacts):
                item = known[index] if known is not None else None
                ids = gate_ids(contact)
                if any((i in busy and i not in claimed) or i in held_ids for i in ids):
                    self._hold(_Held(seq, ticket, contact, item, ids))
                    continue
                if item is None:
                    try:
                        item = encode_json(contact.payload, finite=True)  # mapped: finite
                    except UnicodeEncodeError:  # lone surrogates from undecodable input bytes
                        too_large.append(Rejection(contact, NOT_UTF8))
                        continue
                if len(item) > room:
                    too_large.append(Rejection(contact, TOO_LARGE))
                    continue
                if current and (len(current) >= self.batch_limit or size + 1 + len(item) > room):
                    chunks.append((current, encoded))
                    current, encoded, size = [], [], 0
                    claimed = set()
                    if any(i in busy for i in ids):  # held by the chunk just cut
                        self._hold(_Held(seq, ticket, contact, item, ids))
                        continue
                for i in ids:
                    busy[i] = busy.get(i, 0) + 1
                    claimed.add(i)
                size += len(item) + (1 if current else 0)
                current.append(contact)
                encoded.append(item)
        if current:
            chunks.append((current, encoded))
        return chunks, too_large

    # -- per-identifier order ---------------------------------------------------------------------

    def _hold(self, held: _Held) -> None:
        """Keep a contact until the contacts it shares identifiers with ended. Lock held."""
        self._open[held.seq] += 1  # its submit is not complete before it is accounted for
        self._held.append(held)
        for i in held.ids:
            self._held_ids[i] = self._held_ids.get(i, 0) + 1
        self.held_contacts += 1

    def _ended(self, batch: _Batch, contacts: Sequence[Any]) -> None:
        """Contacts of `batch` ended at Omnisend: free their identifiers (after the horizon of
        an unanswered attempt), then send what waited for them. Lock held."""
        ids = [i for contact in contacts for i in gate_ids(contact)]
        if not ids:
            return
        if batch.ghost_until > self._clock():
            self._ghosts.append((batch.ghost_until, tuple(ids)))
            self._ghosts_due = min(self._ghosts_due, batch.ghost_until)
            return
        self._free(ids)

    def _free(self, ids: Sequence[str]) -> None:
        """Identifiers no longer held by a submitted contact; release waiting ones. Lock held."""
        busy = self._busy
        for i in ids:
            count = busy.get(i, 0) - 1
            if count > 0:
                busy[i] = count
            else:
                busy.pop(i, None)
        if self._held:
            self._release_held()

    def _expire_ghosts(self) -> None:
        """Free the identifiers whose ghost horizon passed."""
        with self._lock:
            now = self._clock()
            if now < self._ghosts_due:
                return
            due = [ids for until, ids in self._ghosts if until <= now]
            self._ghosts = [(until, ids) for until, ids in self._ghosts if until > now]
            self._ghosts_due = min((until for until, _ in self._ghosts), default=math.inf)
            self._free([i for ids in due for i in ids])
            self._progress.notify_all()

    def _release_held(self) -> None:
        """Queue (in order) the held contacts nothing earlier holds an identifier of. Lock held."""
        busy = self._busy
        blocked: set[str] = set()  # identifiers of contacts still held before the next one
        still: deque[_Held] = deque()
        going: list[_Held] = []
        for held in self._held:  # one contact per identifier at a time, in order
            if any(i in busy or i in blocked for i in held.ids):
                still.append(held)
            else:
                going.append(held)
            blocked.update(held.ids)
        if not going:
            return
        self._held = still
        held_ids = self._held_ids
        for held in going:
            for i in held.ids:
                count = held_ids[i] - 1
                if count:
                    held_ids[i] = count
                else:
                    del held_ids[i]
        start = 0
        while start < len(going):  # consecutive contacts of one submit go out together
            end = start + 1
            while end < len(going) and going[end].ticket is going[start].ticket:
                end += 1
            group = going[start:end]
            seq, ticket = group[0].seq, group[0].ticket
            chunks, rejected = self._chunks(
                [h.contact for h in group], [h.encoded for h in group], seq, ticket, True
            )
            for chunk_contacts, chunk_encoded in chunks:  # they take slots beyond the window
                self._open[seq] += 1
                self._reserved += 1
                self._ready.append(_Batch(seq, ticket, chunk_contacts, chunk_encoded))
            self._ready_due = -math.inf
            if rejected:
                self._account(seq, ticket, BatchResult([], rejected))
            for _ in group:
                self._unit_done(seq)
            start = end

    def _submit_chunk(
        self, batch: _Batch, slot_reserved: bool = False, unit_counted: bool = False
    ) -> None:
        """Submit one chunk (splitting it on 413) and register it as outstanding."""
        with self._lock:
            if not unit_counted:
                self._open[batch.seq] += 1
            if not slot_reserved:
                self._reserved += 1
        unanswered = getattr(self.client, "unanswered_in_thread", None)
        unanswered_before = unanswered() if unanswered else 0
        try:
            batch_id = self.client.submit_batch(
                [c.payload for c in batch.contacts], encoded=batch.encoded
            )
        except PayloadTooLargeError:
            with self._lock:
                self._reserved -= 1
            self._split_too_large(batch)
            with self._lock:
                self._unit_done(batch.seq)
                self._progress.notify_all()
            return
        except BaseException:
            with self._lock:
                self._reserved -= 1
                self._progress.notify_all()
            raise
        now = self._clock()
        if unanswered and unanswered() > unanswered_before:  # a duplicate may appear later
            batch.ghost_until = max(batch.ghost_until, now + self.ghost_horizon)
        with self._lock:
            self._reserved -= 1
            batch.batch_id = batch_id
            batch.submitted_at = now
            self._outstanding[batch_id] = batch
            self.batches_submitted += 1
            self._schedule()

    def _split_too_large(self, batch: _Batch) -> None:
        """413: submit each half on its own; a single item that is too large is rejected."""
        if len(batch.contacts) == 1:
            rejection = Rejection(batch.contacts[0], TOO_LARGE)
            with self._lock:
                self._ended(batch, batch.contacts)
            self._account(batch.seq, batch.ticket, BatchResult([], [rejection]))
            return
        middle = len(batch.contacts) // 2
        for part in (slice(None, middle), slice(middle, None)):
            self._submit_chunk(
                _Batch(
                    batch.seq,
                    batch.ticket,
                    batch.contacts[part],
                    batch.encoded[part],
                    resubmits=batch.resubmits,
                    ghost_until=batch.ghost_until,
                )
            )

    def _wait_for_slot(self) -> None:
        """Pump until fewer than `max_in_flight` batches are unconfirmed."""
        while True:
            self._raise_failures()
            with self._lock:
                if (
                    len(self._outstanding) + self._reserved < self.max_in_flight
                    and self._backlog < self.max_result_backlog
                ):
                    self._reserved += 1  # the slot is ours; _submit_chunk takes it over
                    return
                waiting_chunks = bool(self._ready)
            if waiting_chunks:  # they hold slots: send them (waiting for the pacer if need be)
                self._send_ready(block=True)
            else:
                self._wait_for_progress()

    # -- polling ----------------------------------------------------------------------------------

    def _schedule(self) -> None:
        """Recompute when the next non-blocking poll is due. Lock held."""
        if not self._outstanding:
            self._next_due = math.inf
            return
        oldest = next(iter(self._outstanding.values())).submitted_at
        self._next_due = max(oldest + self._latency, self._last_poll + self.busy_gap)

    def _blocked_due(self, final: bool) -> float:
        """When a caller with nothing else to do should poll next. Lock held.

        Waiting for a free slot, poll once the oldest quarter of the window is expected done
        (one poll then frees several slots); waiting for everything (`final`), once the newest
        batch is expected done. Never sooner than `idle_gap` after the previous poll, nor than
        `busy_gap` once polls have used their share of the requests (Omnisend processing more
        slowly than the target submits keeps the window full: polls would otherwise come as
        often as a few slots free up).
        """
        if not self._outstanding:
            return self._clock()
        submitted = sorted(b.submitted_at for b in self._outstanding.values())
        gap = self.idle_gap if self._poll_budget_left() else self.busy_gap
        if final:
            reference = submitted[-1]
        else:
            reference = submitted[min(len(submitted) - 1, max(0, self.max_in_flight // 4 - 1))]
        return max(reference + self._latency, self._last_poll + gap)

    def _poll_budget_left(self) -> bool:
        """Whether a poll now keeps polls within POLL_SHARE of the requests made so far."""
        stats = getattr(self.client, "stats", None)
        total = getattr(stats, "requests", None)
        if not isinstance(total, int):
            total = self.batches_submitted + self.polls
        others = max(0, total - self.polls)
        return self.polls < POLL_SHARE * others + 1

    def pump(self) -> None:
        """Submit waiting chunks the pacer has room for; poll if due and within the polling
        budget (cheap when neither); account for results."""
        if self._ghosts and self._clock() >= self._ghosts_due:
            self._expire_ghosts()
        if self._ready and self._clock() >= self._ready_due:
            self._send_ready(block=False)
        if self._clock() < self._next_due:
            self._raise_failures()
            return
        if self._poll_lock.acquire(blocking=False):
            try:
                if self._clock() >= self._next_due:
                    if self._poll_budget_left():
                        self._poll_once()
                    else:  # look again a little later rather than on every call
                        with self._lock:
                            self._next_due = self._clock() + self.busy_gap / 4
            finally:
                self._poll_lock.release()
        self._raise_failures()

    def _wait_for_progress(self, final: bool = False) -> None:
        """Block until some batch is accounted for (or a poll showed nothing new)."""
        if not self._poll_lock.acquire(blocking=False):
            with self._progress:
                self._progress.wait(timeout=0.05)
            return
        try:
            with self._lock:
                if not self._outstanding or (
                    not final and self._backlog >= self.max_result_backlog
                ):  # nothing to poll for: results are being delivered
                    self._progress.wait(timeout=0.05)
                    return
                due = self._blocked_due(final)
            delay = due - self._clock()
            if delay > 0:
                self._sleep(delay)
            self._poll_once()
        finally:
            self._poll_lock.release()

    def wait_all(self) -> None:
        """Block until everything submitted is accounted for (raises if something is not).

        Before raising for what cannot be accounted for, results already known are delivered.
        """
        while True:
            if self._failures.messages:
                self._drain_results()
            self._raise_failures()
            self._expire_ghosts()
            self._send_ready(block=True)
            with self._lock:
                idle = not self._outstanding
                if idle and not self._reserved and not self._backlog:
                    if not self._held:
                        return
                    if not self._ghosts:  # nothing left that could free them
                        raise UnaccountedBatchError(
                            f"{len(self._held)} contacts waited for earlier ones that never "
                            "ended. No STATE is written for them, so the next run replays them."
                        )
                ghost_wait = self._ghosts_due - self._clock() if self._ghosts else math.inf
            if idle and ghost_wait < math.inf and not self._reserved and not self._backlog:
                self._sleep(max(0.0, min(ghost_wait, 1.0)))  # a duplicate's horizon to pass
                continue
            if idle:  # another thread is submitting, or results are being delivered
                with self._progress:
                    self._progress.wait(timeout=0.05)
                continue
            self._wait_for_progress(final=True)

    def _poll_once(self) -> None:
        """One poll round: statuses of every outstanding batch, then accounting."""
        now = self._clock()
        with self._lock:
            ids = list(self._outstanding)
            self._last_poll = now
            self._schedule()
        if not ids:
            return
        paced = getattr(self.client, "paced_seconds_in_thread", None)
        paced_before = paced() if paced else 0.0
        statuses: dict[str, BatchStatus] = self.client.poll(ids)
        self.polls += 1
        now = self._clock()
        waited = bool(paced and paced() > paced_before)
        youngest_done = math.inf  # the tightest bound this poll gives on the latency
        oldest_pending = 0.0  # and a lower bound: batches are processed in order
        for batch_id in ids:
            status = statuses.get(batch_id)
            with self._lock:
                batch = self._outstanding.get(batch_id)
            if batch is None:
                continue
            if status is not None and status.done:
                youngest_done = min(youngest_done, now - batch.submitted_at)
                self._resolve(batch, status)
                continue
            if status is not None:
                oldest_pending = max(oldest_pending, now - batch.submitted_at)
            if now - batch.submitted_at > self.max_batch_age:
                self._fail(
                    batch,
                    f"batch {batch_id} was still {status.status if status else 'unreported'} "
                    f"after {self.max_batch_age:g} s",
                )
        if youngest_done < math.inf:
            # One observation per poll: a late poll (or one that waited for a full rate-limit
            # window) sees many batches late at once and must not drag the estimate up with
            # each of them, or every later poll would come as late.
            self._learn_latency(youngest_done, may_grow=not waited)
        # Still processing at this age: the estimate is at least that (unless a younger batch
        # already finished: one slow batch must not make every later poll late).
        self._raise_latency_to(min(oldest_pending, youngest_done))
        with self._lock:
            self._schedule()
            self._progress.notify_all()

    def _raise_latency_to(self, lower_bound: float) -> None:
        with self._lock:
            self._latency = max(self._latency, min(lower_bound, self.max_batch_age))

    def _learn_latency(self, observed: float, may_grow: bool = True) -> None:
        """Track how long batches take from upper bounds (submit → seen finished): lean low."""
        with self._lock:
            if observed < self._latency:
                self._latency = max(0.0, observed)
            elif may_grow:
                self._latency += 0.1 * (observed - self._latency)

    # -- accounting -------------------------------------------------------------------------------

    def _resolve(self, batch: _Batch, status: BatchStatus) -> None:
        """Account for a batch that ended (finished, stopped or gone)."""
        if status.status == "missing":
            self._fail(batch, f"batch {batch.batch_id} is unknown to Omnisend (404)")
            return
        if status.status == "finished" and status.errors == 0 and status.finished >= status.total:
            self._close(batch, BatchResult(list(batch.contacts), [], batch.batch_id))
            return
        outcomes = self.client.batch_items(batch.batch_id)
        accepted, rejected, retry = match_outcomes(batch.contacts, outcomes)
        if retry and batch.resubmits < self.max_resubmits:
            indexes = {id(c): i for i, c in enumerate(batch.contacts)}
            again = _Batch(
                batch.seq,
                batch.ticket,
                retry,
                [batch.encoded[indexes[id(c)]] for c in retry],
                resubmits=batch.resubmits + 1,
                ghost_until=batch.ghost_until,
            )
            with self._lock:
                self.resubmitted_batches += 1
            self._submit_chunk(again)
            retry = []
        if retry:  # before closing, so the seq can never count as complete
            self._fail(
                None,
                f"batch {batch.batch_id} ended {status.status} with {len(retry)} contacts "
                f"unprocessed after {batch.resubmits} resubmissions",
                seq=batch.seq,
            )
        self._close(batch, BatchResult(accepted, rejected, batch.batch_id))

    def _account(self, seq: int, ticket: Any, result: BatchResult) -> None:
        """Hand a result to `on_result` (in the background by default); the unit of `seq`
        it stands for completes once the call returned."""
        with self._lock:
            self._open[seq] += 1
            self._backlog += 1
        if not self.background_results:
            self._deliver(seq, ticket, result)
            return
        self._ensure_results_thread()
        self._results.put((ticket, result, seq))

    def _ensure_results_thread(self) -> None:
        with self._lock:
            if self._results_thread is None or not self._results_thread.is_alive():
                self._results_thread = threading.Thread(
                    target=self._deliver_results, name="omnisend-results", daemon=True
                )
                self._results_thread.start()

    def _deliver_results(self) -> None:
        while True:
            item = self._results.get()
            if item is None:
                return
            ticket, result, seq = item
            try:
                self._deliver(seq, ticket, result)
            except BaseException as error:  # re-raised in the caller's thread
                with self._lock:
                    if self._callback_error is None:
                        self._callback_error = error

    def _deliver(self, seq: int, ticket: Any, result: BatchResult) -> None:
        """Call `on_result` (calls never overlap); a failing call never completes its seq."""
        try:
            with self._deliver_lock:
                self.on_result(ticket, result)
        except BaseException:
            with self._lock:
                self._broken.add(seq)
            raise
        finally:
            with self._lock:
                self._backlog -= 1
                self._unit_done(seq)
                self._progress.notify_all()

    def _drain_results(self) -> None:
        """Wait until every queued result is delivered (or a delivery failed)."""
        with self._progress:
            while self._backlog and self._callback_error is None:
                self._progress.wait(timeout=0.05)

    def close(self) -> None:
        """Stop the results thread once the results queued so far are delivered."""
        thread = self._results_thread
        if thread is not None and thread.is_alive():
            self._results.put(None)
            thread.join()

    def _close(self, batch: _Batch, result: BatchResult) -> None:
        """Forget a batch that ended at Omnisend and account for its result."""
        with self._lock:
            self._outstanding.pop(batch.batch_id, None)
            self._ended(batch, result.accepted)
            self._ended(batch, [rejection.contact for rejection in result.rejected])
            self._schedule()
        try:
            self._account(batch.seq, batch.ticket, result)
        finally:
            with self._lock:
                self._unit_done(batch.seq)
                self._progress.notify_all()

    def _fail(self, batch: _Batch | None, message: str, seq: int | None = None) -> None:
        """Record what cannot be accounted for; the next pump/wait_all/submit raises."""
        with self._lock:
            if batch is not None:
                self._outstanding.pop(batch.batch_id, None)
                seq = batch.seq
            if seq is not None:
                self._broken.add(seq)
            self._failures.add(message)
            self._schedule()
            self._progress.notify_all()

    def _raise_failures(self) -> None:
        if self._callback_error is not None:
            raise self._callback_error
        if not self._failures.messages:  # the common case, without taking the lock
            return
        with self._lock:
            messages = list(self._failures.messages)
        if messages:
            raise UnaccountedBatchError(
                "Batches could not be accounted for: "
                + "; ".join(messages[:5])
                + (f" (and {len(messages) - 5} more)" if len(messages) > 5 else "")
                + ". No STATE is written for them, so the next run replays them."
            )


def match_outcomes(
    contacts: Sequence[Any], outcomes: Sequence[ItemOutcome]
) -> tuple[list[Any], list[Rejection], list[Any]]:
    """Map item outcomes back to contacts by the identifiers their requests echo.

    Returns (accepted, rejected, retry): retry holds contacts without an outcome (never
    processed) and those whose item failed transiently (5xx, 429, timeouts).
    """
    by_identifier: dict[str, deque[int]] = {}
    for index, contact in enumerate(contacts):
        for value in _identifiers_of_contact(contact):
            by_identifier.setdefault(value, deque()).append(index)
    answered: dict[int, ItemOutcome] = {}
    for outcome in outcomes:
        index = _claim(by_identifier, outcome.request, answered)
        if index is not None:
            answered[index] = outcome
    accepted: list[Any] = []
    rejected: list[Rejection] = []
    retry: list[Any] = []
    for index, contact in enumerate(contacts):
        outcome = answered.get(index)
        if outcome is None or (not outcome.ok and outcome.response_code in RETRYABLE_ITEM_CODES):
            retry.append(contact)
        elif outcome.ok:
            accepted.append(contact)
        else:
            error = outcome.error or f"item answered {outcome.response_code}"
            rejected.append(Rejection(contact, error))
    return accepted, rejected, retry


def _identifiers_of_contact(contact: Any) -> list[str]:
    values = []
    payload = getattr(contact, "payload", None) or {}
    for identifier in payload.get("identifiers") or []:
        if isinstance(identifier, dict) and identifier.get("id"):
            values.append(str(identifier["id"]))
    for name in ("email", "phone"):
        value = getattr(contact, name, None)
        if value and value not in values:
            values.append(str(value))
    return values


def _claim(
    by_identifier: dict[str, deque[int]], request: dict, answered: dict[int, ItemOutcome]
) -> int | None:
    """The first not-yet-answered contact sharing an identifier with the request."""
    for identifier in request.get("identifiers") or []:
        value = identifier.get("id") if isinstance(identifier, dict) else None
        queue = by_identifier.get(str(value)) if value else None
        while queue:
            index = queue[0]
            if index in answered:
                queue.popleft()
                continue
            return index
    return None
