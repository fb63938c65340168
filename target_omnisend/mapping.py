"""Record → Omnisend contact mapping: compiled once per stream schema, applied per record.

Pure: no I/O and no mutable globals. `compile_plan` turns a stream schema and a `MappingConfig`
into a `MappingPlan` whose `map(record)` returns a `MappedContact` (a JSON-ready `POST /contacts`
body for the configured API generation) or a `Reject` with a stable reason code.

Consent rules (see docs/ARCHITECTURE.md): a channel status is sent only when the record carries one;
an undated status is dated `ANCIENT_DATE`; without a status, 2026-03-15 omits the channel and v5
sends `nonSubscribed` dated `ANCIENT_DATE`. `sendWelcomeMessage` is sent on every identifier.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple

from target_omnisend.countries import COUNTRIES_BY_ALPHA2, Country, lookup_country

__all__ = [
    "ANCIENT_DATE",
    "CONTACT_FIELDS",
    "REJECT_CODES",
    "MappedContact",
    "MappingConfig",
    "MappingConfigError",
    "MappingPlan",
    "Reject",
    "compile_plan",
    "match_conventional_names",
]

ANCIENT_DATE = "1970-01-01T00:00:00Z"
API_VERSIONS = ("2026-03-15", "v5")
STATUSES = ("subscribed", "unsubscribed", "nonSubscribed")
MAX_STRING_LENGTH = 2048
MAX_EMAIL_LENGTH = 254
MAX_TAGS = 100
MAX_CUSTOM_PROPERTIES = 200
SPREAD_KEY = "*"

REJECT_CODES: dict[str, str] = {
    "schema_mismatch": "The record does not match its stream's schema (record validation).",
    "missing_identifier": "The record has neither an email nor a phone number.",
    "invalid_email": "The email address is not valid (local@domain.tld, no spaces, ≤ 254 chars).",
    "invalid_phone": "The phone number cannot be turned into E.164 (+ then 7 to 15 digits).",
    "phone_without_region": (
        "The phone number is in national format and no default_phone_region is set."
    ),
    "invalid_country": "The country (name, alpha-2 or alpha-3) or country code is not recognised.",
    "invalid_gender": "The gender is not one of m, f, male, female.",
    "invalid_birthdate": "The birthdate is not a valid date.",
    "invalid_date": "A date-time value is not a valid date or RFC 3339 timestamp.",
    "invalid_status": "A subscription status is not known to status_values.",
    "invalid_type": "A value has a type the contact field cannot hold.",
    "value_too_long": "A text value is longer than 2048 characters.",
    "too_many_tags": "The contact would carry more than 100 tags.",
    "invalid_custom_property_name": (
        "A custom property name is not 1 to 128 characters of letters, digits and underscores."
    ),
    "invalid_custom_property_value": (
        "A custom property value is not a string, number, boolean or list of strings."
    ),
    "too_many_custom_properties": "The contact would carry more than 200 custom properties.",
    "invalid_number": (
        "A number is not finite (NaN, Infinity) or outside what Omnisend stores: a double "
        "(±1.8e308, no nearer 0 than 2.2e-308) or a 64-bit integer."
    ),
}

# Contact fields that may be mapped, in payload order.
CONTACT_FIELDS: tuple[str, ...] = (
    "email",
    "phone",
    "firstName",
    "lastName",
    "address",
    "city",
    "state",
    "postalCode",
    "country",
    "countryCode",
    "gender",
    "birthdate",
    "createdAt",
    "emailStatus",
    "emailStatusChangedAt",
    "smsStatus",
    "smsStatusChangedAt",
    "consentSource",
    "consentCreatedAt",
    "consentIp",
    "consentUserAgent",
    "tags",
)

# Conventional column names, compared after folding case and dropping "_", "-", "." and spaces.
CONVENTIONAL_NAMES: dict[str, tuple[str, ...]] = {
    "email": ("email", "emailaddress", "mail"),
    "phone": ("phone", "phonenumber", "mobile", "mobilephone", "mobilenumber", "cellphone"),
    "firstName": ("firstname", "givenname", "forename"),
    "lastName": ("lastname", "surname", "familyname"),
    "address": ("address", "address1", "addressline1", "street", "streetaddress"),
    "city": ("city", "town"),
    "state": ("state", "region", "province", "stateprovince"),
    "postalCode": ("postalcode", "zip", "zipcode", "postcode"),
    "country": ("country", "countryname"),
    "countryCode": ("countrycode", "countryiso", "countryiso2"),
    "gender": ("gender", "sex"),
    "birthdate": ("birthdate", "birthday", "dateofbirth", "dob"),
    "createdAt": ("createdat", "created", "signedupat"),
    "emailStatus": (
        "emailstatus",
        "emailsubscriptionstatus",
    ),
    "emailStatusChangedAt": (
        "emailstatuschangedat",
        "emailstatusdate",
    ),
    "smsStatus": ("smsstatus", "smssubscriptionstatus"),
    "smsStatusChangedAt": ("smsstatuschangedat", "smsstatusdate"),
    "consentSource": ("consentsource",),
    "consentCreatedAt": ("consentcreatedat",),
    "consentIp": ("consentip",),
    "consentUserAgent": ("consentuseragent",),
    "tags": ("tags",),
}

DEFAULT_STATUS_VALUES: dict[str, str] = {
    "subscribed": "subscribed",
    "unsubscribed": "unsubscribed",
    "nonsubscribed": "nonSubscribed",
}

_EMAIL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_E164_RE = re.compile(r"\+[1-9][0-9]{6,14}")
_PHONE_SEPARATORS = str.maketrans("", "", " -()./\t\u00a0")
_CUSTOM_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,128}")
_DATE_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)
# Already canonical values, returned as they are once the calendar accepts them (fast path): UTC
# `YYYY-MM-DDTHH:MM:SSZ` from year 1000 (earlier years are formatted differently) and `YYYY-MM-DD`.
_CANONICAL_TIMESTAMP_RE = re.compile(
    r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z"
)
_CANONICAL_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Regions whose national numbers keep their leading 0 after the calling code.
_KEEP_TRUNK_ZERO = frozenset({"IT", "SM", "VA"})
_GENDERS = {"m": "m", "male": "m", "f": "f", "female": "f"}
_CONSENT_FIELDS = (
    ("consentSource", "source"),
    ("consentCreatedAt", "createdAt"),
    ("consentIp", "ip"),
    ("consentUserAgent", "userAgent"),
)


class MappingConfigError(ValueError):
    """The mapping settings cannot work; the target reports it as a configuration error."""


class Reject(NamedTuple):
    """Why a record cannot become a contact: a stable `code` (see REJECT_CODES)."""

    code: str
    message: str
    field: str | None = None


class MappedContact(NamedTuple):
    """A contact ready for `POST /contacts` (inside a batch).

    `key` is the de-duplication key: the normalised email, else the E.164 phone.
    """

    key: str
    email: str | None
    phone: str | None
    payload: dict[str, Any]
    tags: tuple[str, ...]


class _Invalid(Exception):
    def __init__(self, code: str, message: str, field_name: str | None) -> None:
        super().__init__(message)
        self.reject = Reject(code, message, field_name)


@dataclass(frozen=True)
class MappingConfig:
    """The target settings that shape the mapping."""

    api_version: str = "2026-03-15"
    field_mapping: Mapping[str, str] | None = None
    custom_properties: Mapping[str, str] = field(default_factory=dict)
    static_tags: Sequence[str] = ()
    status_values: Mapping[str, str] = field(default_factory=dict)
    default_phone_region: str | None = None
    lowercase_emails: bool = True
    send_welcome_message: bool = False

    @classmethod
    def from_target_config(cls, config: Mapping[str, Any]) -> MappingConfig:
        """Read the mapping settings from the target's config (`tags` are the static tags)."""
        tags = config.get("tags") or ()
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, (list, tuple)):
            raise MappingConfigError("Setting 'tags' must be a list of strings.")
        return cls(
            api_version=config.get("api_version") or "2026-03-15",
            field_mapping=_config_object(config, "field_mapping") or None,
            custom_properties=_config_object(config, "custom_properties"),
            static_tags=tuple(tags),
            status_values=_config_object(config, "status_values"),
            default_phone_region=config.get("default_phone_region") or None,
            lowercase_emails=_config_bool(config, "lowercase_emails", default=True),
            send_welcome_message=_config_bool(config, "send_welcome_message", default=False),
        )


