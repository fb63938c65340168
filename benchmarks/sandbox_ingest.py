"""How many contacts per second the sandbox ingests through 2026 batches of 100.

Usage: ``python benchmarks/sandbox_ingest.py [--contacts 50000] [--clients 2]``. Starts an
in-process sandbox (no rate limit, no processing delay), posts the batches over keep-alive
connections from ``--clients`` threads, waits until every batch is finished and prints the
contacts/s from the first POST to the last finished batch.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from target_omnisend.sandbox.server import SandboxServer
from target_omnisend.sandbox.settings import SandboxSettings

HEADERS = {"Authorization": "Omnisend-API-Key bench-secret", "Omnisend-Version": "2026-03-15"}


def batch_body(start: int, size: int) -> dict[str, object]:
    """A batch of ``size`` subscribed contacts with a few fields each."""
    items = [
        {
            "identifiers": [{"type": "email", "id": f"user{n}@example.com",
                             "channels": {"email": {"status": "subscribed"}},
                             "sendWelcomeMessage": False}],
            "firstName": "Ada", "lastName": f"L{n}", "tags": ["bench"],
            "customProperties": {"tier": "gold", "points": n},
        }
        for n in range(start, start + size)
    ]  # fmt: skip
    return {"method": "POST", "endpoint": "contacts", "items": items}


def post_batches(api_url: str, starts: list[int]) -> list[str]:
    """POST the batches starting at ``starts``; their ids."""
    with requests.Session() as session:
        session.headers.update(HEADERS)
        return [
            session.post(f"{api_url}/batches", json=batch_body(s, 100), timeout=30).json()[
                "batchID"
            ]
            for s in starts
        ]


def wait_finished(api_url: str, batch_ids: list[str]) -> None:
    """Poll until every batch is finished."""
    with requests.Session() as session:
        session.headers.update(HEADERS)
        for batch_id in batch_ids:
            while session.get(f"{api_url}/batches/{batch_id}", timeout=30).json()["status"] not in (
                "finished",
                "stopped",
            ):
                time.sleep(0.005)


def main() -> None:
    """Run the measurement and print the figure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    settings = SandboxSettings(rate_limit_per_minute=10**9, batch_processing_delay=0.0)
    with SandboxServer(settings) as server:
        starts = list(range(0, args.contacts, 100))
        shares = [starts[i :: args.clients] for i in range(args.clients)]
        began = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            ids = [i for part in pool.map(lambda s: post_batches(server.api_url, s), shares)
                   for i in part]  # fmt: skip
        wait_finished(server.api_url, ids)
        elapsed = time.perf_counter() - began
        stored = len(server.dump()["contacts"])
    print(
        f"sandbox ingest: {stored} contacts in {elapsed:.2f} s = {stored / elapsed:,.0f} contacts/s"
    )


if __name__ == "__main__":
    main()
