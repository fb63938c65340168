"""`SegmentSync`: one run's segments, change-only sends, exits and dry-run report.

The glue between the sinks, the sync store (`sync_store.py`), the pure segment rules
(`segments.py`) and the client. Sinks ask it which segments a record belongs to and which of a
batch's contacts must be sent; confirmed results come back to it; at a normal end of input the
target asks it to apply exits and create segments.

What is written to the store is only what Omnisend confirmed: fingerprints when a contact's batch
finished, memberships when the segment tag call was accepted (or, when the tag travels inside the
payload or tags are off, when the contact was confirmed).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from target_omnisend.mapping import MAX_STRING_LENGTH, MappedContact, make_getter
from target_omnisend.segments import (
    DEFAULT_MAX_EXIT_RATIO,
    DryRunReport,
    ExitDecision,
    InvalidSegmentValue,
    SegmentMembership,
    decide_exits,
    membership_key,
    plan_exit_actions,
    render_segment_tag,
    segments_of,
    unsubscribe_payload,
)
from target_omnisend.summary import mask_email, mask_phone
from target_omnisend.sync_store import (
    DEFAULT_SYNC_STATE_PATH,
    SendReason,
    SyncStore,
    brand_id,
    fingerprint,
)

__all__ = [
    "ExitTicket",
    "MemberListing",
    "PageLister",
    "SegmentRef",
    "SegmentSync",
    "SyncSettings",
    "segment_tags",
]

# Lists one page of the contacts carrying a tag: (tag, cursor or None, limit) -> (the email of
# each contact of the page that has one, how many contacts the page held, the next page's cursor
# or None after the last page).
PageLister = Callable[[str, str | None, int], tuple[list[str], int, str | None]]
LISTING_PAGE = 250

# Reasons that re-send a contact whose segment tags may have drifted: every tag is re-added.
_RETAG_REASONS = frozenset({SendReason.NEW, SendReason.STALE, SendReason.FULL_RESYNC})


class SegmentRef(NamedTuple):
    """One segment a record belongs to: its name, store key and tag (None when tags are off)."""

    name: str
    key: str
    tag: str | None


@dataclass(frozen=True)
class SyncSettings:
    """The target settings that shape segments, exits and change-only sends."""

    api_version: str = "2026-03-15"
    segment_tag: str | None = None  # None: the default template; "": no segment tags
    segment_field: str | None = None
    create_segments: bool = False
    on_segment_exit: str = "keep"
    full_segment_snapshot: bool = False
    max_exit_ratio: float = DEFAULT_MAX_EXIT_RATIO
    sync_state_path: str = DEFAULT_SYNC_STATE_PATH
    full_resync: bool = False
    resync_after_days: float | None = 7
    send_welcome_message: bool = False
    lowercase_emails: bool = True
    reconcile_existing_tag: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any], api_version: str) -> SyncSettings:
        """Read and check the settings (raises ValueError naming the setting)."""
        template = config.get("segment_tag")
        settings = cls(
            api_version=api_version,
            segment_tag=None if template is None else str(template),
            segment_field=config.get("segment_field") or None,
            create_segments=bool(config.get("create_segments", False)),
            on_segment_exit=str(config.get("on_segment_exit") or "keep"),
            full_segment_snapshot=bool(config.get("full_segment_snapshot", False)),
            max_exit_ratio=float(config.get("max_exit_ratio", DEFAULT_MAX_EXIT_RATIO)),
            sync_state_path=str(config.get("sync_state_path") or DEFAULT_SYNC_STATE_PATH),
            full_resync=bool(config.get("full_resync", False)),
            resync_after_days=_days(config.get("resync_after_days", 7)),
            send_welcome_message=bool(config.get("send_welcome_message", False)),
            lowercase_emails=bool(config.get("lowercase_emails", True)),
            reconcile_existing_tag=bool(config.get("reconcile_existing_tag", False)),
        )
        settings.check()
        return settings

    @property
    def tags_enabled(self) -> bool:
        """Whether segment members carry a tag."""
        return self.segment_tag != ""

    def check(self) -> None:
        """Refuse combinations that cannot work, before any record is read."""
        render_segment_tag(self.segment_tag, "stream", "segment")  # validates the template
        if self.segment_field is not None:
            make_getter(self.segment_field)
        v5 = self.api_version == "v5"
        if self.create_segments and v5:
            raise ValueError(
                "create_segments needs the 2026-03-15 API: v5 has no segments endpoint to rely on. "
                "Set api_version to 2026-03-15 or turn create_segments off."
            )
        if self.create_segments and not self.tags_enabled:
            raise ValueError(
                "create_segments builds each segment on its tag; it needs segment_tag (it is "
                "empty)."
            )
        if self.on_segment_exit == "remove_tag" and v5:
            raise ValueError(
                "on_segment_exit remove_tag needs the 2026-03-15 API (v5 has no endpoint to "
                "remove tags). Use keep or unsubscribe, or switch api_version."
            )
        if self.on_segment_exit == "remove_tag" and not self.tags_enabled:
            raise ValueError("on_segment_exit remove_tag needs segment_tag (it is empty).")
        if not 0 <= self.max_exit_ratio <= 1:
            raise ValueError("max_exit_ratio must be between 0 and 1.")
        if self.resync_after_days is not None and self.resync_after_days < 0:
            raise ValueError("resync_after_days must be 0 or more.")


@dataclass
class ExitTicket:
    """A batch of unsubscribes sent for a segment's exits; results come back to the sync."""

    sink: SegmentSync
    segment_key: str
    records: dict[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class _Sendable:
    """What `select` decided for one contact of a batch."""

    contact: MappedContact
    print_: str
    reason: SendReason
    entrant_tags: tuple[str, ...]


class MemberListing:
    """Who carries a segment's tag in Omnisend, for a segment the sync store does not know.

    Runs in a background thread from the moment a run first meets the segment, so it overlaps
    the upload, and its requests go through the client's pacer with every other request. It
    probes first (one contact): when nobody carries the tag there is nothing to list. Otherwise
    each page's emails go to the store with the cursor of the next page, in one transaction, so a
    run that stopped resumes where it was; a cursor Omnisend no longer accepts starts over.
    """

    def __init__(
        self,
        store: SyncStore,
        tag: str,
        lister: PageLister,
        *,
        lowercase: bool,
        stop: threading.Event,
    ) -> None:
        self.store = store
        self.tag = tag
        self.members = 0  # contacts listed (with an email)
        self.requests = 0
        self.error: BaseException | None = None
        self._lister = lister
        self._lowercase = lowercase
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name="omnisend-listing", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._list()
        except BaseException as error:  # raised again by wait(), in the caller's thread
            self.error = error

    def _page(self, cursor: str | None, limit: int) -> tuple[list[str], int, str | None]:
        self.requests += 1
        emails, size, after = self._lister(self.tag, cursor, limit)
        if self._lowercase:
            emails = [email.strip().lower() for email in emails]
        return emails, size, after

    def _list(self) -> None:
        from target_omnisend.client import FatalApiError

        known = self.store.listing(self.tag)
        if known is not None and known.done:
            self.members = known.members
            return
        if known is None:
            _, size, _ = self._page(None, 1)
            if not size:  # nobody carries the tag: nothing to list, nothing to report
                return
            self.store.start_listing(self.tag)
        cursor = None if known is None else known.cursor
        restarted = known is None or cursor is None
        while not self._stop.is_set():
            try:
                emails, _, after = self._page(cursor, LISTING_PAGE)
            except FatalApiError:
                if restarted:
                    raise
                restarted, cursor = True, None  # an old cursor refused: list from the start
                self.store.start_listing(self.tag)
                continue
            state = self.store.add_listed(self.tag, emails, after, done=after is None)
            self.members = state.members
            if after is None:
                return
            cursor = after

    @property
    def done(self) -> bool:
        """True once the thread ended (listed, nothing to list, stopped or failed)."""
        return not self._thread.is_alive()

    def wait(self) -> None:
        """Wait for the listing (a signal still reaches the main thread); re-raise its error."""
        while self._thread.is_alive():
            self._thread.join(0.2)
        if self.error is not None:
            raise self.error


class SegmentSync:
    """Segments, change-only sends and exits for one run (thread-safe).

    Args:
        settings: The checked settings.
        api_url: The API base URL (with the key, it identifies the brand in the store).
        api_key: The API key (hashed into the brand id; never stored).
        dry_run: Open the store read-only and apply nothing.
        logger: The target's logger.
    """

    def __init__(
        self,
        settings: SyncSettings,
        api_url: str,
        api_key: str,
        *,
        dry_run: bool,
        logger: logging.Logger,
    ) -> None:
        self.settings = settings
        self.dry_run = dry_run
        self.logger = logger
        self.membership = SegmentMembership()  # streams, their segments and record counts
        # Under `keep` nobody is taken out of Omnisend, so the run need not remember who it saw,
        # and the store keeps every member tagged, exactly as Omnisend does. Otherwise who the
        # run saw goes to the store's run tables (on disk), not to memory.
        self.tracks_exits = settings.on_segment_exit != "keep"
        self.stop = threading.Event()  # set on SIGTERM: listings end at their next page
        self._lister: PageLister | None = None
        self._listings: dict[str, MemberListing] = {}
        self._live_segments: set[str] = set()
        self.report = DryRunReport()
        self._lock = threading.Lock()
        self._refs: dict[tuple[str, str], SegmentRef] = {}
        # Whether the store knew each segment's members before this run added any.
        self._known_before: dict[str, bool] = {}
        self._snapshots: set[str] = set()
        self._complete: set[str] = set()  # streams the tap finished (StreamCompletion)
        # Keys this run sent over a fingerprint the store held: the store no longer tells what
        # Omnisend holds for them, so a later record matching the old fingerprint is sent too.
        self._resent: set[str] = set()
        self._getter = make_getter(settings.segment_field) if settings.segment_field else None
        brand = brand_id(api_url, api_key)
        if dry_run:
            self.store: SyncStore | None = SyncStore.open_for_dry_run(
                settings.sync_state_path, brand
            )
        else:
            self.store = SyncStore(settings.sync_state_path, brand)
            try:
                self.store.acquire_run_lock()
            except BaseException:
                self.store.close()
                raise
        if self.tracks_exits and self.store is not None:
            self.store.begin_run_members()
        self.stats: dict[str, int] = {
            "unchanged_skipped": 0,
            "segment_entrants": 0,
            "exits_untagged": 0,
            "exits_unsubscribed": 0,
            "segments_created": 0,
        }

    def set_member_lister(self, lister: PageLister) -> None:
        """How to list a tag's members in Omnisend (for segments the store does not know)."""
        self._lister = lister

    # -- records --------------------------------------------------------------------------

    def segments(self, record: Mapping[str, Any], stream: str) -> list[SegmentRef]:
        """The segments a record belongs to (raises InvalidSegmentValue for a bad value)."""
        names = segments_of(record, self._getter, stream)
        refs = []
        for name in names:
            ref = self._refs.get((stream, name))
            if ref is None:
                template = self.settings.segment_tag
                tag = render_segment_tag(template, stream, name)
                if tag is not None and len(tag) > MAX_STRING_LENGTH:
                    raise InvalidSegmentValue(
                        f"the segment tag {tag[:40]!r}... would be {len(tag):,} characters "
                        f"long; Omnisend's limit for a tag is {MAX_STRING_LENGTH:,}"
                    )
                ref = SegmentRef(name, membership_key(template, stream, name), tag)
                self._refs[(stream, name)] = ref
                if self.store is not None and ref.key not in self._known_before:
                    self._meet_segment(ref)
            refs.append(ref)
        return refs

    def _meet_segment(self, ref: SegmentRef) -> None:
        """The run's first record of a segment: does the store know its members?

        A segment the store does not know (a first run, a lost store) whose tag contacts may
        carry in Omnisend is listed in the background; so is one whose listing an earlier run
        began (the store's members then are only those that run tagged).
        """
        assert self.store is not None
        with self._lock:
            if ref.key in self._known_before:
                return
            listing = self.store.listing(ref.key)
            known = self.store.knows_segment(ref.key) and listing is None
            self._known_before[ref.key] = known
            if known or not self.tracks_exits or ref.tag is None or self._lister is None:
                return
            self._listings[ref.key] = MemberListing(
                self.store,
                ref.tag,
                self._lister,
                lowercase=self.settings.lowercase_emails,
                stop=self.stop,
            )

    @property
    def listing_requests(self) -> int:
        """Requests the member listings made so far."""
        return sum(listing.requests for listing in list(self._listings.values()))

    def count_record(self, stream: str, count: int = 1) -> None:
        """Records arrived: a snapshot is complete only if ACTIVATE_VERSION follows them.

        Sinks count per batch, and before passing on an ACTIVATE_VERSION.
        """
        self.membership.count_record(stream, count)
        if self._snapshots:
            with self._lock:
                self._snapshots.discard(stream)

    def saw(
        self, stream: str, refs: Sequence[SegmentRef], key: str, *, deleted: bool = False
    ) -> None:
        """A record put (or, deleted, took) contact `key` in these segments."""
        store = self.store if self.tracks_exits else None
        for ref in refs:
            if not deleted and ref.key not in self._live_segments:
                self._live_segments.add(ref.key)
            if self.tracks_exits:
                self.membership.note_segment(stream, ref.key)
                if store is not None:
                    store.saw(ref.key, key, deleted)

    def mark_snapshot(self, stream: str) -> None:
        """The tap sent ACTIVATE_VERSION: the stream so far is a full snapshot.

        Taps send it before and after a full table; a stream cut short (the tap died) lacks the
        closing one, so records after the last ACTIVATE_VERSION undo the mark.
        """
        with self._lock:
            self._snapshots.add(stream)

    def streams_complete(self, streams: Collection[str]) -> None:
        """The streams the tap is known to have sent whole (full_segment_snapshot needs it)."""
        with self._lock:
            self._complete = set(streams)

    def _is_snapshot(self, stream: str) -> bool:
        with self._lock:
            return stream in self._snapshots or (
                self.settings.full_segment_snapshot and stream in self._complete
            )

    # -- change-only sends ----------------------------------------------------------------

    def fingerprint_of(self, contact: MappedContact, exclude_tags: Collection[str]) -> str | None:
        """The contact's fingerprint for `select` (None without a store: nothing to compare).

        Sinks take it right after mapping, while the payload is still in the CPU's caches: the
        same hash a batch later costs 1.5-2 times as much.
        """
        if self.store is None:
            return None
        return fingerprint(contact.payload, contact.tags, exclude_tags=exclude_tags)

    def select(
        self,
        stream: str,
        entries: Sequence[tuple[MappedContact, Sequence[SegmentRef]]],
        known_prints: Mapping[str, str | None] | None = None,
    ) -> tuple[list[_Sendable], list[_Sendable]]:
        """Split a batch into contacts to send and unchanged ones (with their entrant tags).

        Entrant tags are the segment tags of segments the store does not know the contact in
        (all of them when the contact is new, stale or fully resynced). On v5, where tags travel
        in the payload, an unchanged entrant is sent anyway. `known_prints` holds the fingerprints
        the caller already took (`fingerprint_of`); the others are taken here.
        """
        if self.store is None:  # a dry run without a store: everything is new, nothing to hash
            prints = dict.fromkeys((contact.key for contact, _ in entries), "")
            reasons = dict.fromkeys(prints, SendReason.NEW)
        else:
            given = known_prints or {}
            prints = {
                contact.key: given.get(contact.key)
                or self.fingerprint_of(contact, segment_tags(refs))
                for contact, refs in entries
            }
            reasons = self.store.classify(
                prints.items(),
                resync_after_days=self.settings.resync_after_days,
                full_resync=self.settings.full_resync,
            )
            self._after_earlier_sends(reasons)
        entrants = self._entrants(entries, reasons)
        send: list[_Sendable] = []
        unchanged: list[_Sendable] = []
        v5 = self.settings.api_version == "v5"
        for contact, _refs in entries:
            reason = reasons[contact.key]
            item = _Sendable(contact, prints[contact.key], reason, entrants.get(contact.key, ()))
            if reason.needs_send or (v5 and item.entrant_tags):
                send.append(item)
            else:
                unchanged.append(item)
        if self.dry_run:
            self.report.add_send_reasons(reasons)
            self.report.add("tagged", entrants)  # only contacts with entrant tags
        with self._lock:
            self.stats["unchanged_skipped"] += len(unchanged)
        return send, unchanged

    def _after_earlier_sends(self, reasons: dict[str, SendReason]) -> None:
        """An older record of a key went out this run: its newer record is sent even when it
        matches the fingerprint of a previous run (else the older values would stay)."""
        with self._lock:
            resent = self._resent
            for key, reason in reasons.items():
                if reason is SendReason.UNCHANGED and key in resent:
                    reasons[key] = SendReason.CHANGED
                elif reason is SendReason.CHANGED or reason is SendReason.STALE:
                    resent.add(key)  # (under full_resync nothing is ever skipped)

    def _entrants(
        self,
        entries: Sequence[tuple[MappedContact, Sequence[SegmentRef]]],
        reasons: Mapping[str, SendReason],
    ) -> dict[str, tuple[str, ...]]:
        """{contact key: membership keys of segments it enters}."""
        if self.store is None:  # nothing is known: every contact enters each of its segments
            keys_of: dict[int, tuple[str, ...]] = {}  # records of a stream share their refs
            entrants = {}
            for contact, refs in entries:
                keys = keys_of.get(id(refs))
                if keys is None:
                    keys = keys_of[id(refs)] = tuple(r.key for r in refs)
                if keys:
                    entrants[contact.key] = keys
            return entrants
        by_segment: dict[str, list[str]] = {}
        for contact, refs in entries:
            for ref in refs:
                by_segment.setdefault(ref.key, []).append(contact.key)
        new_in: dict[str, set[str]] = {}
        for segment_key, keys in by_segment.items():
            outside = set(keys) if self.store is None else self.store.non_members(segment_key, keys)
            new_in[segment_key] = outside
        result: dict[str, tuple[str, ...]] = {}
        for contact, refs in entries:
            retag = reasons[contact.key] in _RETAG_REASONS
            keys = tuple(r.key for r in refs if retag or contact.key in new_in[r.key])
            if keys:
                result[contact.key] = keys
        return result

    def tags_to_add(
        self, item: _Sendable, sent: bool, refs: Sequence[SegmentRef]
    ) -> tuple[str, ...]:
        """The tags to add through the tags endpoint once the contact is confirmed (2026).

        A sent contact gets its other tags (static, record) and the tags of segments it enters;
        an unchanged one only the segment tags it enters.
        """
        of_segments = segment_tags(refs)
        entering = {r.tag for r in refs if r.tag and r.key in item.entrant_tags}
        other = [t for t in item.contact.tags if t not in of_segments] if sent else []
        return tuple(dict.fromkeys([*other, *sorted(entering)]))

    def confirmed(self, items: Iterable[_Sendable]) -> None:
        """Omnisend confirmed these contacts: remember their fingerprints."""
        if self.dry_run or self.store is None:
            return
        self.store.confirm([(item.contact.key, item.print_) for item in items])

    def memberships_confirmed(
        self, segment_keys: Iterable[str], contact_keys: Sequence[str]
    ) -> None:
        """The contacts now carry these segments (their tag call, or their upsert, succeeded)."""
        if self.dry_run or self.store is None or not contact_keys:
            return
        for segment_key in segment_keys:
            self.store.add_members(segment_key, contact_keys)
        with self._lock:
            self.stats["segment_entrants"] += len(contact_keys)

    def segment_keys_of_tags(self, tags: Iterable[str]) -> list[str]:
        """The membership keys among tags (segment tags are their own membership key)."""
        known = {ref.tag for ref in self._refs.values() if ref.tag}
        return [tag for tag in tags if tag in known]

    # -- end of run -----------------------------------------------------------------------

    def plan_exits(self) -> list[tuple[str, str, ExitDecision]]:
        """Decide every segment's exits at a clean end of input.

        This run's members are complete now (on disk); each segment's members before the run are
        the store's. For a segment the store did not know, its listing is awaited: with
        ``reconcile_existing_tag`` the contacts it found count as members too; without, those
        absent from the run only get counted and reported (this target never tagged them).

        Returns:
            (stream, membership key, decision) for each segment of each stream that ran.
        """
        decisions: list[tuple[str, str, ExitDecision]] = []
        if not self.tracks_exits:
            return decisions
        store = self.store
        if store is not None:
            store.complete_run_members()
        for stream in self.membership.streams():
            keys = dict.fromkeys(self.membership.segments_of_stream(stream))
            if store is not None:
                keys.update(dict.fromkeys(store.segments_of_stream(stream)))
            for segment_key in keys:
                decision = self._decide(stream, segment_key)
                decisions.append((stream, segment_key, self._protect(segment_key, decision)))
        return decisions

    def _decide(self, stream: str, segment_key: str) -> ExitDecision:
        store = self.store
        guards = {
            "snapshot_complete": self._is_snapshot(stream),
            "records_seen": self.membership.records_seen(stream),
            "max_exit_ratio": self.settings.max_exit_ratio,
        }
        if store is None:  # a dry run without a store: nobody was a member before
            return decide_exits(0, 0, 0, list, list, ended_normally=True, **guards)  # type: ignore[arg-type]
        listing = self._listings.get(segment_key)
        listed = False
        if listing is not None:
            listing.wait()
            listed = bool(listing.members) and self.settings.reconcile_existing_tag
        # Leavers are read once, and no more of them than may leave: one more means too many,
        # and only then are they all counted (for the message). A million members cost one pass.
        before = store.members_before(segment_key, listed=listed)
        cap = math.floor(self.settings.max_exit_ratio * before)
        found = {
            name: read(segment_key, listed=listed, at_most=cap)
            for name, read in (
                ("absent", store.absent_members),
                ("explicit", store.deleted_members),
            )
        }
        if any(len(keys) > cap for keys in found.values()):
            counts = store.exit_counts(segment_key, listed=listed)
            absent_count, explicit_count = counts.absent, counts.explicit
        else:
            absent_count, explicit_count = len(found["absent"]), len(found["explicit"])
        decision = decide_exits(
            before,
            absent_count,
            explicit_count,
            lambda: found["absent"],
            lambda: found["explicit"],
            ended_normally=store.run_members_complete,
            protected=lambda leaving: store.live_elsewhere(segment_key, leaving),
            **guards,  # type: ignore[arg-type]
        )
        if listing is not None and listing.members and not listed:
            kept = store.listed_absent(segment_key)
            with self._lock:
                self.stats["tagged_absent_kept"] = self.stats.get("tagged_absent_kept", 0) + kept
            if kept:
                self.logger.info(
                    "Segment %r: %d contacts carry its tag in Omnisend but are absent from this "
                    "run; this target never tagged them, so they keep it (set "
                    "reconcile_existing_tag: true to remove it from them).",
                    segment_key,
                    kept,
                )
        return decision

    def _protect(self, segment_key: str, decision: ExitDecision) -> ExitDecision:
        """Also protect from unsubscribing leavers the store knows in another segment.

        A Meltano job runs each stream in its own target run, so "another segment of the same
        run" is not enough: a contact still in a segment loaded by an earlier run stays subscribed.
        """
        unprotected = decision.leaving - decision.protected
        if self.settings.on_segment_exit != "unsubscribe" or not unprotected or self.store is None:
            return decision
        elsewhere = self.store.members_elsewhere(segment_key, unprotected)
        return replace(decision, protected=decision.protected | frozenset(elsewhere))

    def exit_actions(self, segment_key: str, decision: ExitDecision) -> Any:
        """The actions for a decision under `on_segment_exit` (no tag removal on v5)."""
        tag = (
            segment_key
            if self.settings.tags_enabled and self.settings.api_version != "v5"
            else None
        )
        return plan_exit_actions(self.settings.on_segment_exit, tag, decision)

    def unsubscribes(self, keys: Iterable[str]) -> list[MappedContact]:
        """Batch items that unsubscribe the email (or sms) channel of contacts, dated now."""
        items = []
        for key in sorted(keys):
            payload = unsubscribe_payload(
                key,
                self.settings.api_version,
                send_welcome_message=self.settings.send_welcome_message,
            )
            email, phone = (key, None) if "@" in key else (None, key)
            items.append(MappedContact(key, email, phone, payload, ()))
        return items

    def exits_applied(self, segment_key: str, leaving: Iterable[str]) -> None:
        """The exits of a segment are done in Omnisend (or kept): update the store."""
        if self.dry_run or self.store is None:
            return
        self.store.remove_members(segment_key, leaving)
        if segment_key in self._listings or self.store.listing(segment_key) is not None:
            self.store.drop_listing(segment_key)  # the store knows the segment from now on

    def register_segments(self) -> None:
        """Remember which segments each stream named (so vanished ones are checked later)."""
        if self.dry_run or self.store is None:
            return
        for stream in self.membership.streams():
            names = {ref.key: ref.name for (s, _), ref in self._refs.items() if s == stream}
            self.store.register_segments(stream, names)

    def segment_tags_with_members(self) -> list[str]:
        """Tags of the segments that had members this run (for create_segments)."""
        return sorted(
            {ref.tag for ref in self._refs.values() if ref.tag and ref.key in self._live_segments}
        )

    def handle_result(
        self,
        ticket: ExitTicket,
        accepted: Sequence[MappedContact],
        rejected: Sequence[tuple[MappedContact, str]],
    ) -> None:
        """Results of an unsubscribe batch: confirmed exits leave the store."""
        self.exits_applied(ticket.segment_key, [contact.key for contact in accepted])
        with self._lock:
            self.stats["exits_unsubscribed"] += len(accepted)
        for contact, error in rejected:
            who = mask_email(contact.email) if contact.email else mask_phone(contact.phone)
            self.logger.warning("Omnisend refused to unsubscribe %s: %s", who, error)

    def close(self) -> None:
        """Release the run lock and close the store."""
        if self.store is not None:
            self.store.close()


def segment_tags(refs: Sequence[SegmentRef]) -> tuple[str, ...]:
    """The tags of these segments, in order (segments without a tag have none)."""
    return tuple(ref.tag for ref in refs if ref.tag)


def _days(value: Any) -> float | None:
    return None if value is None else float(value)