def _config_object(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, Mapping):
        raise MappingConfigError(f"Setting {name!r} must be an object (name → value).")
    return dict(value)


def _config_bool(config: Mapping[str, Any], name: str, *, default: bool) -> bool:
    value = config.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise MappingConfigError(f"Setting {name!r} must be true or false.")


# ---------------------------------------------------------------------------
# Record paths
# ---------------------------------------------------------------------------

Getter = Callable[[Mapping[str, Any]], Any]


def make_getter(path: str) -> Getter:
    """A function reading `path` (dotted for nested values, `a.b.0` indexes a list) from a record.

    A missing key, an index out of range or a step into a scalar gives None. A top-level key that
    itself contains dots is found as well.
    """
    if not isinstance(path, str) or not path:
        raise MappingConfigError(f"Record path {path!r} must be a non-empty string.")
    if "." not in path:
        return lambda record: record.get(path)
    steps = tuple(int(part) if part.isdigit() else part for part in path.split("."))
    if all(isinstance(step, str) for step in steps):
        return _make_key_path_getter(path, steps)  # type: ignore[arg-type]

    def get_nested(record: Mapping[str, Any]) -> Any:
        if path in record:
            return record[path]
        value: Any = record
        for step in steps:
            if isinstance(value, dict):
                value = value.get(step if isinstance(step, str) else str(step))
            elif isinstance(value, list) and isinstance(step, int):
                value = value[step] if step < len(value) else None
            else:
                return None
            if value is None:
                return None
        return value

    return get_nested


