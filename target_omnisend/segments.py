"""Segments: tag names, who belongs where, who leaves, and what leaving does (pure: no I/O).

A stream is a segment, or, with ``segment_field``, each value of that record path is one. Members
carry the segment tag rendered from ``segment_tag`` (default ``segment: {segment}``).

Exits are dangerous (``unsubscribe`` cannot be undone by the target), so :func:`compute_exits`
applies every guard in one place:

1. the run reached a normal end of input (never on SIGTERM or a crash);
2. the stream delivered at least one record (an empty stream is an outage, not an empty segment);
3. absence means leaving only in a full snapshot (a closing ACTIVATE_VERSION, or
   ``full_segment_snapshot`` for a stream :class:`StreamCompletion` saw the tap finish); otherwise
   only explicit deletions (records with ``_sdc_deleted_at``) are exits;
4. the share of members leaving is at most ``max_exit_ratio``; above it nobody leaves and the run
   must exit non-zero (:attr:`ExitDecision.exceeds_ratio`).

:func:`plan_exit_actions` then turns a decision into tag removals and unsubscribes for the
``on_segment_exit`` mode; ``unsubscribe`` never touches a contact still in another segment of the
same run.
"""

from __future__ import annotations

import string
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from target_omnisend.summary import mask_email, mask_phone

__all__ = [
    "DEFAULT_MAX_EXIT_RATIO",
    "DEFAULT_SEGMENT_TAG",
    "EXIT_MODES",
    "SDC_COLUMNS",
    "DryRunReport",
    "ExitActions",
    "ExitDecision",
    "InvalidSegmentValue",
    "SegmentMembership",
    "StreamCompletion",
    "compute_exits",
    "decide_exits",
    "is_deleted_record",
    "membership_key",
    "plan_exit_actions",
    "render_segment_tag",
    "segments_of",
    "unsubscribe_payload",
    "validate_segment_tag_template",
]

DEFAULT_SEGMENT_TAG = "segment: {segment}"
DEFAULT_MAX_EXIT_RATIO = 0.2
EXIT_MODES = ("keep", "remove_tag", "unsubscribe")
DELETED_AT_FIELD = "_sdc_deleted_at"
# The columns `Sink._remove_sdc_metadata_from_record` drops (singer-sdk 0.54).
SDC_COLUMNS = frozenset(
    {
        "_sdc_extracted_at",
        "_sdc_received_at",
        "_sdc_batched_at",
        "_sdc_deleted_at",
        "_sdc_sequence",
        "_sdc_table_version",
        "_sdc_sync_started_at",
    }
)
_TEMPLATE_FIELDS = frozenset({"stream", "segment"})


class InvalidSegmentValue(ValueError):
    """A record's segment field holds something that cannot name a segment."""


# -- tags and segment names -----------------------------------------------------------------


def validate_segment_tag_template(template: str | None) -> None:
    """Raise ValueError (naming the setting) if the template uses anything but the placeholders.

    Call once at start-up so a typo fails before any record is read.
    """
    if not template:
        return
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"segment_tag {template!r} is not a valid template: {error}.") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in _TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(
                f"segment_tag {template!r} may use only {{stream}} and {{segment}} "
                f"(found {{{name}}}); write literal braces as {{{{ and }}}}."
            )


def render_segment_tag(template: str | None, stream: str, segment: str) -> str | None:
    """The tag members of ``segment`` carry, or None when tagging is disabled.

    Args:
        template: The ``segment_tag`` setting: None means the default ``segment: {segment}``; an
            empty string disables segment tags.
        stream: The stream name.
        segment: The segment name (the stream name unless ``segment_field`` is set).
    """
    if template is None:
        template = DEFAULT_SEGMENT_TAG
    if template == "":
        return None
    validate_segment_tag_template(template)
    tag = template.format(stream=stream, segment=segment).strip()
    return tag or None


def is_deleted_record(record: Mapping[str, Any]) -> bool:
    """True if the record is a deletion (a non-empty ``_sdc_deleted_at``): an exit."""
    return record.get(DELETED_AT_FIELD) not in (None, "")


def _segment_name(value: Any) -> str | None:
    if isinstance(value, bool):
        raise InvalidSegmentValue(f"A segment name cannot be a boolean ({value}).")
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    if value is None:
        return None
    raise InvalidSegmentValue(f"A segment name must be a string, not {type(value).__name__}.")


