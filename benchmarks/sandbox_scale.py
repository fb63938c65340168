"""The sandbox at scale: ingest rate, memory per contact, and how fast GET /contacts pages.

Usage: ``python benchmarks/sandbox_scale.py [--contacts 1000000] [--clients 2] [--pages 5]``.
Starts ``omnisend-sandbox`` as a child process (no rate limit, no processing delay), posts 2026
batches of 100 contacts shaped like the target's payloads (email and phone identifiers with
dated channels, a full profile, custom properties, a segment tag: 60% ``segment: vip``, 40%
``segment: news``; every 100,000th contact also carries ``rare``, every 50th is unsubscribed)
from ``--clients`` threads, and waits until every batch is finished. Then it reads the server's
resident memory (``VmRSS`` of the child, less its size before the first batch) and times
``GET /contacts`` pages of 250 for each filter: none, ``tag`` (a big and a rare one), ``email``,
``phone``, ``status``, ``segmentID`` (a segment on the big tag) and the page after a cursor 20
pages deep, ``--pages`` times each (median and slowest, wall milliseconds seen by the client).

Goals (issue 21): every page < 100 ms at 1M contacts, memory <= 2 KB per contact, ingest
>= 10,000 contacts/s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import requests
from sandbox_ingest import item_v5

from target_omnisend.sandbox.process import SandboxProcess

HEADERS = {
    "Authorization": "Omnisend-API-Key bench-secret",
    "Omnisend-Version": "2026-03-15",
    "Content-Type": "application/json",
}
BATCH = 100


def item(n: int) -> dict[str, Any]:
    """A contact as the target sends one on 2026-03-15 (``sandbox_ingest``'s v5 shape, re-dated)."""
    contact = item_v5(n)
    for identifier in contact["identifiers"]:
        for channel in identifier["channels"].values():
            channel["statusChangedAt"] = channel.pop("statusDate")
            if n % 50 == 0 and identifier["type"] == "email":
                channel["status"] = "unsubscribed"
    contact["tags"] = ["segment: vip" if n % 5 < 3 else "segment: news"]
    if n % 100_000 == 7:
        contact["tags"].append("rare")
    return contact


def post_batches(api: str, starts: list[int]) -> list[str]:
    """POST the batches of 100 starting at ``starts``; their ids."""
    ids = []
    with requests.Session() as session:
        session.headers.update(HEADERS)
        for start in starts:
            items = [item(n) for n in range(start, start + BATCH)]
            body = msgspec.json.encode({"method": "POST", "endpoint": "contacts", "items": items})
            reply = session.post(f"{api}/batches", data=body, timeout=120)
            reply.raise_for_status()
            ids.append(reply.json()["batchID"])
    return ids


def wait_finished(api: str, ids: list[str]) -> None:
    """Poll until every batch is finished."""
    with requests.Session() as session:
        session.headers.update(HEADERS)
        for batch_id in ids:
            while session.get(f"{api}/batches/{batch_id}", timeout=60).json()["status"] not in (
                "finished", "stopped",
            ):  # fmt: skip
                time.sleep(0.01)


def rss_bytes(pid: int) -> int:
    """A process's resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def time_pages(session: requests.Session, api: str, params: dict[str, Any], runs: int) -> dict:
    """Median and slowest wall ms of ``runs`` pages with ``params``; the page's size."""
    times, size = [], 0
    for _ in range(runs):
        began = time.perf_counter()
        reply = session.get(f"{api}/contacts", params={"limit": 250, **params}, timeout=120)
        times.append((time.perf_counter() - began) * 1000)
        reply.raise_for_status()
        size = len(reply.json()["contacts"])
    return {"median_ms": statistics.median(times), "max_ms": max(times), "contacts": size}


def deep_cursor(session: requests.Session, api: str, pages: int) -> str:
    """The ``after`` cursor ``pages`` pages into the unfiltered listing."""
    params: dict[str, Any] = {"limit": 250}
    for _ in range(pages):
        body = session.get(f"{api}/contacts", params=params, timeout=120).json()
        params["after"] = body["paging"]["cursors"]["after"]
    return str(params["after"])


def main() -> None:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--pages", type=int, default=5)
    args = parser.parse_args()
    with SandboxProcess() as sandbox:
        sandbox.configure(
            rate_limit_per_minute=10**9, tags_rate_limit_per_minute=10**9,
            segments_write_per_minute=10**9, segments_read_per_minute=10**9,
            batch_processing_delay=0.0, segment_build_seconds=0.0,
        )  # fmt: skip
        assert sandbox.pid is not None
        api = sandbox.api_url
        before = rss_bytes(sandbox.pid)
        starts = list(range(0, args.contacts, BATCH))
        shares = [starts[i :: args.clients] for i in range(args.clients)]
        began = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            ids = [i for part in pool.map(lambda s: post_batches(api, s), shares) for i in part]
        wait_finished(api, ids)
        elapsed = time.perf_counter() - began
        contacts = len(starts) * BATCH
        memory = rss_bytes(sandbox.pid) - before
        print(
            f"sandbox at scale: {contacts:,} contacts ingested in {elapsed:.1f} s = "
            f"{contacts / elapsed:,.0f} contacts/s; server memory {memory / 2**20:,.0f} MiB = "
            f"{memory / contacts:,.0f} bytes/contact"
        )
        with requests.Session() as session:
            session.headers.update(HEADERS)
            segment = session.post(f"{api}/segments", timeout=60, json={
                "name": "vip", "conditionGroups": [{"conditions": [{
                    "entity": "contact", "junction": "and",
                    "filters": [{"property": "tags", "operator": "anyOf",
                                 "value": ["segment: vip"]}]}]}]})  # fmt: skip
            segment.raise_for_status()
            probes = {
                "no filter": {},
                "tag (60%)": {"tag": "segment: vip"},
                "tag (rare)": {"tag": "rare"},
                "tag, limit 1": {"tag": "segment: news", "limit": 1},
                "email": {"email": f"ada.lovelace.{contacts // 2}@example.com"},
                "phone": {"phone": f"+3706{contacts // 3 % 10**7:07d}"},
                "status (98%)": {"status": "subscribed"},
                "status (2%)": {"status": "unsubscribed"},
                "segmentID": {"segmentID": segment.json()["segmentID"]},
                "20 pages deep": {"after": deep_cursor(session, api, 20)},
            }
            for name, params in probes.items():
                figures = time_pages(session, api, params, args.pages)
                print(
                    f"  GET /contacts {name:>14}: median {figures['median_ms']:6.1f} ms, "
                    f"slowest {figures['max_ms']:6.1f} ms ({figures['contacts']} contacts)"
                )


if __name__ == "__main__":
    main()
