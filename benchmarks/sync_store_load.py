"""The sync store's cost on a first load: what a run asks and writes per batch of 1000 contacts.

Usage: ``python benchmarks/sync_store_load.py [--contacts 600000]``. For each batch of 1000 new
contacts (random-looking emails, as a real list has): the entrant lookup (``non_members``), the
fingerprints Omnisend confirmed (``confirm``) and the memberships (``add_members``), then
``close`` (the last merge). Prints the wall and CPU seconds and the database size.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from target_omnisend.sync_store import SyncStore

SEGMENT = "segment: vip"
BATCH = 1000


def main() -> None:
    """Run the measurement and print the figure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=600_000)
    args = parser.parse_args()
    draw = random.Random(1)
    keys = [f"user.{draw.getrandbits(40):x}.{n}@example{n % 97}.com" for n in range(args.contacts)]
    with tempfile.TemporaryDirectory(prefix="omnisend-store-") as tmp:
        path = Path(tmp) / "sync.sqlite"
        store = SyncStore(path, "brand-bench")
        began, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            store.non_members(SEGMENT, chunk)
            store.confirm([(key, "0" * 32) for key in chunk])
            store.add_members(SEGMENT, chunk)
        store.close()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
    print(
        f"sync store: {args.contacts} contacts in batches of {BATCH}: "
        f"wall {wall:.1f} s, CPU {cpu:.1f} s, files {size_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