def segments_of(
    record: Mapping[str, Any],
    segment_field_getter: Callable[[Mapping[str, Any]], Any] | None,
    stream: str,
    *,
    separator: str | None = None,
) -> list[str]:
    """The segments a record belongs to.

    Args:
        record: The Singer record.
        segment_field_getter: Reads ``segment_field`` (e.g. ``mapping.make_getter(path)``); None
            when the setting is absent: the stream is the segment.
        stream: The stream name.
        separator: If set, a string value is split on it (``"a,b"`` → ``["a", "b"]``); by default
            a string is one segment name, so names may contain commas.

    Returns:
        Distinct names in first-seen order; empty when the field is missing, null, an empty string
        or an empty list (the record belongs to no segment).

    Raises:
        InvalidSegmentValue: The value is not a string, number, or list of those.
    """
    if segment_field_getter is None:
        return [stream]
    value = segment_field_getter(record)
    values: Iterable[Any]
    if isinstance(value, (list, tuple)):
        values = value
    elif isinstance(value, str) and separator:
        values = value.split(separator)
    else:
        values = (value,)
    names: dict[str, None] = {}
    for item in values:
        if isinstance(item, (list, tuple, dict)):
            raise InvalidSegmentValue(
                f"A segment name must be a string, not {type(item).__name__}."
            )
        name = _segment_name(item)
        if name is not None:
            names[name] = None
    return list(names)


def membership_key(template: str | None, stream: str, segment: str) -> str:
    """The name a segment's memberships are kept under in the sync store.

    The segment tag when tags are enabled; otherwise the default tag rendering, so membership
    (and so exits) still work with ``segment_tag: ""``.
    """
    tag = render_segment_tag(template, stream, segment)
    return tag or render_segment_tag(None, stream, segment) or f"segment: {stream}"


class SegmentMembership:
    """Who a run saw in each segment, in record order (thread-safe).

    Segments are named by their membership key (see :func:`membership_key`). A live record makes
    its contact a current member; a deleted record (``_sdc_deleted_at``) makes it an explicit exit.
    The latest record for a contact wins. Records are counted per stream: the "empty stream" guard
    of :func:`compute_exits` is about the stream, not each segment within it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[str, set[str]] = {}
        self._deleted: dict[str, set[str]] = {}
        self._records: dict[str, int] = {}
        self._stream_segments: dict[str, dict[str, None]] = {}

    def note_segment(self, stream: str, segment: str) -> None:
        """Record that the stream named ``segment`` (who was in it is kept elsewhere)."""
        segments = self._stream_segments.get(stream)
        if segments is None or segment not in segments:
            with self._lock:
                self._stream_segments.setdefault(stream, {})[segment] = None

    def saw(self, stream: str, segment: str, key: str, *, deleted: bool = False) -> None:
        """Record that ``key`` is in (or, with ``deleted``, was deleted from) ``segment``."""
        self.note_segment(stream, segment)
        with self._lock:
            current = self._current.setdefault(segment, set())
            gone = self._deleted.setdefault(segment, set())
            if deleted:
                current.discard(key)
                gone.add(key)
            else:
                gone.discard(key)
                current.add(key)

    def count_record(self, stream: str, count: int = 1) -> None:
        """Count records the stream delivered (live, deleted or rejected alike)."""
        with self._lock:
            self._records[stream] = self._records.get(stream, 0) + count
            self._stream_segments.setdefault(stream, {})

    def streams(self) -> list[str]:
        """Streams that delivered records or members this run, sorted."""
        with self._lock:
            return sorted(self._stream_segments)

    def segments_of_stream(self, stream: str) -> list[str]:
        """Segments the stream's records named this run, in first-seen order."""
        with self._lock:
            return list(self._stream_segments.get(stream, ()))

    def current(self, segment: str) -> set[str]:
        """Members seen live in ``segment`` (a copy)."""
        with self._lock:
            return set(self._current.get(segment, ()))

    def deleted(self, segment: str) -> set[str]:
        """Contacts deleted from ``segment`` and not seen live afterwards (a copy)."""
        with self._lock:
            return set(self._deleted.get(segment, ()))

    def records_seen(self, stream: str) -> int:
        """Records the stream delivered this run."""
        with self._lock:
            return self._records.get(stream, 0)

    def in_other_segments(self, segment: str) -> set[str]:
        """Contacts current in any segment of this run other than ``segment``.

        Pass it as ``protected`` to :func:`compute_exits`.
        """
        with self._lock:
            others: set[str] = set()
            for name, members in self._current.items():
                if name != segment:
                    others |= members
            return others


# -- exits ----------------------------------------------------------------------------------


