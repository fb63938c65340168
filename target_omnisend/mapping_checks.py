"""Settings that cannot take effect with the mapping in force, and consent columns left unmapped.

Consent is never guessed from a column's name (`email_opt_in` may be a double opt-in still
pending): a column that looks like consent but is not mapped gets a warning naming the exact
`field_mapping` to use, and `status_values` without a mapped status field is a config error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from target_omnisend.mapping import MappingConfigError

__all__ = ["check_status_values", "consent_like_columns", "unmapped_consent_columns"]

STATUS_FIELDS = ("emailStatus", "smsStatus")
# Folded column-name fragments (case, "_", "-", "." and spaces dropped) that suggest consent.
_CONSENT_HINTS = (
    "consent",
    "optin",
    "optedin",
    "optout",
    "optedout",
    "acceptsmarketing",
    "acceptmarketing",
    "marketingoptin",
    "subscribed",
    "subscription",
    "subscribe",
    "newsletter",
    "gdpr",
    "donotemail",
    "donotcontact",
    "emailstatus",
    "smsstatus",
)
_DATE_ENDINGS = ("at", "date", "time", "timestamp", "on", "since", "when")


def _fold(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch not in "_-. ")


_CONSENT_DETAILS = (
    ("useragent", "consentUserAgent"),
    ("ip", "consentIp"),
    ("source", "consentSource"),
)


def _suggested_field(column: str) -> str:
    """The contact field a consent-looking column would feed (status, its date, a detail)."""
    folded = _fold(column)
    for ending, detail in _CONSENT_DETAILS:
        if "consent" in folded and folded.endswith(ending):
            return detail
    channel = "sms" if "sms" in folded or "text" in folded else "email"
    is_date = folded.endswith(_DATE_ENDINGS) and not folded.endswith(("status", "optedin"))
    return f"{channel}StatusChangedAt" if is_date else f"{channel}Status"


def consent_like_columns(schema: Mapping[str, Any]) -> Iterator[str]:
    """Top-level schema properties whose names look like consent or a consent date."""
    for name in schema.get("properties") or {}:
        folded = _fold(str(name))
        if any(hint in folded for hint in _CONSENT_HINTS):
            yield str(name)


def _used_columns(matched: Mapping[str, str], config: Mapping[str, Any]) -> set[str]:
    paths = list(matched.values()) + list((config.get("custom_properties") or {}).values())
    return {str(path).split(".")[0] for path in paths if path}


def _mapping_with(matched: Mapping[str, str], field: str, column: str) -> str:
    return json.dumps({"field_mapping": {**matched, field: column}})


def check_status_values(
    config: Mapping[str, Any],
    matched: Mapping[str, str],
    stream: str | None = None,
    schema: Mapping[str, Any] | None = None,
) -> None:
    """Raise when `status_values` is set but the mapping has neither emailStatus nor smsStatus.

    `stream` and `schema`: the stream whose mapping this is (None: `field_mapping` itself).

    Raises:
        MappingConfigError: naming the setting, and the exact mapping to use when a column
            looks like consent.
    """
    if not config.get("status_values") or set(STATUS_FIELDS) & set(matched):
        return
    where = f"stream {stream!r} maps" if stream is not None else "field_mapping maps"
    message = (
        f"status_values is set, but {where} neither emailStatus nor smsStatus, so it cannot "
        "take effect (contacts would be sent without a status)."
    )
    used = _used_columns(matched, config)
    candidates = [
        (column, _suggested_field(column))
        for column in consent_like_columns(schema or {})
        if column not in used
    ]
    statuses = [(column, field) for column, field in candidates if field.endswith("Status")]
    if statuses:
        column, field = statuses[0]
        hint = f" If {column!r} holds the {field}, use {_mapping_with(matched, field, column)}"
    else:
        hint = ' Map the column holding it in field_mapping (e.g. "emailStatus": "<column>")'
    raise MappingConfigError(message + hint + ", or remove status_values.")


def unmapped_consent_columns(
    schema: Mapping[str, Any], matched: Mapping[str, str], config: Mapping[str, Any], stream: str
) -> list[str]:
    """Warnings for columns that look like consent but feed no contact field or property."""
    used = _used_columns(matched, config)
    warnings = []
    for column in consent_like_columns(schema):
        if column in used:
            continue
        field = _suggested_field(column)
        if field in matched:
            continue
        warnings.append(
            f"Stream {stream!r} has a column {column!r} that looks like consent but is not "
            f"mapped: no {field} is sent from it (consent is never guessed from a column name). "
            f"If it holds the {field}, use {_mapping_with(matched, field, column)}"
            + (" with status_values for its values." if field.endswith("Status") else ".")
        )
    return warnings
