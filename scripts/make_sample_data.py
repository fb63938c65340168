"""Generate the bundled sample segment exports (deterministic: same seed, same files).

Two segments, as a warehouse would export them:

- ``data/segments/vip_customers.csv`` (read by tap-spreadsheets)
- ``data/segments/lapsed_customers.jsonl`` (read by tap-jsonl)

Every profile is fictional: names from short lists, emails on ``example.com``-style reserved
domains, phones from ranges reserved for drama (US 555-01xx, UK 07700 900xxx). A few dirty rows
are added on purpose (bad email, bad phone, missing email, unknown country, a mixed-case duplicate)
so that a run shows rejects and de-duplication.

Run: ``.venv/bin/python scripts/make_sample_data.py``
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

SEED = 20261125
VIP_COUNT = 240
LAPSED_COUNT = 180
SHARED_COUNT = 20  # profiles that are in both segments
OUT_DIR = Path(__file__).resolve().parent.parent / "data" / "segments"

FIELDS = (
    "customer_id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "address",
    "city",
    "state",
    "postal_code",
    "country",
    "gender",
    "birthdate",
    "email_consent",
    "consent_date",
    "loyalty_tier",
    "lifetime_value",
)

FIRST_NAMES = {
    "f": ["Olivia", "Amelia", "Isla", "Ava", "Emma", "Sophia", "Mia", "Grace", "Chloe", "Lucy",
          "Hannah", "Zoe", "Ella", "Nora", "Leah", "Maya", "Ines", "Clara", "Freya", "Ruby"],
    "m": ["Oliver", "George", "Noah", "Arthur", "Leo", "Jack", "Liam", "Ethan", "Lucas", "Mason",
          "James", "Henry", "Samuel", "Owen", "Felix", "Hugo", "Jonas", "Mateo", "Adam", "Theo"],
}  # fmt: skip
LAST_NAMES = [
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
    "Wood", "Jackson", "Clarke", "Garcia", "Martinez", "Miller", "Davis", "Moore", "Muller",
    "Schmidt", "Fischer", "Novak", "O'Brien", "Nguyen", "Kowalski", "Rossi", "Dubois", "Silva",
]  # fmt: skip
STREETS = ["High Street", "Station Road", "Main Street", "Oak Avenue", "Maple Drive",
           "Church Lane", "Park Road", "Elm Street", "Mill Lane", "King Street"]  # fmt: skip
DOMAINS = ["example.com", "example.org", "example.net"]


@dataclass(frozen=True)
class Place:
    """Where a fictional customer lives; `country` is written as a warehouse would."""

    city: str
    state: str
    postal_code: str
    country: str


PLACES = {
    "US": [
        Place("Portland", "OR", "97201", "US"),
        Place("Austin", "TX", "78701", "United States"),
        Place("Denver", "CO", "80202", "USA"),
        Place("Boston", "MA", "02108", "US"),
        Place("Seattle", "WA", "98101", "United States of America"),
    ],
    "GB": [
        Place("London", "", "SW1A 1AA", "United Kingdom"),
        Place("Manchester", "", "M1 1AE", "GB"),
        Place("Leeds", "", "LS1 4DY", "GBR"),
        Place("Bristol", "", "BS1 4DJ", "UK"),
    ],
    "CA": [Place("Toronto", "ON", "M5H 2N2", "Canada"), Place("Vancouver", "BC", "V6B 1A1", "CA")],
    "DE": [Place("Berlin", "BE", "10115", "Germany"), Place("Hamburg", "HH", "20095", "DE")],
}
COUNTRY_WEIGHTS = {"US": 45, "GB": 35, "CA": 10, "DE": 10}
TIERS = ["bronze", "silver", "gold", "platinum"]
CONSENT = ["Y", "Y", "Y", "N", ""]  # Y: subscribed, N: unsubscribed, blank: unknown


def _phone(rng: random.Random, region: str, serial: int) -> str:
    """A fictional phone; UK numbers are often written in national format."""
    if region == "GB":
        local = f"7700 900{serial % 1000:03d}"
        return f"0{local}" if rng.random() < 0.6 else f"+44 {local}"
    if region == "DE":
        return f"+49 30 {1000000 + serial:07d}"
    return f"+1 {rng.choice(['415', '503', '617', '206'])}-555-01{serial % 100:02d}"


def _profile(rng: random.Random, serial: int, segment: str) -> dict[str, str]:
    region = rng.choices(list(COUNTRY_WEIGHTS), weights=list(COUNTRY_WEIGHTS.values()))[0]
    place = rng.choice(PLACES[region])
    gender = rng.choice(["f", "m"])
    first = rng.choice(FIRST_NAMES[gender])
    last = rng.choice(LAST_NAMES)
    local_part = f"{first}.{last}".lower().replace("'", "")
    consent = rng.choice(CONSENT)
    consent_at = datetime(2023, 1, 1, tzinfo=timezone.utc) + timedelta(
        minutes=rng.randrange(0, 3 * 365 * 24 * 60)
    )
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 55 * 365))
    tier = rng.choice(TIERS[2:] if segment == "vip" else TIERS[:2])
    value = rng.uniform(800, 12000) if segment == "vip" else rng.uniform(20, 600)
    return {
        "customer_id": f"C{serial:05d}",
        "email": f"{local_part}.{serial}@{rng.choice(DOMAINS)}",
        "first_name": first,
        "last_name": last,
        "phone": _phone(rng, region, serial) if rng.random() < 0.8 else "",
        "address": f"{rng.randint(1, 250)} {rng.choice(STREETS)}",
        "city": place.city,
        "state": place.state,
        "postal_code": place.postal_code,
        "country": place.country,
        "gender": {"f": "female", "m": "male"}[gender] if rng.random() < 0.5 else gender.upper(),
        "birthdate": born.isoformat() if rng.random() < 0.85 else "",
        "email_consent": consent,
        "consent_date": consent_at.strftime("%Y-%m-%dT%H:%M:%SZ") if consent else "",
        "loyalty_tier": tier,
        "lifetime_value": f"{value:.2f}",
    }


def _dirty(rows: list[dict[str, str]], rng: random.Random) -> None:
    """Spoil a few rows the way real exports are spoiled."""
    rows[3]["email"] = "not-an-email"
    rows[7]["phone"] = "12"
    rows[11]["email"] = ""
    rows[11]["phone"] = ""
    rows[15]["country"] = "Atlantis"
    duplicate = dict(rows[19])
    duplicate["email"] = duplicate["email"].upper()
    duplicate["loyalty_tier"] = "platinum"
    rows.insert(20, duplicate)
    rows[23]["birthdate"] = "1999-02-30"
    rng.shuffle(rows)


def build_segments() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Return (vip rows, lapsed rows), deterministic for `SEED`."""
    rng = random.Random(SEED)
    vip = [_profile(rng, serial, "vip") for serial in range(1, VIP_COUNT + 1)]
    lapsed = [
        _profile(rng, serial, "lapsed")
        for serial in range(VIP_COUNT + 1, VIP_COUNT + LAPSED_COUNT + 1)
    ]
    for shared in vip[-SHARED_COUNT:]:  # the same person, also lapsed
        lapsed.append({**shared, "loyalty_tier": "silver"})
    _dirty(vip, rng)
    _dirty(lapsed, rng)
    return vip, lapsed


def main() -> None:
    """Write both segment files under data/segments/."""
    vip, lapsed = build_segments()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with (OUT_DIR / "vip_customers.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(vip)
    with (OUT_DIR / "lapsed_customers.jsonl").open("w", encoding="utf-8") as handle:
        for row in lapsed:
            record = {key: (value if value != "" else None) for key, value in row.items()}
            record["lifetime_value"] = float(row["lifetime_value"])
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(vip)} VIP rows and {len(lapsed)} lapsed rows to {OUT_DIR}")


if __name__ == "__main__":
    main()
