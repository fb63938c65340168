"""`ContactSink`: one per stream; maps records, de-duplicates, hands batches to the pipeline.

Every record read ends in exactly one of: accepted (Omnisend confirmed it), rejected (in the
rejects file with a reason code), merged (a later record with the same email or phone in the
same batch superseded it, and that later record was sent instead), unchanged (the sync store
holds the fingerprint Omnisend confirmed for it: not re-sent) or a deletion (`_sdc_deleted_at`:
an exit from its segments, applied at the end of the run).

Newer values never lose. A later record merges into an earlier one of the same contact only when
it carries every field and tag the earlier one did (Omnisend's upsert leaves absent fields alone,
so sending just the later one leaves what sending both in order would); otherwise the earlier one
is submitted first, and the pipeline sends the later one once the earlier one ended. A contact
staged in another stream's sink is submitted from there first for the same reason. If Omnisend
rejects the record an earlier one merged into, the earlier one is rejected with it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks import BatchSink

from target_omnisend.dry_run import encode_payload_line
from target_omnisend.mapping import (
    ANCIENT_DATE,
    MappedContact,
    MappingConfigError,
    MappingPlan,
    Reject,
    compile_plan,
)
from target_omnisend.mapping_checks import check_status_values, unmapped_consent_columns
from target_omnisend.mapping_worker import EncodedPayload, Outcome
from target_omnisend.pipeline import NOT_UTF8, encode_payload, gate_ids
from target_omnisend.reader import JSON_DECODER, decode_line
from target_omnisend.segments import (
    DELETED_AT_FIELD,
    SDC_COLUMNS,
    InvalidSegmentValue,
    is_deleted_record,
)
from target_omnisend.summary import mask_email, mask_phone
from target_omnisend.sync import SegmentRef, segment_tags
from target_omnisend.validation import FastJSONSchemaValidator

if TYPE_CHECKING:
    from singer_sdk.helpers.capabilities import TargetLoadMethods  # noqa: F401
    from singer_sdk.sinks.core import BaseJSONSchemaValidator

    from target_omnisend.target import TargetOmnisend

__all__ = ["BatchTicket", "ContactSink"]

_CONTACTS = "contacts"
_SUPERSEDED = "superseded"  # key → records merged into the staged contact (packed)
SCHEMA_MISMATCH = "schema_mismatch"  # REJECT_CODES in mapping.py
API_REJECTED = "api_rejected"
INVALID_SEGMENT = "invalid_segment"
INVALID_ENCODING = "invalid_encoding"
MISSING_KEY_PROPERTY = "missing_key_property"
INVALID_RECORD = "invalid_record"


# A staged contact: the mapped contact, its source record (a dict, or the input line when the
# mapping worker mapped it; None in a dry run: not needed again),
# its segments, what the batch writes for it (the dry-run line, or the payload's JSON; None:
# written later) and its fingerprint (None without a sync store). The last two are encoded right
# after mapping, while the payload is still in the CPU's caches: a batch later, the same work
# costs 1.5-2 times as much.
_Staged = tuple[
    MappedContact,
    "Mapping[str, Any] | RecordLine | None",
    list[SegmentRef],
    "bytes | None",
    "str | None",
]

# Source records wait for their batch's result as JSON bytes: one object each instead of a dict's
# dozens (less memory in flight, less for the results thread to free); Decimals keep their digits
# and come back as the reader made them.
_RECORD_ENCODER = msgspec.json.Encoder(decimal_format="number")


def supersedes(newer: MappedContact, older: MappedContact) -> bool:
    """Whether sending only `newer` leaves Omnisend as sending `older`, then `newer`, would: it
    carries every field, identifier and tag `older` did (an upsert leaves absent fields alone)."""
    return set(older.tags) <= set(newer.tags) and _carries(newer.payload, older.payload)


def _carries(newer: Any, older: Any) -> bool:
    if isinstance(older, Mapping):
        return isinstance(newer, Mapping) and all(
            name in newer and _carries(newer[name], value) for name, value in older.items()
        )
    if isinstance(older, list):
        if not isinstance(newer, list):
            return False
        if all(isinstance(item, Mapping) for item in older):  # identifiers, by type and id
            return all(
                any(
                    isinstance(item, Mapping)
                    and item.get("type") == old.get("type")
                    and item.get("id") == old.get("id")
                    and _carries(item, old)
                    for item in newer
                )
                for old in older
            )
        return all(value in newer for value in older)  # tags
    return True  # a value: the newer one replaces it


class RecordLine(bytes):
    """A RECORD message's input line, kept as the record (the mapping worker mapped it)."""

    __slots__ = ()