class StreamCompletion:
    """Which streams the tap is known to have sent whole (what ``full_segment_snapshot`` needs).

    End of input is no such sign: Meltano closes the target's input when the tap exits, whether
    it finished or died half way, and SDK taps send no closing ACTIVATE_VERSION and no STATE
    that tells a full-table stream's end from its middle (the SDK writes a full-table stream's
    STATE once, at its 10,000th record or at its end, and drops the identical later ones). A
    stream counts as complete on either sign:

    - the tap moved on: records of another stream arrived after this stream's (taps built on the
      SDK send one stream after the other); a stream whose records come back after another
      stream's is interleaved and never counts this way;
    - its records carry their own count (``snapshot_size_field``, e.g. ``count(*) over ()`` in a
      SQL view, read in the same snapshot as the rows) and exactly that many arrived.

    Not thread-safe: fed from the thread that reads the input, in input order.
    """

    def __init__(self, size_getter: Callable[[Mapping[str, Any]], Any] | None = None) -> None:
        self.size_getter = size_getter
        self.last: str | None = None
        self._moved_on: set[str] = set()
        self._interleaved: set[str] = set()
        self._counts: dict[str, int] = {}
        self._sizes: dict[str, Any] = {}
        self._inconsistent: set[str] = set()

    def switch(self, stream: str) -> None:
        """Records of `stream` arrive after those of `self.last` (which the tap finished)."""
        if self.last is not None:
            self._moved_on.add(self.last)
        if stream in self._moved_on:
            self._moved_on.discard(stream)
            self._interleaved.add(stream)
        self.last = stream

    def saw(self, stream: str) -> bool:
        """Whether records of `stream` arrived."""
        return stream == self.last or stream in self._moved_on or stream in self._interleaved

    def record(self, stream: str, record: Mapping[str, Any]) -> None:
        """One record of `stream` arrived (call `switch` first when the stream changed)."""
        if self.size_getter is None:
            return
        self._counts[stream] = self._counts.get(stream, 0) + 1
        size = self.size_getter(record)
        known = self._sizes.setdefault(stream, size)
        if size != known:
            self._inconsistent.add(stream)

    def why_incomplete(self, stream: str) -> str | None:
        """None when `stream` is known complete, else why it is not."""
        if stream in self._moved_on and stream not in self._interleaved:
            return None
        size = self._sizes.get(stream)
        count = self._counts.get(stream, 0)
        if self.size_getter is not None and stream in self._sizes:
            if stream in self._inconsistent:
                return "its records carry different snapshot sizes"
            if isinstance(size, bool) or not isinstance(size, (int, float, str)):
                return f"its snapshot size is not a number ({type(size).__name__})"
            try:
                expected = int(size)
            except ValueError:
                return "its snapshot size is not a number"
            if expected == count:
                return None
            return f"{count} of the {expected} records its snapshot size announces arrived"
        if stream in self._interleaved:
            return "its records were interleaved with another stream's"
        if self.size_getter is None:
            return (
                "it was the last stream and nothing showed the tap finished it "
                "(no closing ACTIVATE_VERSION; set snapshot_size_field to a count column)"
            )
        return "it was the last stream and its records carry no snapshot size"


@dataclass(frozen=True)
class ExitDecision:
    """Who leaves a segment at the end of a run, and why (perhaps) nobody does.

    Attributes:
        leaving: Contacts that leave (empty when a guard stopped the exits).
        skipped_reason: None when every exit was computed; otherwise why absent members are not
            treated as leaving. When the only reason is that the stream is not a full snapshot,
            ``leaving`` still holds the explicit deletions.
        exceeds_ratio: True when more than ``max_exit_ratio`` of the members would leave: nobody
            leaves and the run must exit non-zero with ``skipped_reason``.
        protected: The leaving contacts still current in another segment of the same run: their
            tag for this segment goes, but they are never unsubscribed.
        members_before: How many members the segment had before the run.
        would_leave: How many would have left without the ratio guard.
    """

    leaving: frozenset[str]
    skipped_reason: str | None = None
    exceeds_ratio: bool = False
    protected: frozenset[str] = frozenset()
    members_before: int = 0
    would_leave: int = 0

    @property
    def unsubscribable(self) -> frozenset[str]:
        """Leaving contacts that may be unsubscribed (not in another segment of the run)."""
        return self.leaving - self.protected


def _ratio_message(leaving: int, members: int, max_exit_ratio: float) -> str:
    share = 100.0 * leaving / members
    return (
        f"{leaving} of {members} members ({share:.1f}%) would leave; max_exit_ratio is "
        f"{max_exit_ratio:g}. Nobody was removed. If this is intended, raise max_exit_ratio "
        "for one run."
    )


