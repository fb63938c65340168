"""`ContactSink`: one per stream; maps records, de-duplicates, hands batches to the pipeline.

Every record read ends in exactly one of: accepted (Omnisend confirmed it), rejected (in the
rejects file with a reason code) or merged (a later record with the same email or phone in the
same batch superseded it, and that later record was sent instead).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks import BatchSink

from target_omnisend.mapping import ANCIENT_DATE, MappedContact, MappingPlan, Reject, compile_plan
from target_omnisend.summary import mask_email, mask_phone
from target_omnisend.validation import FastJSONSchemaValidator

if TYPE_CHECKING:
    from singer_sdk.helpers.capabilities import TargetLoadMethods  # noqa: F401
    from singer_sdk.sinks.core import BaseJSONSchemaValidator

    from target_omnisend.target import TargetOmnisend

__all__ = ["BatchTicket", "ContactSink"]

_CONTACTS = "contacts"
SCHEMA_MISMATCH = "schema_mismatch"  # REJECT_CODES in mapping.py
API_REJECTED = "api_rejected"


@dataclass
class BatchTicket:
    """What a submitted batch needs to account for its results: the sink and source records."""

    sink: ContactSink
    records: dict[str, Mapping[str, Any]] = field(default_factory=dict)


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
        self._invalid: tuple[dict, str] | None = None
        super().__init__(target, stream_name, schema, key_properties)
        self.plan: MappingPlan = compile_plan(self.schema, target.mapping_config)
        self._log_plan()
        self._lock = threading.Lock()

    def _log_plan(self) -> None:
        matched = ", ".join(f"{name} ← {path}" for name, path in self.plan.matched.items())
        self.logger.info("Stream %r maps: %s", self.stream_name, matched or "nothing")
        for warning in self.plan.warnings:
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
                self._invalid = (record, str(invalid.error_message))
        return record

    def _singer_validate_message(self, record: dict) -> None:
        """Key properties are irrelevant to a contact; only check valid records."""
        if self._invalid is not None and self._invalid[0] is record:
            return
        super()._singer_validate_message(record)

    # -- records and batches --------------------------------------------------------------------

    def process_record(self, record: dict, context: dict) -> None:
        """Map one record: reject it, or keep it in the batch (latest record per key wins)."""
        summary = self._target.summary
        summary.add_read()
        invalid = self._invalid
        if invalid is not None and invalid[0] is record:
            self._invalid = None
            self.reject(record, SCHEMA_MISMATCH, invalid[1])
            return
        result = self.plan.map(record)
        if isinstance(result, Reject):
            self.reject(record, result.code, result.message)
            return
        contacts: dict[str, tuple[MappedContact, Mapping[str, Any]]] = context.setdefault(
            _CONTACTS, {}
        )
        if contacts.pop(result.key, None) is not None:
            self.tally_duplicate_merged()
            summary.add_duplicates_merged(1)
        contacts[result.key] = (result, record)

    def process_batch(self, context: dict) -> None:
        """Submit the batch's contacts (returns before Omnisend processed them)."""
        contacts: dict[str, tuple[MappedContact, Mapping[str, Any]]] = context.pop(_CONTACTS, {})
        if not contacts:
            return
        mapped = [contact for contact, _ in contacts.values()]
        if self._target.dry_run:
            self._target.write_dry_run(self.stream_name, mapped)
            self._target.summary.add_dry_run_payloads(len(mapped))
            return
        ticket = BatchTicket(self, {key: record for key, (_, record) in contacts.items()})
        self._target.submit_contacts(mapped, ticket)

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
        """Account for a finished batch: accepted → summary and tags, rejected → rejects."""
        accepted = list(accepted)
        self._target.summary.add_accepted(len(accepted))
        if not self._target.tags_inline():
            self._target.add_tags_later(accepted)
        for contact, error in rejected:
            record = ticket.records.get(contact.key, {})
            who = mask_email(contact.email) if contact.email else mask_phone(contact.phone)
            self.logger.warning("Omnisend rejected %s: %s", who, error)
            self.reject(record, API_REJECTED, "Omnisend rejected the contact.", error)