def pack_record(record: Mapping[str, Any] | RecordLine) -> bytes | Mapping[str, Any]:
    """A source record kept for a possible reject (see `unpack_record`).

    A record msgspec cannot write back exactly (lone surrogates, odd types, NaN and infinite
    numbers, which it writes as null, deep nesting) stays a dict; an input line stays as it is.
    """
    if type(record) is RecordLine:
        return record
    try:
        packed = _RECORD_ENCODER.encode(record)
    except (TypeError, ValueError, UnicodeEncodeError, msgspec.EncodeError, RecursionError):
        return record
    if b"null" in packed and _has_non_finite(record):
        return record
    return packed


def _has_non_finite(value: Any) -> bool:
    if type(value) is float:
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(item) for item in value)
    return False


def unpack_record(packed: bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    """The record `pack_record` kept."""
    if type(packed) is RecordLine:
        return decode_line(packed)["record"]
    return JSON_DECODER.decode(packed) if isinstance(packed, bytes) else packed


@dataclass
class BatchTicket:
    """What a submitted batch needs to account for its results: the sink and source records."""

    sink: ContactSink
    records: dict[str, bytes | Mapping[str, Any]] = field(default_factory=dict)  # packed
    items: dict[str, Any] = field(default_factory=dict)  # key → what SegmentSync.select decided
    refs: Mapping[str, Sequence[SegmentRef]] = field(default_factory=dict)
    # key → earlier records merged into the contact sent (packed): rejected with it
    superseded: Mapping[str, list[bytes | Mapping[str, Any]]] = field(default_factory=dict)

    def record(self, key: str) -> Mapping[str, Any]:
        """The source record of the contact `key` ({} if the batch did not send it)."""
        packed = self.records.get(key)
        return {} if packed is None else unpack_record(packed)


class ContactSink(BatchSink):
    """Turns a stream's records into Omnisend contacts, submitted in pipelined batches."""

    # The pipeline cuts each drain into batches of the generation's item limit (100 or 1000).
    MAX_SIZE_DEFAULT = 1000

    def __init__(
        self,
        target: TargetOmnisend,
        stream_name: str,
        schema: dict,
        key_properties: Any,
    ) -> None:
        """Compile the mapping plan for this stream's schema (once per schema)."""
        self._target = target
        self._invalid: tuple[dict, str, str] | None = None  # record, reject code, message
        super().__init__(target, stream_name, schema, key_properties)
        self.plan: MappingPlan = compile_plan(self.schema, target.mapping_config)
        self._sync = target.sync  # opens the sync store (and takes the run lock) up front
        # identifier → the sink holding a staged contact with it (shared by the target's sinks)
        self._staged_in: dict[str, ContactSink] = target.staged_in
        # Without segment_field the stream is the segment: its refs and tags are computed once.
        fixed: list[SegmentRef] = []
        if self._sync.settings.segment_field is None:
            try:
                fixed = self._sync.segments({}, stream_name)
            except InvalidSegmentValue as error:  # a stream problem: one error, at its SCHEMA
                raise MappingConfigError(
                    f"Stream {stream_name[:40]!r}... ({len(stream_name):,} characters): {error}. "
                    "Give the stream a shorter name (a stream map alias) or set segment_tag to "
                    "a template that makes shorter tags."
                ) from None
        self._stream_refs: tuple[list[SegmentRef], tuple[str, ...]] = (fixed, segment_tags(fixed))
        self._uncounted = 0  # records not yet counted in the sync (counted per batch)
        # A batch is full at max_size contacts, not records: rejected, merged and deleted
        # records hold no place, so every drain fills the API's batches (100 or 1000) exactly.
        self.staged_contacts = 0
        self.drain_size: int = self.max_size  # the SDK's property, read once (checked per record)
        self._dry_run = target.dry_run
        self._encode_payloads_early = True  # see process_batch
        self._log_plan()
        self._lock = threading.Lock()

    @property
    def segment_tags(self) -> tuple[str, ...]:
        """The stream's segment tags (none with segment_field: each record names its own)."""
        return self._stream_refs[1]

    @property
    def validates(self) -> bool:
        """True when records are validated against the stream's schema."""
        return self._validator is not None

    def _log_plan(self) -> None:
        matched = ", ".join(f"{name} ← {path}" for name, path in self.plan.matched.items())
        self.logger.info("Stream %r maps: %s", self.stream_name, matched or "nothing")
        for warning in self.plan.warnings:
            self.logger.warning("%s", warning)
        check_status_values(self._target.config, self.plan.matched, self.stream_name, self.schema)
        for warning in unmapped_consent_columns(
            self.schema, self.plan.matched, self._target.config, self.stream_name
        ):
            self.logger.warning("%s", warning)
        self._warn_about_consent()
        if not {"email", "phone"} & set(self.plan.matched):
            self.logger.warning(
                "Stream %r has no email or phone property: its records will be rejected as "
                "missing_identifier. Set field_mapping to name the identifier.",
                self.stream_name,
            )

    def _warn_about_consent(self) -> None:
        """Say where consent safety rests on Omnisend ignoring older status dates."""
        matched = self.plan.matched
        v5 = self._target.api_version == "v5"
        for status, date_field in (
            ("emailStatus", "emailStatusChangedAt"),
            ("smsStatus", "smsStatusChangedAt"),
        ):
            if status in matched and date_field not in matched:
                self.logger.warning(
                    "Stream %r maps %s without %s: statuses are sent dated %s so they only "
                    "apply to new contacts. This relies on Omnisend ignoring a status older "
                    "than the stored one; a server that lets older dates override would "
                    "change existing contacts' %s.",
                    self.stream_name,
                    status,
                    date_field,
                    ANCIENT_DATE,
                    status,
                )
        if v5 and "emailStatus" not in matched and "email" in matched:
            self.logger.warning(
                "Stream %r maps no emailStatus: on v5 (where a missing status means subscribed) "
                "the target sends nonSubscribed dated %s, which leaves existing contacts "
                "alone only if Omnisend ignores older status dates. The 2026-03-15 API "
                "has no such caveat.",
                self.stream_name,
                ANCIENT_DATE,
            )

    # -- validation: invalid records become rejects, not crashes --------------------------------

    def get_validator(self) -> BaseJSONSchemaValidator | None:
        """The compiled validator (fastjsonschema, jsonschema's verdict on rejects)."""
        if not self.validate_schema:
            return None
        return FastJSONSchemaValidator(
            self.schema, validate_formats=bool(self.validate_field_string_format)
        )

    def _validate_and_parse(self, record: dict) -> dict:
        """Validate without raising: an invalid record is remembered and rejected later.

        Timestamps are not parsed into datetimes: the mapping reads strings itself.
        """
        self._invalid = None
        if self._validator is not None:
            try:
                self._validator.validate(record)
            except InvalidRecord as invalid:
                self._invalid = (record, SCHEMA_MISMATCH, str(invalid.error_message))
        return record

    def _singer_validate_message(self, record: dict) -> None:
        """A valid record without one of the stream's key properties is rejected, not fatal."""
        if self._invalid is not None and self._invalid[0] is record:
            return
        for key in self._key_properties:
            if key not in record:
                self._invalid = (
                    record,
                    MISSING_KEY_PROPERTY,
                    f"The record has no {key!r}, one of its stream's key properties "
                    f"({', '.join(map(repr, self._key_properties))}).",
                )
                return

    # -- records and batches --------------------------------------------------------------------

    def process_record(self, record: dict, context: dict) -> None:
        """Map one record: reject it, note an exit, or keep it in the batch (latest wins)."""
        target = self._target
        summary = target.summary
        summary.add_read()
        self._uncounted += 1
        sync = self._sync
        invalid = self._invalid
        if invalid is not None and invalid[0] is record:
            self._invalid = None
            self.reject(record, invalid[1], invalid[2])
            return
        refs, tags = self._stream_refs
        if not refs:  # segment_field: each record names its segments
            try:
                refs = sync.segments(record, self.stream_name)
            except InvalidSegmentValue as error:
                self.reject(record, INVALID_SEGMENT, f"segment_field: {error}")
                return
            tags = segment_tags(refs)
        deleted = is_deleted_record(record)
        result = self.plan.map(record, () if deleted else tags)
        if isinstance(result, Reject):
            self.reject(record, result.code, result.message)
            return
        sync.saw(self.stream_name, refs, result.key, deleted=deleted)
        if deleted:  # an exit of this contact from these segments, not an upsert
            summary.add_deletions(1)
            return
        self._stage(context, result, record, refs, tags)

    def reject_unusable(self, value: Any, reason: str) -> None:
        """A RECORD message whose `record` is no object (or could not be read): a reject row
        holding what it held under `_record` (nothing when unreadable)."""
        self.tally_record_read()
        self._target.summary.add_read()
        self._uncounted += 1
        self.reject({} if value is None else {"_record": value}, INVALID_RECORD, reason)

    def take_mapped(
        self, lines: Sequence[bytes], outcomes: Sequence[Outcome], start: int, end: int
    ) -> None:
        """Stage records `start` to `end` (exclusive), which the mapping worker mapped."""
        count = end - start
        self.tally_record_read(count)
        self._target.summary.add_read(count)
        self._uncounted += count
        context = self._get_context({})
        refs, stream_tags = self._stream_refs
        saw, stream, dry_run = self._sync.saw, self.stream_name, self._dry_run
        for index in range(start, end):
            key, email, phone, tags, payload, dry_run_line, print_ = outcomes[index]
            if dry_run:
                encoded = EncodedPayload(dry_run_line, in_line=True)  # type: ignore[arg-type]
                early = (dry_run_line, print_)
            else:
                encoded = EncodedPayload(payload)  # type: ignore[arg-type]
                early = (payload, print_)
            saw(stream, refs, key)
            contact = MappedContact(key, email, phone, encoded, tags)
            self._stage(context, contact, RecordLine(lines[index]), refs, stream_tags, early)

    def _stage(
        self,
        context: dict,
        result: MappedContact,
        record: Mapping[str, Any] | RecordLine,
        refs: list[SegmentRef],
        tags: tuple[str, ...],
        early: tuple[bytes | None, str | None] | None = None,
    ) -> None:
        """Keep a mapped contact in the batch; a later record of the same contact replaces it.

        `early` holds what the mapping worker already encoded and hashed for it.
        """
        staged_in = self._staged_in
        ids = gate_ids(result)
        for identifier in ids:
            owner = staged_in.get(identifier)
            if owner is not None and owner is not self:  # its older record goes out first
                owner.submit_staged()
        contacts: dict[str, _Staged] = context.setdefault(_CONTACTS, {})
        previous = contacts.get(result.key)
        if previous is not None:
            if not set(previous[2]) <= set(refs):  # keep the earlier record's segments too
                refs = list(dict.fromkeys([*previous[2], *refs]))
                tags = segment_tags(refs)
                record = unpack_record(record)
                remapped = self.plan.map(record, tags)
                if isinstance(remapped, Reject):  # the earlier record stays and is sent
                    self.reject(record, remapped.code, remapped.message)
                    return
                result, early = remapped, None
            if supersedes(result, previous[0]):
                del contacts[result.key]  # the latest record goes last, as if it came alone
                if not self._dry_run:
                    merged = context.setdefault(_SUPERSEDED, {})
                    merged.setdefault(result.key, []).append(pack_record(previous[1]))
                self.tally_duplicate_merged()
                self._target.summary.add_duplicates_merged(1)
            else:  # it would lose a field or tag of the earlier one: both go, in order
                self.submit_staged(context)
                contacts = context.setdefault(_CONTACTS, {})
        if early is not None:
            encoded, print_ = early
        else:
            print_ = self._sync.fingerprint_of(result, tags)  # tags: the segment tags of `refs`
            if self._dry_run:
                encoded = encode_payload_line(self.stream_name, result)
            else:
                encoded = encode_payload(result) if self._encode_payloads_early else None
        # A dry run does not need the record again
        contacts[result.key] = (result, None if self._dry_run else record, refs, encoded, print_)
        self.staged_contacts = len(contacts)
        for identifier in ids:
            staged_in[identifier] = self

    def submit_staged(self, context: dict | None = None) -> None:
        """Submit the contacts staged so far (the SDK's batch goes on: records keep coming)."""
        if context is None:
            context = self._pending_batch
        if context and context.get(_CONTACTS):
            self.process_batch(context)

    @property
    def is_full(self) -> bool:
        """Full once the batch holds `max_size` contacts (see `staged_contacts`)."""
        return self.staged_contacts >= self.drain_size

    def _remove_sdc_metadata_from_record(self, record: dict) -> None:
        """Drop the SDK's metadata columns, but keep `_sdc_deleted_at`: it marks an exit."""
        if record.keys().isdisjoint(SDC_COLUMNS):  # nearly every record: nothing to drop
            return
        deleted_at = record.get(DELETED_AT_FIELD)
        super()._remove_sdc_metadata_from_record(record)
        if deleted_at is not None:
            record[DELETED_AT_FIELD] = deleted_at

    def _after_process_record(self, context: dict) -> None:
        """The SDK logs the whole batch context here at DEBUG: raw contacts, so never."""

    def process_batch(self, context: dict) -> None:
        """Send the batch's new and changed contacts (returns before Omnisend processed them)."""
        self._count_records()
        self.staged_contacts = 0
        contacts: dict[str, _Staged] = context.pop(_CONTACTS, {})
        superseded: dict[str, list[Any]] = context.pop(_SUPERSEDED, {})
        if not contacts:
            return
        staged_in = self._staged_in
        for staged in contacts.values():
            for identifier in gate_ids(staged[0]):
                if staged_in.get(identifier) is self:
                    del staged_in[identifier]
        target = self._target
        refs_by_key = {staged[0].key: staged[2] for staged in contacts.values()}
        send, unchanged = self._sync.select(
            self.stream_name,
            [(staged[0], staged[2]) for staged in contacts.values()],
            {key: staged[4] for key, staged in contacts.items()},
        )
        # Most of this batch sent: likely a first load, whose next payloads are worth encoding
        # at mapping time; a re-run skips nearly every contact, and would encode them for nothing.
        self._encode_payloads_early = 2 * len(send) >= len(contacts)
        if unchanged:
            target.summary.add_unchanged(len(unchanged))
            if not target.dry_run:
                self._enter_segments(unchanged, refs_by_key, sent=False)
        if target.dry_run:
            target.write_dry_run(
                self.stream_name,
                [item.contact for item in send],
                [contacts[item.contact.key][3] for item in send],
            )
            target.summary.add_dry_run_payloads(len(send))
            return
        if not send:
            return
        ticket = BatchTicket(
            self,
            {item.contact.key: pack_record(contacts[item.contact.key][1]) for item in send},
            {item.contact.key: item for item in send},
            refs_by_key,
            superseded,
        )
        target.submit_contacts(
            [item.contact for item in send],
            ticket,
            [contacts[item.contact.key][3] for item in send],
        )

    def _count_records(self) -> None:
        if self._uncounted:
            self._sync.count_record(self.stream_name, self._uncounted)
            self._uncounted = 0

    def _enter_segments(
        self,
        items: Iterable[Any],
        refs_by_key: Mapping[str, Sequence[SegmentRef]],
        *,
        sent: bool,
    ) -> None:
        """Tag confirmed contacts (2026) and record the memberships that need no tag call."""
        target = self._target
        sync = self._sync
        inline = target.tags_inline()
        to_tag: list[tuple[str | None, tuple[str, ...]]] = []
        untagged_members: dict[tuple[str, ...], list[str]] = {}
        for item in items:
            contact = item.contact
            refs = refs_by_key.get(contact.key, ())
            if inline or contact.email is None:
                direct = item.entrant_tags
            else:
                direct = tuple(r.key for r in refs if r.tag is None and r.key in item.entrant_tags)
                to_tag.append((contact.email, sync.tags_to_add(item, sent, refs)))
            if direct:
                untagged_members.setdefault(direct, []).append(contact.key)
        for segment_keys, keys in untagged_members.items():
            sync.memberships_confirmed(segment_keys, keys)
        if to_tag:
            target.add_tags_later(to_tag)

    def activate_version(self, new_version: int) -> None:
        """ACTIVATE_VERSION: the stream is a full snapshot, so absent members are exits."""
        self._count_records()  # the records before it belong to the snapshot
        self._sync.mark_snapshot(self.stream_name)
        self.logger.info(
            "Stream %r sent ACTIVATE_VERSION: it is treated as a full snapshot of its segments.",
            self.stream_name,
        )

    def reject(
        self,
        record: Mapping[str, Any],
        code: str,
        message: str,
        api_error: str | None = None,
    ) -> None:
        """Write a record to the rejects file and count it."""
        self._target.rejects.write(
            self.stream_name, self.original_schema, record, code, message, api_error
        )
        self._target.summary.add_rejected(code)

    # -- results --------------------------------------------------------------------------------

    def handle_result(
        self,
        ticket: BatchTicket,
        accepted: Iterable[MappedContact],
        rejected: Iterable[tuple[MappedContact, str]],
    ) -> None:
        """Account for a finished batch: accepted → summary, store, tags; rejected → rejects."""
        accepted = list(accepted)
        target = self._target
        target.summary.add_accepted(len(accepted))
        if target.tags_inline():
            target.summary.add_contacts_with_tags(sum(1 for contact in accepted if contact.tags))
        items = [ticket.items[contact.key] for contact in accepted if contact.key in ticket.items]
        self._sync.confirmed(items)
        self._enter_segments(items, ticket.refs, sent=True)
        for contact, error in rejected:
            record = ticket.record(contact.key)
            who = mask_email(contact.email) if contact.email else mask_phone(contact.phone)
            if error == NOT_UTF8:  # found while encoding, never sent
                self.logger.warning("Not sending %s: %s", who, error)
                self.reject(record, INVALID_ENCODING, error)
            else:
                self.logger.warning("Omnisend rejected %s: %s", who, error)
                self.reject(record, API_REJECTED, "Omnisend rejected the contact.", error)
            self._reject_superseded(ticket, contact.key, error)

    def _reject_superseded(self, ticket: BatchTicket, key: str, error: str) -> None:
        """Earlier records merged into a rejected contact: never applied, so rejected too."""
        earlier = ticket.superseded.get(key)
        if not earlier:
            return
        for packed in earlier:
            self.reject(
                unpack_record(packed),
                API_REJECTED,
                "A later record of the same contact replaced this one in its batch, and that "
                "record was not accepted; this one was never sent.",
                error,
            )
        self._target.summary.add_duplicates_merged(-len(earlier))