def _make_key_path_getter(path: str, steps: tuple[str, ...]) -> Getter:
    """`make_getter` for a dotted path of keys only (no list index): the common case, unrolled."""
    if len(steps) == 2:
        first, second = steps

        def get_two(record: Mapping[str, Any]) -> Any:
            if path in record:
                return record[path]
            if isinstance(record, dict):
                value = record.get(first)
                if isinstance(value, dict):
                    return value.get(second)
            return None

        return get_two

    def get_keys(record: Mapping[str, Any]) -> Any:
        if path in record:
            return record[path]
        value: Any = record
        for step in steps:
            if not isinstance(value, dict):
                return None
            value = value.get(step)
        return value

    return get_keys


# ---------------------------------------------------------------------------
# Normalisers: value → normalised value, or raise _Invalid
# ---------------------------------------------------------------------------


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_error(field_name: str, value: Any, expected: str) -> _Invalid:
    return _Invalid(
        "invalid_type",
        f"{field_name} must be {expected}, got {type(value).__name__}.",
        field_name,
    )


def _check_length(field_name: str, text: str) -> str:
    if len(text) > MAX_STRING_LENGTH:
        raise _Invalid(
            "value_too_long",
            f"{field_name} is {len(text)} characters long; the limit is {MAX_STRING_LENGTH}.",
            field_name,
        )
    return text


def make_email_normaliser(lowercase: bool) -> Callable[[Any], str | None]:
    """Trim (and lower-case) an email and check that it looks like local@domain.tld."""
    fullmatch = _EMAIL_RE.fullmatch

    def normalise_email(value: Any) -> str | None:
        if not isinstance(value, str):
            raise _type_error("email", value, "a string")
        email = value.strip()
        if not email:
            return None
        if lowercase:
            email = email.lower()
        if len(email) > MAX_EMAIL_LENGTH or fullmatch(email) is None:
            raise _Invalid("invalid_email", "email is not a valid email address.", "email")
        return email

    return normalise_email


def make_phone_normaliser(
    field_name: str, default_region: str | None
) -> Callable[[Any], str | None]:
    """Turn a phone number into E.164; national numbers need `default_region`."""
    region_code = None
    if default_region is not None:
        country = COUNTRIES_BY_ALPHA2.get(default_region.strip().upper())
        if country is None or country.calling_code is None:
            raise MappingConfigError(
                f"default_phone_region {default_region!r} is not an ISO 3166-1 alpha-2 code "
                "with a calling code."
            )
        region_code = (country.alpha2, str(country.calling_code))

    def normalise_phone(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _type_error(field_name, value, "a string")
        digits = str(value).strip().translate(_PHONE_SEPARATORS)
        if not digits:
            return None
        if digits.startswith("+"):
            phone = digits
        elif digits.startswith("00"):
            phone = "+" + digits[2:]
        elif region_code is None:
            raise _Invalid(
                "phone_without_region",
                f"{field_name} has no country calling code and default_phone_region is not set.",
                field_name,
            )
        else:
            phone = "+" + region_code[1] + _national_significant(digits, *region_code)
        if _E164_RE.fullmatch(phone) is None:
            raise _Invalid(
                "invalid_phone",
                f"{field_name} is not a valid phone number (E.164: + then 7 to 15 digits).",
                field_name,
            )
        return phone

    return normalise_phone


def _national_significant(digits: str, region: str, calling_code: str) -> str:
    if calling_code == "1" and len(digits) == 11 and digits.startswith("1"):
        return digits[1:]
    if digits.startswith("0") and region not in _KEEP_TRUNK_ZERO:
        return digits[1:]
    return digits


def make_string_normaliser(field_name: str) -> Callable[[Any], str | None]:
    """Trim a text value (integers become text, e.g. numeric postal codes)."""

    def normalise_string(value: Any) -> str | None:
        if isinstance(value, str):
            text = value.strip()
        elif isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral():
            text = str(int(value))
        else:
            raise _type_error(field_name, value, "a string")
        if not text:
            return None
        return _check_length(field_name, text)

    return normalise_string


def normalise_country(value: Any) -> Country:
    """A country name, alias, alpha-2 or alpha-3 code → the country."""
    if not isinstance(value, str):
        raise _type_error("country", value, "a string")
    country = lookup_country(value)
    if country is None:
        raise _Invalid(
            "invalid_country", f"country {_describe(value)} is not recognised.", "country"
        )
    return country


def normalise_country_code(value: Any) -> Country:
    """An ISO 3166-1 alpha-2 code (any case) → the country."""
    if not isinstance(value, str):
        raise _type_error("countryCode", value, "a string")
    country = COUNTRIES_BY_ALPHA2.get(value.strip().upper())
    if country is None:
        raise _Invalid(
            "invalid_country",
            f"countryCode {_describe(value)} is not an ISO 3166-1 alpha-2 code.",
            "countryCode",
        )
    return country


def normalise_gender(value: Any) -> str:
    """m, f, male, female (any case) → m or f."""
    if not isinstance(value, str):
        raise _type_error("gender", value, "a string")
    gender = _GENDERS.get(value.strip().lower())
    if gender is None:
        raise _Invalid(
            "invalid_gender",
            f"gender {_describe(value)} is not one of m, f, male, female.",
            "gender",
        )
    return gender


def _parse_timestamp(text: str) -> datetime | None:
    match = _DATE_RE.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=timezone.utc,
        )
    except ValueError:
        return None
    if offset and offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        shift = int(digits[:2]) * 60 + int(digits[2:4] or 0)
        try:
            moment -= sign * timedelta(minutes=shift)
        except OverflowError:
            return None
    return moment


