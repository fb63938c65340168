"""``omnisend-sandbox``: run the sandbox by hand (prints its URL first on stdout)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence

from target_omnisend.sandbox import heap
from target_omnisend.sandbox.server import SandboxServer
from target_omnisend.sandbox.settings import SandboxSettings


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="omnisend-sandbox", description="An Omnisend-compatible API server on loopback."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--time-scale", type=float, help="N times faster clock (default 1)")
    parser.add_argument("--rate-limit", type=int, help="requests/min per brand (default 400)")
    parser.add_argument("--batch-delay", type=float, help="sandbox seconds (default 0.5)")
    parser.add_argument("--tags-on-upsert", choices=("replace", "merge"))
    parser.add_argument("--older-status-date", choices=("ignore", "override"))
    parser.add_argument("--seed", type=int, help="seed of the fault dice")
    parser.add_argument("--persist", metavar="PATH", help="write the dump here at shutdown")
    parser.add_argument("--settings", metavar="JSON", help="any other settings, as JSON")
    return parser


def settings_from(args: argparse.Namespace) -> SandboxSettings:
    """Settings from parsed arguments."""
    changes = json.loads(args.settings) if args.settings else {}
    if not isinstance(changes, dict):
        raise ValueError("--settings must be a JSON object")
    flags = {
        "time_scale": args.time_scale,
        "rate_limit_per_minute": args.rate_limit,
        "batch_processing_delay": args.batch_delay,
        "tags_on_upsert": args.tags_on_upsert,
        "older_status_date": args.older_status_date,
        "seed": args.seed,
        "persist_path": args.persist,
    }
    changes.update({name: value for name, value in flags.items() if value is not None})
    return SandboxSettings().changed(**changes)


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except (ValueError, TypeError) as exc:
        print(f"omnisend-sandbox: {exc}", file=sys.stderr)
        return 2
    heap.freeze_after_batches()  # this process is the sandbox's alone
    server = SandboxServer(settings, host=args.host, port=args.port).start()
    print(server.url, flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
