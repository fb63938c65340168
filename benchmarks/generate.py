"""Deterministic generator of realistic Singer messages for the benchmarks.

Two streams (two segments) of customer profiles with nested fields (``address.city``), statuses
and dates, phones in several formats, custom properties, a STATE now and then, and a fixed 2% of
invalid records (bad email, bad phone, missing email and phone) that the target must reject.
Messages are streamed line by line, never held in memory, so 1M records cost no RAM.

Usage::

    python benchmarks/generate.py 100000 -o /tmp/profiles.singer
    python benchmarks/generate.py 1000 | target-omnisend --config config.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

STREAMS = ("vip_customers", "newsletter_subscribers")
FIRST_STREAM_SHARE = 0.6
INVALID_EVERY = 50  # 1 record in 50 is invalid: 2%
STATE_EVERY = 10_000
DEFAULT_SEED = 20260315

FIRST_NAMES = (
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "John",
    "Hedy",
    "Tim",
    "Katherine",
    "Donald",
    "Sophie",
    "Guido",
    "Anita",
    "Niklaus",
    "Joan",
    "Bjarne",
    "Lynn",
    "Yukihiro",
    "Jean",
    "Ole",
)
LAST_NAMES = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Backus",
    "Lamarr",
    "Berners-Lee",
    "Johnson",
    "Knuth",
    "Wilson",
    "Rossum",
    "Borg",
    "Wirth",
    "Clarke",
    "Stroustrup",
    "Conway",
    "Matsumoto",
    "Sammet",
    "Dahl",
    "O'Neil",
    "Müller",
    "Nørgaard",
)
DOMAINS = ("example.com", "example.org", "mail.example.net", "shop.example.co.uk")
CITIES = (
    ("London", "England", "EC1A 1BB", "GB"),
    ("Manchester", "England", "M1 1AE", "GB"),
    ("Vilnius", None, "01100", "LT"),
    ("New York", "NY", "10001", "US"),
    ("Austin", "TX", "73301", "US"),
    ("Berlin", None, "10115", "DE"),
    ("Paris", None, "75001", "FR"),
    ("Toronto", "ON", "M5H 2N2", "CA"),
)
STREETS = ("High Street", "Main St", "Gedimino pr.", "Unter den Linden", "Rue de Rivoli")
OPT_IN_VALUES = ("Y", "Y", "Y", "N", "opted_out", None)
SMS_VALUES = ("subscribed", "unsubscribed", None, None)
TIERS = ("bronze", "silver", "gold", "platinum")
GENDERS = ("m", "f", "female", "male", None)
INVALID_KINDS = ("bad_email", "bad_phone", "missing_identifier")

_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
_NULLABLE_DATETIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": _NULLABLE_STRING,
        "first_name": _NULLABLE_STRING,
        "last_name": _NULLABLE_STRING,
        "phone": _NULLABLE_STRING,
        "gender": _NULLABLE_STRING,
        "birthdate": {"type": ["string", "null"], "format": "date"},
        "address": {
            "type": ["object", "null"],
            "properties": {
                "street": _NULLABLE_STRING,
                "city": _NULLABLE_STRING,
                "state": _NULLABLE_STRING,
                "postal_code": _NULLABLE_STRING,
                "country_code": _NULLABLE_STRING,
            },
        },
        "email_opt_in": _NULLABLE_STRING,
        "email_opt_in_at": _NULLABLE_DATETIME,
        "sms_status": _NULLABLE_STRING,
        "sms_status_at": _NULLABLE_DATETIME,
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "lifetime_value": {"type": ["number", "null"]},
        "orders_count": {"type": ["integer", "null"]},
        "loyalty": {
            "type": ["object", "null"],
            "properties": {"tier": _NULLABLE_STRING, "points": {"type": ["integer", "null"]}},
        },
        "interests": {"type": ["array", "null"], "items": {"type": "string"}},
    },
}

# The target-omnisend settings that map the generated records (shared by every benchmark).
FIELD_MAPPING: dict[str, str] = {
    "email": "email",
    "phone": "phone",
    "firstName": "first_name",
    "lastName": "last_name",
    "gender": "gender",
    "birthdate": "birthdate",
    "address": "address.street",
    "city": "address.city",
    "state": "address.state",
    "postalCode": "address.postal_code",
    "countryCode": "address.country_code",
    "createdAt": "created_at",
    "emailStatus": "email_opt_in",
    "emailStatusChangedAt": "email_opt_in_at",
    "smsStatus": "sms_status",
    "smsStatusChangedAt": "sms_status_at",
}
CUSTOM_PROPERTIES: dict[str, str] = {
    "lifetime_value": "lifetime_value",
    "orders_count": "orders_count",
    "loyalty_tier": "loyalty.tier",
    "loyalty_points": "loyalty.points",
    "interests": "interests",
}
STATUS_VALUES: dict[str, str] = {
    "Y": "subscribed",
    "N": "nonSubscribed",
    "opted_out": "unsubscribed",
    "subscribed": "subscribed",
    "unsubscribed": "unsubscribed",
}
STATIC_TAGS = ("source: benchmark",)


def target_mapping_config() -> dict[str, Any]:
    """The mapping part of a target-omnisend config for the generated records."""
    return {
        "field_mapping": dict(FIELD_MAPPING),
        "custom_properties": dict(CUSTOM_PROPERTIES),
        "status_values": dict(STATUS_VALUES),
        "tags": list(STATIC_TAGS),
        "default_phone_region": "GB",
    }


@dataclass(frozen=True)
class Expected:
    """What a run over ``records`` generated records should produce."""

    records: int
    invalid: int
    per_stream: dict[str, int]
    valid_per_stream: dict[str, int]

    @property
    def valid(self) -> int:
        """Records the target must accept (emails are unique, so one contact each)."""
        return self.records - self.invalid


def stream_sizes(records: int) -> dict[str, int]:
    """How many records each stream gets."""
    first = int(records * FIRST_STREAM_SHARE)
    return {STREAMS[0]: first, STREAMS[1]: records - first}


def is_invalid(index: int) -> bool:
    """Whether the record at this global index is one of the 2% invalid ones."""
    return index % INVALID_EVERY == INVALID_EVERY // 2


def expected(records: int) -> Expected:
    """Counts a run over ``records`` generated records should produce."""
    sizes = stream_sizes(records)
    valid: dict[str, int] = {}
    start = 0
    for stream, size in sizes.items():
        valid[stream] = sum(1 for i in range(start, start + size) if not is_invalid(i))
        start += size
    invalid = records - sum(valid.values())
    return Expected(records, invalid, sizes, valid)


def _timestamp(rng: random.Random, year_from: int, year_to: int) -> str:
    year = rng.randint(year_from, year_to)
    return (
        f"{year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
    )


def _phone(rng: random.Random, country: str) -> str:
    digits = f"{rng.randint(0, 999999):06d}"
    if country == "GB":
        return rng.choice((f"+44 7700 9{digits[:2]}{digits[2:5]}", f"07700 9{digits[:5]}"))
    if country in ("US", "CA"):
        return f"+1 (555) 01{digits[:1]}-{digits[1:5]}"
    if country == "LT":
        return f"+3706{digits}{digits[:1]}"
    return f"+49 151 {digits}{digits[:2]}"


def make_record(index: int, rng: random.Random) -> dict[str, Any]:
    """One profile; deterministic for a given index and generator state."""
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    city, state, postal_code, country = rng.choice(CITIES)
    local = f"{first}.{last}".lower().replace("'", "").replace("ü", "u").replace("ø", "o")
    email: str | None = f"{local}.{index}@{rng.choice(DOMAINS)}"
    if index % 3 == 0:
        email = email.title()  # mixed case: normalised by the target
    phone: str | None = _phone(rng, country) if rng.random() < 0.7 else None
    opt_in = rng.choice(OPT_IN_VALUES)
    sms = rng.choice(SMS_VALUES) if phone else None
    if is_invalid(index):
        kind = INVALID_KINDS[(index // INVALID_EVERY) % len(INVALID_KINDS)]
        if kind == "bad_email":
            email = f"{local}.{index} at example.com"
        elif kind == "bad_phone":
            phone = "12"
        else:
            email = None
            phone = None
            sms = None
    created = _timestamp(rng, 2015, 2025)
    return {
        "id": index,
        "email": email,
        "first_name": first,
        "last_name": last,
        "phone": phone,
        "gender": rng.choice(GENDERS),
        "birthdate": (
            f"{rng.randint(1950, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            if rng.random() < 0.5
            else None
        ),
        "address": {
            "street": f"{rng.randint(1, 250)} {rng.choice(STREETS)}",
            "city": city,
            "state": state,
            "postal_code": postal_code,
            "country_code": country,
        },
        "email_opt_in": opt_in,
        "email_opt_in_at": _timestamp(rng, 2020, 2025) if opt_in and rng.random() < 0.8 else None,
        "sms_status": sms,
        "sms_status_at": _timestamp(rng, 2021, 2025) if sms else None,
        "created_at": created,
        "updated_at": _timestamp(rng, 2025, 2026),
        "lifetime_value": round(rng.random() * 2000, 2),
        "orders_count": rng.randint(0, 60),
        "loyalty": {"tier": rng.choice(TIERS), "points": rng.randint(0, 50_000)},
        "interests": rng.sample(("shoes", "bags", "outdoor", "sale", "kids", "beauty"), 2),
    }


def iter_messages(records: int, seed: int = DEFAULT_SEED) -> Iterator[str]:
    """Yield the Singer messages (one JSON line each, no newline) for ``records`` profiles."""
    rng = random.Random(seed)
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    index = 0
    for stream, size in stream_sizes(records).items():
        yield dumps(
            {"type": "SCHEMA", "stream": stream, "schema": SCHEMA, "key_properties": ["id"]}
        )
        for _ in range(size):
            record = make_record(index, rng)
            yield dumps({"type": "RECORD", "stream": stream, "record": record})
            index += 1
            if index % STATE_EVERY == 0:
                state = {"bookmarks": {stream: {"replication_key_value": record["updated_at"]}}}
                yield dumps({"type": "STATE", "value": state})
    yield dumps({"type": "STATE", "value": {"bookmarks": {"done": index}}})


def write_messages(records: int, out: TextIO, seed: int = DEFAULT_SEED) -> None:
    """Stream the messages to an open text file."""
    buffer: list[str] = []
    for line in iter_messages(records, seed):
        buffer.append(line)
        if len(buffer) >= 1000:
            out.write("\n".join(buffer) + "\n")
            buffer.clear()
    if buffer:
        out.write("\n".join(buffer) + "\n")


def write_file(records: int, path: Path, seed: int = DEFAULT_SEED) -> Path:
    """Write the messages to ``path`` (UTF-8) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        write_messages(records, out, seed)
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=int, help="number of RECORD messages")
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    if args.output:
        write_file(args.records, args.output, args.seed)
    else:
        write_messages(args.records, sys.stdout, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