def _format_utc(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_timestamp_normaliser(field_name: str) -> Callable[[Any], str]:
    """datetime, date or ISO 8601 string → RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SSZ`).

    Naive values are taken as UTC.
    """

    canonical = _CANONICAL_TIMESTAMP_RE.fullmatch
    from_iso = datetime.fromisoformat

    def normalise_timestamp(value: Any) -> str:
        if type(value) is str and canonical(value) is not None:
            try:
                from_iso(value)  # the date exists (Feb 30 does not)
            except ValueError:
                pass  # the general path below says why
            else:
                return value
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            return value.isoformat() + "T00:00:00Z"
        elif isinstance(value, str):
            parsed = _parse_timestamp(value)
            if parsed is None:
                raise _Invalid(
                    "invalid_date",
                    f"{field_name} {_describe(value)} is not an ISO 8601 date or date-time.",
                    field_name,
                )
            moment = parsed
        else:
            raise _type_error(field_name, value, "a date-time string")
        try:
            return _format_utc(moment)
        except (ValueError, OverflowError) as error:
            raise _Invalid(
                "invalid_date", f"{field_name} cannot be expressed in UTC.", field_name
            ) from error

    return normalise_timestamp


def normalise_birthdate(value: Any) -> str:
    """date, datetime or ISO string → YYYY-MM-DD (the date as written, no time-zone shift)."""
    if type(value) is str and _CANONICAL_DATE_RE.fullmatch(value) is not None:
        try:
            date.fromisoformat(value)  # the date exists
        except ValueError:
            pass
        else:
            return value
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str):
        raise _type_error("birthdate", value, "a date string")
    match = _DATE_RE.fullmatch(value.strip())
    if match is not None:
        try:
            return date(int(match[1]), int(match[2]), int(match[3])).isoformat()
        except ValueError:
            pass
    raise _Invalid(
        "invalid_birthdate",
        f"birthdate {_describe(value)} is not a valid date (YYYY-MM-DD).",
        "birthdate",
    )


def make_status_normaliser(
    field_name: str, status_values: Mapping[str, str]
) -> Callable[[Any], str]:
    """A source value → subscribed | unsubscribed | nonSubscribed through `status_values`."""
    table = dict(DEFAULT_STATUS_VALUES)
    for source, status in status_values.items():
        if status not in STATUSES:
            raise MappingConfigError(
                f"status_values[{source!r}] is {status!r}; use one of {', '.join(STATUSES)}."
            )
        table[_status_key(source)] = status

    def normalise_status(value: Any) -> str:
        if type(value) is str:  # the common case, without `_status_key`'s checks
            status = table.get(value.strip().casefold())
            if status is not None:
                return status
        if isinstance(value, (str, bool, int)):
            status = table.get(_status_key(value))
            if status is not None:
                return status
            raise _Invalid(
                "invalid_status",
                f"{field_name} {_describe(value)} is not in status_values.",
                field_name,
            )
        raise _type_error(field_name, value, "a string or boolean")

    return normalise_status


def _status_key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip().casefold()


def _normalise_tag_list(value: Any) -> list[str]:
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        raise _type_error("tags", value, "a list of strings or a comma-separated string")
    tags = []
    for item in items:
        if not isinstance(item, str):
            raise _type_error("tags", item, "a list of strings")
        tag = item.strip()
        if tag:
            tags.append(_check_length("tags", tag))
    return tags


# Numbers Omnisend can store: a 64-bit integer, or a double that neither overflows nor underflows.
_INT64_LIMIT = 2**63


def _number(field_name: str, value: int | float | Decimal) -> int | float:
    """A number as sent (an int when integral), or raise `invalid_number` for one that would
    change on the way (1e400 as 401 digits, 1.5e-400 as 0) or is not finite."""
    if isinstance(value, int):
        if -_INT64_LIMIT <= value < _INT64_LIMIT:
            return value
        problem = "an integer beyond 64 bits"
    elif not (math.isfinite(value) if isinstance(value, float) else value.is_finite()):
        problem = "not a finite number"
    else:
        if value == int(value) and -_INT64_LIMIT <= value < _INT64_LIMIT:
            return int(value)
        as_float = float(value)
        if math.isinf(as_float):
            problem = "too large for a double"
        elif as_float == 0.0 and value != 0:
            problem = "too near 0 for a double (it would become 0)"
        else:
            return as_float
    shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:20]}…"
    raise _Invalid("invalid_number", f"{field_name} is {shown}: {problem}.", field_name)