def compute_exits(
    previous_members: Collection[str],
    current_members: Collection[str],
    deleted: Collection[str] = (),
    *,
    snapshot_complete: bool,
    ended_normally: bool,
    records_seen: int,
    max_exit_ratio: float = DEFAULT_MAX_EXIT_RATIO,
    protected: Collection[str] = (),
) -> ExitDecision:
    """Decide who leaves a segment from sets held in memory (see :func:`decide_exits`).

    Args:
        previous_members: Members before the run (the store's, else ``GET /contacts?tag=``).
        current_members: Contacts seen live in the segment this run.
        deleted: Contacts deleted from the segment this run (``_sdc_deleted_at``), not seen live
            after their deletion.
        snapshot_complete: The stream is a full snapshot (ACTIVATE_VERSION or
            ``full_segment_snapshot``).
        ended_normally: Input reached its end normally (not SIGTERM, not an error).
        records_seen: Records the stream delivered this run (live, deleted or rejected).
        max_exit_ratio: Largest share of ``previous_members`` allowed to leave (inclusive).
        protected: Contacts current in another segment of the same run.
    """
    previous = set(previous_members)
    current = set(current_members)
    absent = previous - current
    explicit = (set(deleted) & previous) - current
    others = set(protected)
    return decide_exits(
        len(previous),
        len(absent),
        len(explicit),
        lambda: absent,
        lambda: explicit,
        snapshot_complete=snapshot_complete,
        ended_normally=ended_normally,
        records_seen=records_seen,
        max_exit_ratio=max_exit_ratio,
        protected=lambda leaving: leaving & others,
    )


def decide_exits(
    members_before: int,
    absent_count: int,
    explicit_count: int,
    absent: Callable[[], Iterable[str]],
    explicit: Callable[[], Iterable[str]],
    *,
    snapshot_complete: bool,
    ended_normally: bool,
    records_seen: int,
    max_exit_ratio: float = DEFAULT_MAX_EXIT_RATIO,
    protected: Callable[[frozenset[str]], Iterable[str]] = lambda _leaving: (),
) -> ExitDecision:
    """Decide who leaves a segment, applying every guard (see the module docstring).

    The members are counted first and read only when they may leave, so a caller can keep them
    on disk (the sync store does): a segment of a million costs the counts, and at most
    ``max_exit_ratio`` of it is ever held.

    Args:
        members_before: How many members the segment had before the run.
        absent_count: How many of them the run did not see live.
        explicit_count: How many of them the run deleted (``_sdc_deleted_at``) and did not see
            live after.
        absent: Reads those absent members.
        explicit: Reads those deleted members.
        snapshot_complete: The stream is a full snapshot (absence means leaving).
        ended_normally: Input reached its end normally (not SIGTERM, not an error).
        records_seen: Records the stream delivered this run (live, deleted or rejected).
        max_exit_ratio: Largest share of the members allowed to leave (inclusive).
        protected: Which of the leaving contacts are current in another segment of the run.

    Returns:
        The decision; only members the segment had before the run can leave.
    """
    if max_exit_ratio < 0:
        raise ValueError("max_exit_ratio must be at least 0.")
    if not ended_normally:
        return ExitDecision(
            frozenset(),
            "the input did not reach a normal end (interrupted or failed): exits are applied "
            "only after a complete run",
            members_before=members_before,
        )
    if records_seen <= 0:
        return ExitDecision(
            frozenset(),
            "the stream delivered no records: an empty stream never removes anyone",
            members_before=members_before,
        )
    reason: str | None = None
    if snapshot_complete:
        count, read = absent_count, absent
    else:
        count, read = explicit_count, explicit
        reason = (
            "the stream is not a full snapshot (no ACTIVATE_VERSION and full_segment_snapshot "
            "is off): only explicit deletions (_sdc_deleted_at) are exits"
        )
    if count and count / members_before > max_exit_ratio:
        return ExitDecision(
            frozenset(),
            _ratio_message(count, members_before, max_exit_ratio),
            exceeds_ratio=True,
            members_before=members_before,
            would_leave=count,
        )
    leaving = frozenset(read()) if count else frozenset()
    return ExitDecision(
        leaving,
        reason,
        protected=frozenset(protected(leaving)) if leaving else frozenset(),
        members_before=members_before,
        would_leave=len(leaving),
    )


