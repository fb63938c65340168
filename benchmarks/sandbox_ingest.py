"""How many contacts per second the sandbox ingests through batches.

Usage: ``python benchmarks/sandbox_ingest.py [--contacts 50000] [--clients 2]
[--api-version 2026|v5] [--batch-size N] [--no-freeze]``. Starts an in-process sandbox (no rate
limit, no processing delay), posts the batches over keep-alive connections from ``--clients``
threads, waits until every batch is finished and prints the contacts/s from the first POST to the
last finished batch, and the process's CPU time per contact (the client's share included). Like
the ``omnisend-sandbox`` process, it freezes the heap after each batch (see
``target_omnisend.sandbox.heap``) unless ``--no-freeze``.

2026 batches (default 100 items) hold small contacts; v5 batches (default 1000 items, the
end-to-end benchmark's shape) hold contacts shaped like the target's real v5 payloads: email and
phone identifiers with dated channels, a full profile, custom properties and tags.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import msgspec
import requests

from target_omnisend.sandbox import heap
from target_omnisend.sandbox.server import SandboxServer
from target_omnisend.sandbox.settings import SandboxSettings

HEADERS = {
    "2026": {"Authorization": "Omnisend-API-Key bench-secret", "Omnisend-Version": "2026-03-15"},
    "v5": {"X-API-KEY": "bench-secret"},
}
DEFAULT_BATCH_SIZE = {"2026": 100, "v5": 1000}
Item = dict[str, object]


def item_2026(n: int) -> Item:
    """A small subscribed 2026 contact."""
    return {
        "identifiers": [{"type": "email", "id": f"user{n}@example.com",
                         "channels": {"email": {"status": "subscribed"}},
                         "sendWelcomeMessage": False}],
        "firstName": "Ada", "lastName": f"L{n}", "tags": ["bench"],
        "customProperties": {"tier": "gold", "points": n},
    }  # fmt: skip


def item_v5(n: int) -> Item:
    """A v5 contact as the target sends one (see ``mapping`` and ``benchmarks/generate.py``)."""
    day = f"{n % 28 + 1:02d}"
    return {
        "identifiers": [
            {"type": "email", "id": f"ada.lovelace.{n}@example.com",
             "channels": {"email": {"status": "subscribed",
                                    "statusDate": f"2023-04-{day}T10:11:12Z"}},
             "sendWelcomeMessage": False},
            {"type": "phone", "id": f"+3706{n % 10**7:07d}",
             "channels": {"sms": {"status": "nonSubscribed",
                                  "statusDate": "1970-01-01T00:00:00Z"}},
             "sendWelcomeMessage": False},
        ],
        "firstName": "Ada", "lastName": f"Lovelace{n}", "address": f"{n % 250 + 1} Gedimino pr.",
        "city": "Vilnius", "state": "Vilniaus apskritis", "postalCode": "01103",
        "country": "Lithuania", "countryCode": "LT", "gender": "f",
        "birthdate": f"1985-06-{day}", "createdAt": f"2019-02-{day}T08:09:10Z",
        "customProperties": {"externalID": str(n), "lifetimeValue": 1234.56 + n % 100,
                             "ordersCount": n % 60, "loyaltyTier": "gold",
                             "loyaltyPoints": n % 50_000, "interests": ["shoes", "outdoor"],
                             "updatedAt": "2025-11-12T13:14:15Z"},
        "tags": ["source: bench", "loyalty: gold"],
    }  # fmt: skip


ITEMS: dict[str, Callable[[int], Item]] = {"2026": item_2026, "v5": item_v5}


def batch_bytes(version: str, start: int, size: int) -> bytes:
    """The JSON body of a batch of ``size`` contacts numbered from ``start``."""
    items = [ITEMS[version](n) for n in range(start, start + size)]
    return msgspec.json.encode({"method": "POST", "endpoint": "contacts", "items": items})


def post_batches(base_url: str, version: str, starts: list[int], size: int) -> list[str]:
    """POST the batches starting at ``starts``; their ids."""
    with requests.Session() as session:
        session.headers.update({**HEADERS[version], "Content-Type": "application/json"})
        ids = []
        for start in starts:
            reply = session.post(
                f"{base_url}/batches", data=batch_bytes(version, start, size), timeout=60
            )
            reply.raise_for_status()
            ids.append(reply.json()["batchID"])
        return ids


def wait_finished(base_url: str, version: str, batch_ids: list[str]) -> int:
    """Poll until every batch is finished; the number of failed items."""
    failed = 0
    with requests.Session() as session:
        session.headers.update(HEADERS[version])
        for batch_id in batch_ids:
            while True:
                batch = session.get(f"{base_url}/batches/{batch_id}", timeout=30).json()
                if batch["status"] in ("finished", "stopped"):
                    failed += batch["errorsCount"]
                    break
                time.sleep(0.005)
    return failed


def main() -> None:
    """Run the measurement and print the figure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--api-version", choices=("2026", "v5"), default="2026")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-freeze", action="store_true", help="as an in-process sandbox")
    args = parser.parse_args()
    heap.freeze_after_batches(not args.no_freeze)
    version = args.api_version
    size = args.batch_size or DEFAULT_BATCH_SIZE[version]
    settings = SandboxSettings(rate_limit_per_minute=10**9, batch_processing_delay=0.0)
    with SandboxServer(settings) as server:
        base_url = server.api_url if version == "2026" else server.v5_url
        starts = list(range(0, args.contacts, size))
        shares = [starts[i :: args.clients] for i in range(args.clients)]
        began, cpu_began = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(args.clients) as pool:
            parts = pool.map(lambda s: post_batches(base_url, version, s, size), shares)
            ids = [i for part in parts for i in part]
        failed = wait_finished(base_url, version, ids)
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
        stored = len(server.dump()["contacts"])
    print(
        f"sandbox ingest ({version}, batches of {size}): {stored} contacts in {elapsed:.2f} s "
        f"= {stored / elapsed:,.0f} contacts/s, CPU {cpu / stored * 1e6:.1f} us/contact "
        f"({failed} failed items)"
    )


if __name__ == "__main__":
    main()