def _custom_value(name: str, value: Any) -> Any:
    """A JSON-ready custom property value, or raise for nested or odd values."""
    field_name = "customProperties." + name
    if isinstance(value, str):
        return _check_length(field_name, value)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, Decimal)):
        return _number(field_name, value)
    if isinstance(value, datetime):
        try:
            return _format_utc(value)
        except (ValueError, OverflowError):
            pass
    elif isinstance(value, date):
        return value.isoformat()
    elif isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                break
            if len(item) > MAX_STRING_LENGTH:
                _check_length(field_name, item)
        else:
            return value
    raise _Invalid(
        "invalid_custom_property_value",
        f"{field_name} is a {type(value).__name__}; custom properties hold strings, numbers, "
        "booleans or lists of strings.",
        field_name,
    )


def _check_custom_name(name: Any) -> None:
    if not isinstance(name, str) or _CUSTOM_NAME_RE.fullmatch(name) is None:
        raise _Invalid(
            "invalid_custom_property_name",
            f"custom property name {_describe(name)} is not 1 to 128 letters, digits or "
            "underscores.",
            "customProperties",
        )


# ---------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------


def _fold_name(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch not in "_-. ")


def match_conventional_names(schema: Mapping[str, Any]) -> dict[str, str]:
    """{contact field: schema property} for properties named in the conventional way."""
    properties = schema.get("properties") or {}
    by_folded: dict[str, str] = {}
    for name in properties:
        by_folded.setdefault(_fold_name(name), name)
    matched: dict[str, str] = {}
    for contact_field, names in CONVENTIONAL_NAMES.items():
        for candidate in names:
            if candidate in by_folded:
                matched[contact_field] = by_folded[candidate]
                break
    return matched


def _resolve_field_mapping(
    schema: Mapping[str, Any], config: MappingConfig
) -> tuple[dict[str, str], list[str]]:
    if config.field_mapping is None:
        return match_conventional_names(schema), []
    unknown = sorted(set(config.field_mapping) - set(CONTACT_FIELDS))
    if unknown:
        raise MappingConfigError(
            f"field_mapping names unknown contact field(s) {', '.join(map(repr, unknown))}; "
            f"known fields: {', '.join(CONTACT_FIELDS)}."
        )
    mapping = {name: path for name, path in config.field_mapping.items() if path}
    for name, path in mapping.items():
        if not isinstance(path, str):
            raise MappingConfigError(f"field_mapping.{name}: record path {path!r} must be text.")
    if "email" not in mapping and "phone" not in mapping:
        raise MappingConfigError("field_mapping must map 'email' or 'phone' (or both).")
    warnings = []
    properties = schema.get("properties")
    # Singer schemas list every property a record carries, unless they say otherwise.
    lists_every_property = (
        isinstance(properties, dict)
        and schema.get("additionalProperties") is not True
        and not schema.get("patternProperties")
    )
    if lists_every_property:
        absent = {
            name: path
            for name, path in mapping.items()
            if path not in properties and path.split(".")[0] not in properties
        }
        if absent and {"email", "phone"} & set(mapping) <= set(absent):
            described = ", ".join(f"{name} → {path!r}" for name, path in absent.items())
            raise MappingConfigError(
                f"field_mapping points at properties the stream does not have ({described}): "
                "no record of this stream can carry an email or phone."
            )
        warnings = [
            f"field_mapping.{name} → {path!r}: the stream schema has no such property"
            for name, path in absent.items()
        ]
    return mapping, warnings


def compile_plan(schema: Mapping[str, Any], config: MappingConfig) -> MappingPlan:
    """Compile the mapping for one stream schema.

    Raises:
        MappingConfigError: the settings cannot work (unknown field, no identifier, bad value).
    """
    if config.api_version not in API_VERSIONS:
        raise MappingConfigError(
            f"api_version {config.api_version!r} is not supported; use one of "
            f"{', '.join(API_VERSIONS)}."
        )
    mapping, warnings = _resolve_field_mapping(schema, config)
    return MappingPlan(mapping, config, warnings)


Reader = Callable[[Mapping[str, Any]], Any]
# Distinct segment tag sets whose tag tuple a plan remembers (flat memory: bounded).
_TAG_CACHE_SIZE = 1024
_TEXT_FIELDS = frozenset({"firstName", "lastName", "address", "city", "state", "postalCode"})
_PROFILE_FIELDS = (
    "firstName",
    "lastName",
    "address",
    "city",
    "state",
    "postalCode",
    "gender",
    "birthdate",
    "createdAt",
)
_CHANNELS = (  # identifier type, channel, status field, status date field
    ("email", "email", "emailStatus", "emailStatusChangedAt"),
    ("phone", "sms", "smsStatus", "smsStatusChangedAt"),
)
# "None or empty text", without `value == ''` (a Decimal's comparison with text is slow).
_ABSENT_OR_EMPTY = "value is None or (isinstance(value, str) and not value)"
_MISSING_IDENTIFIER = Reject(
    "missing_identifier", "The record has neither an email nor a phone.", "email"
)