@dataclass(frozen=True)
class ExitActions:
    """What to do for a segment's exits: remove ``tag`` from ``untag``; unsubscribe ``unsubscribe``.

    After the actions succeed, remove ``leaving`` from the store's memberships.
    """

    tag: str | None
    untag: frozenset[str] = frozenset()
    unsubscribe: frozenset[str] = frozenset()
    leaving: frozenset[str] = frozenset()


def plan_exit_actions(mode: str, segment_tag: str | None, decision: ExitDecision) -> ExitActions:
    """Turn an exit decision into actions for the ``on_segment_exit`` mode.

    - ``keep``: nothing changes in Omnisend (the target does not even track exits then: leavers
      keep the tag, so the store keeps them as members).
    - ``remove_tag``: the leaving contacts lose the segment tag.
    - ``unsubscribe``: the leaving contacts lose the segment tag, and those not in another segment
      of the same run get their email channel unsubscribed (destructive, opt-in).

    Raises:
        ValueError: Unknown mode.
    """
    if mode not in EXIT_MODES:
        raise ValueError(f"on_segment_exit must be one of {', '.join(EXIT_MODES)} (got {mode!r}).")
    leaving = decision.leaving
    untag = leaving if mode in ("remove_tag", "unsubscribe") and segment_tag else frozenset()
    unsubscribe = decision.unsubscribable if mode == "unsubscribe" else frozenset()
    return ExitActions(segment_tag, untag, unsubscribe, leaving)


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def unsubscribe_payload(
    key: str, api_version: str, *, now: str | None = None, send_welcome_message: bool = False
) -> dict[str, Any]:
    """The ``POST /contacts`` body (a batch item) that unsubscribes a contact, dated now.

    An email key unsubscribes the email channel; a phone key (a contact without an email, whose
    key is its E.164 phone) unsubscribes the sms channel. The date field follows the generation:
    ``statusChangedAt`` on 2026-03-15, ``statusDate`` on v5.

    Args:
        key: The contact's key (``MappedContact.key``).
        api_version: ``"2026-03-15"`` or ``"v5"``.
        now: The status date (ISO 8601 UTC); default the current time.
        send_welcome_message: Always sent explicitly; false unless configured.
    """
    date_key = "statusDate" if api_version == "v5" else "statusChangedAt"
    kind, channel = ("email", "email") if "@" in key else ("phone", "sms")
    return {
        "identifiers": [
            {
                "type": kind,
                "id": key,
                "channels": {channel: {"status": "unsubscribed", date_key: now or _utc_now()}},
                "sendWelcomeMessage": send_welcome_message,
            }
        ]
    }


# -- dry run --------------------------------------------------------------------------------

DRY_RUN_CATEGORIES = ("created", "updated", "unchanged", "tagged", "untagged", "unsubscribed")


def _mask(key: str) -> str:
    return mask_email(key) if "@" in key else mask_phone(key)


@dataclass
class DryRunReport:
    """What a dry run would have done, from the store: counts and a small masked sample.

    Categories: ``created`` (unknown to the store), ``updated`` (changed or due for a resync),
    ``unchanged``, ``tagged`` (segment entrants), ``untagged`` and ``unsubscribed`` (exits).
    Thread-safe.
    """

    sample_size: int = 5
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DRY_RUN_CATEGORIES, 0))
    samples: dict[str, list[str]] = field(
        default_factory=lambda: {name: [] for name in DRY_RUN_CATEGORIES}
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, category: str, keys: Iterable[str]) -> None:
        """Count ``keys`` under ``category``, keeping the first few (masked) as a sample."""
        if category not in self.counts:
            raise ValueError(f"Unknown dry-run category {category!r}.")
        keys = list(keys)
        with self._lock:
            self.counts[category] += len(keys)
            sample = self.samples[category]
            room = self.sample_size - len(sample)
            if room > 0:
                sample.extend(_mask(key) for key in keys[:room])

    def add_send_reasons(self, reasons: Mapping[str, Any]) -> None:
        """Count a batch classified by ``SyncStore.classify`` ({key: SendReason})."""
        by_category: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
        category_of = {"new": "created", "unchanged": "unchanged"}
        for key, reason in reasons.items():
            by_category[category_of.get(getattr(reason, "value", reason), "updated")].append(key)
        for category, keys in by_category.items():
            self.add(category, keys)

    def to_dict(self) -> dict[str, Any]:
        """``{"would": {category: count}, "sample": {category: [masked keys]}}``."""
        with self._lock:
            return {
                "would": dict(self.counts),
                "sample": {name: list(keys) for name, keys in self.samples.items() if keys},
            }