class _MapSource:
    """The source of one plan's map function, and the objects it refers to by name.

    The function reads every mapped field with its record path unrolled, normalises it (short
    strings inline, everything else through the field's normaliser) and assembles the payload;
    a normaliser raises `_Invalid` for the first invalid field, in the order fields are read.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "ANCIENT_DATE": ANCIENT_DATE,
            "MAX_STRING_LENGTH": MAX_STRING_LENGTH,
            "MappedContact": MappedContact,
            "_MISSING_IDENTIFIER": _MISSING_IDENTIFIER,
            "_custom_value": _custom_value,
            "LIMIT": _INT64_LIMIT,
        }

    def name(self, obj: Any, hint: str) -> str:
        """A name the generated code can use for `obj`."""
        name = f"_{hint}_{len(self.namespace)}"
        self.namespace[name] = obj
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * (depth + 1) + line)

    def read(self, depth: int, path: str) -> None:
        """`value` = the record's value at `path` (`make_getter`'s rules)."""
        getter = make_getter(path)  # checks the path
        steps = path.split(".")
        if len(steps) == 1:
            self.emit(depth, f"value = record.get({path!r})")
        elif len(steps) == 2 and not any(step.isdigit() for step in steps):
            self.emit(depth, f"if {path!r} in record:")  # a top-level key with a dot in it
            self.emit(depth + 1, f"value = record[{path!r}]")
            self.emit(depth, "else:")
            self.emit(depth + 1, f"value = record.get({steps[0]!r})")
            self.emit(
                depth + 1, f"value = value.get({steps[1]!r}) if isinstance(value, dict) else None"
            )
        else:
            self.emit(depth, f"value = {self.name(getter, 'get')}(record)")

    def field(self, depth: int, path: str, normalise: Callable[[Any], Any], var: str) -> None:
        """`var` = the normalised value at `path`; None when absent or empty (None or "")."""
        self.read(depth, path)
        normaliser = self.name(normalise, "normalise")
        self.emit(depth, f"{var} = None if {_ABSENT_OR_EMPTY} else {normaliser}(value)")

    def text_field(self, depth: int, path: str, field_name: str, var: str) -> None:
        """`field` for a text value, the common case (a short string) inline."""
        self.read(depth, path)
        normaliser = self.name(make_string_normaliser(field_name), "normalise")
        self.emit(depth, "if type(value) is str:")
        self.emit(depth + 1, "text = value.strip()")
        self.emit(
            depth + 1,
            f"{var} = (text or None) if len(text) <= MAX_STRING_LENGTH else {normaliser}(value)",
        )
        self.emit(depth, "elif value is None:")
        self.emit(depth + 1, f"{var} = None")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"{var} = {normaliser}(value)")

    def build(self, label: str) -> tuple[Callable[[Mapping[str, Any], Sequence[str]], Any], str]:
        source = "def map_record(record, extra_tags):\n" + "\n".join(self.lines) + "\n"
        exec(compile(source, f"<mapping plan {label}>", "exec"), self.namespace)  # noqa: S102
        return self.namespace["map_record"], source


class MappingPlan:
    """A compiled mapping; `map(record)` builds one contact.

    Everything that depends only on the schema and the settings is resolved here, once, into one
    generated function (`source`): each mapped field's record path unrolled, its normaliser
    bound, the channel and consent rules of the API generation decided, the static tags joined.
    `map` only reads, normalises and assembles.
    """

    def __init__(self, mapping: dict[str, str], config: MappingConfig, warnings: list[str]) -> None:
        """Compile the map function for a resolved field mapping (use `compile_plan`)."""
        self.matched: dict[str, str] = dict(mapping)
        self.warnings: list[str] = warnings
        self.config = config
        self._is_v5 = config.api_version == "v5"
        self._static_tags = _static_tags(config.static_tags)
        self._tag_cache: dict[tuple[str, ...], tuple[str, ...]] = {}
        # Normalisers are built even for unmapped fields: their settings are checked either way.
        normalisers: dict[str, Callable[[Any], Any]] = {
            "email": make_email_normaliser(config.lowercase_emails),
            "phone": make_phone_normaliser("phone", config.default_phone_region),
            "emailStatus": make_status_normaliser("emailStatus", config.status_values),
            "smsStatus": make_status_normaliser("smsStatus", config.status_values),
            "gender": normalise_gender,
            "birthdate": normalise_birthdate,
            "country": normalise_country,
            "countryCode": normalise_country_code,
            "tags": _normalise_tag_list,
        }
        for name in ("createdAt", "emailStatusChangedAt", "smsStatusChangedAt", "consentCreatedAt"):
            normalisers[name] = make_timestamp_normaliser(name)
        self._custom_paths, self._spread = _compile_custom_properties(config.custom_properties)
        self._map, self.source = self._compile(mapping, normalisers)

    def map(
        self, record: Mapping[str, Any], extra_tags: Sequence[str] = ()
    ) -> MappedContact | Reject:
        """Map one record to a contact, or say why it cannot be one."""
        try:
            return self._map(record, extra_tags)
        except _Invalid as invalid:
            return invalid.reject

    def _compile(
        self, mapping: Mapping[str, str], normalisers: Mapping[str, Callable[[Any], Any]]
    ) -> tuple[Callable[[Mapping[str, Any], Sequence[str]], Any], str]:
        # Fields are read in a fixed order: the first invalid one is the reject.
        src = _MapSource()
        emit = src.emit
        for name in ("email", "phone"):
            if name in mapping:
                src.field(0, mapping[name], normalisers[name], name)
            else:
                emit(0, f"{name} = None")
        emit(0, "if email is None and phone is None:")
        emit(1, "return _MISSING_IDENTIFIER")
        consent = [(name, key) for name, key in _CONSENT_FIELDS if name in mapping]
        if consent:
            emit(0, "consent = {}")
            for name, key in consent:
                if name in normalisers:
                    src.field(0, mapping[name], normalisers[name], "found")
                else:
                    src.text_field(0, mapping[name], name, "found")
                emit(0, "if found is not None:")
                emit(1, f"consent[{key!r}] = found")
        emit(0, "identifiers = []")
        for channel_fields in _CHANNELS:
            if channel_fields[0] in mapping:
                self._compile_identifier(
                    src, mapping, normalisers, channel_fields, with_consent=bool(consent)
                )
        emit(0, "payload = {'identifiers': identifiers}")
        for name in _PROFILE_FIELDS:
            if name not in mapping:
                continue
            if name in _TEXT_FIELDS:
                src.text_field(0, mapping[name], name, "found")
            else:
                src.field(0, mapping[name], normalisers[name], "found")
            emit(0, "if found is not None:")
            emit(1, f"payload[{name!r}] = found")
        self._compile_country(src, mapping, normalisers)
        self._compile_custom_properties(src)
        if "tags" in mapping:
            src.field(0, mapping["tags"], normalisers["tags"], "record_tags")
        else:
            emit(0, "record_tags = None")
        emit(0, f"tags = {src.name(self._tags, 'tags')}(record_tags, extra_tags)")
        if self._is_v5:
            emit(0, "if tags:")
            emit(1, "payload['tags'] = list(tags)")
        emit(0, "key = email if email is not None else phone")
        emit(0, "return MappedContact(key, email, phone, payload, tags)")
        return src.build(", ".join(f"{name}={path}" for name, path in mapping.items()))

    def _compile_identifier(
        self,
        src: _MapSource,
        mapping: Mapping[str, str],
        normalisers: Mapping[str, Callable[[Any], Any]],
        channel_fields: tuple[str, str, str, str],
        *,
        with_consent: bool,
    ) -> None:
        """One identifier: its channel status only when the record carries one (v5: always)."""
        kind, channel, status_field, date_field = channel_fields
        emit = src.emit
        date_key = "statusDate" if self._is_v5 else "statusChangedAt"
        unknown = f"{{{channel!r}: {{'status': 'nonSubscribed', 'statusDate': ANCIENT_DATE}}}}"
        emit(0, f"if {kind} is not None:")
        emit(1, f"identifier = {{'type': {kind!r}, 'id': {kind}}}")
        if status_field in mapping:
            src.field(1, mapping[status_field], normalisers[status_field], "status")
            emit(1, "if status is not None:")
            if date_field in mapping:
                src.field(2, mapping[date_field], normalisers[date_field], "changed")
                emit(2, "changed = changed or ANCIENT_DATE")
            else:
                emit(2, "changed = ANCIENT_DATE")
            emit(
                2,
                f"identifier['channels'] = {{{channel!r}: {{'status': status, "
                f"{date_key!r}: changed}}}}",
            )
            if self._is_v5:
                emit(1, "else:")
                emit(2, f"identifier['channels'] = {unknown}")
        elif self._is_v5:
            emit(1, f"identifier['channels'] = {unknown}")
        if with_consent:
            emit(1, "if consent:")
            emit(2, "identifier['consent'] = dict(consent)")
        emit(1, f"identifier['sendWelcomeMessage'] = {bool(self.config.send_welcome_message)!r}")
        emit(1, "identifiers.append(identifier)")

    @staticmethod
    def _compile_country(
        src: _MapSource,
        mapping: Mapping[str, str],
        normalisers: Mapping[str, Callable[[Any], Any]],
    ) -> None:
        """country and countryCode; a valid countryCode wins over the name's code."""
        emit = src.emit
        if "country" in mapping:
            src.field(0, mapping["country"], normalisers["country"], "country")
            emit(0, "if country is not None:")
            emit(1, "payload['country'] = country.name")
            emit(1, "payload['countryCode'] = country.alpha2")
        if "countryCode" in mapping:
            src.field(0, mapping["countryCode"], normalisers["countryCode"], "code")
            emit(0, "if code is not None:")
            if "country" in mapping:
                emit(1, "if country is None:")
                emit(2, "payload['country'] = code.name")
            else:
                emit(1, "payload['country'] = code.name")
            emit(1, "payload['countryCode'] = code.alpha2")

    def _compile_custom_properties(self, src: _MapSource) -> None:
        """Short strings, integers and booleans are kept as they are; the rest is checked."""
        if not self._custom_paths and self._spread is None:
            return
        emit = src.emit
        if self._spread is not None:
            emit(0, f"custom = {src.name(self._spread_properties, 'spread')}(record)")
        else:
            emit(0, "custom = {}")
        for name, path in self._custom_paths:
            src.read(0, path)
            emit(0, f"if not ({_ABSENT_OR_EMPTY}):")
            emit(1, "kind = type(value)")
            emit(1, "if kind is str:")
            emit(2, "if len(value) > MAX_STRING_LENGTH:")
            emit(3, f"value = _custom_value({name!r}, value)")
            emit(1, "elif kind is not bool and (kind is not int or not -LIMIT <= value < LIMIT):")
            emit(2, f"value = _custom_value({name!r}, value)")
            emit(1, f"custom[{name!r}] = value")
        if self._spread is not None:
            emit(0, f"{src.name(_check_custom_count, 'check_count')}(custom)")
        emit(0, "if custom:")
        emit(1, "payload['customProperties'] = custom")

    def _spread_properties(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The custom properties of the object at the `*` path (each name and value checked)."""
        assert self._spread is not None
        custom: dict[str, Any] = {}
        spread = self._spread(record)
        if spread is not None:
            if not isinstance(spread, dict):
                raise _type_error("customProperties", spread, "an object")
            for name, value in spread.items():
                if value is not None and value != "":
                    _check_custom_name(name)
                    custom[name] = _custom_value(name, value)
        return custom

    def _tags(
        self, record_tags: Sequence[str] | None, extra_tags: Sequence[str]
    ) -> tuple[str, ...]:
        if record_tags:
            tags = tuple(dict.fromkeys((*self._static_tags, *record_tags, *extra_tags)))
        elif not extra_tags:
            return self._static_tags  # at most MAX_TAGS: checked with the settings
        elif type(extra_tags) is tuple:  # the segment tags: a few distinct sets, remembered
            cached = self._tag_cache.get(extra_tags)
            if cached is not None:
                return cached
            tags = tuple(dict.fromkeys((*self._static_tags, *extra_tags)))
            if len(tags) <= MAX_TAGS and len(self._tag_cache) < _TAG_CACHE_SIZE:
                self._tag_cache[extra_tags] = tags
        else:
            tags = tuple(dict.fromkeys((*self._static_tags, *extra_tags)))
        if len(tags) > MAX_TAGS:
            raise _Invalid("too_many_tags", f"{len(tags)} tags; the limit is {MAX_TAGS}.", "tags")
        return tags


def _check_custom_count(custom: Mapping[str, Any]) -> None:
    if len(custom) > MAX_CUSTOM_PROPERTIES:
        raise _Invalid(
            "too_many_custom_properties",
            f"{len(custom)} custom properties; the limit is {MAX_CUSTOM_PROPERTIES}.",
            "customProperties",
        )


def _static_tags(tags: Sequence[str]) -> tuple[str, ...]:
    cleaned = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise MappingConfigError(f"tags must be non-empty strings; got {tag!r}.")
        if len(tag) > MAX_STRING_LENGTH:
            raise MappingConfigError(f"tag {tag[:40]!r}... is over {MAX_STRING_LENGTH} characters.")
        cleaned.append(tag.strip())
    if len(cleaned) > MAX_TAGS:
        raise MappingConfigError(f"{len(cleaned)} static tags; the limit is {MAX_TAGS}.")
    return tuple(dict.fromkeys(cleaned))


def _compile_custom_properties(
    custom_properties: Mapping[str, str],
) -> tuple[tuple[tuple[str, str], ...], Getter | None]:
    """((name, record path), ...) and the getter of the `*` (spread) path, checked."""
    steps = []
    spread = None
    for name, path in custom_properties.items():
        if name == SPREAD_KEY:
            spread = make_getter(path)
            continue
        if not isinstance(name, str) or _CUSTOM_NAME_RE.fullmatch(name) is None:
            raise MappingConfigError(
                f"custom_properties name {name!r} must be 1 to 128 letters, digits or underscores."
            )
        make_getter(path)  # checks the path
        steps.append((name, path))
    if len(steps) > MAX_CUSTOM_PROPERTIES:
        raise MappingConfigError(
            f"{len(steps)} custom properties configured; the limit is {MAX_CUSTOM_PROPERTIES}."
        )
    return tuple(steps), spread
