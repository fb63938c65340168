"""Run counters, the periodic progress line, the final summary, and masking helpers for logs."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SUMMARY_PREFIX", "RunSummary", "mask_email", "mask_phone"]

SUMMARY_PREFIX = "target-omnisend summary: "


def mask_email(email: str | None) -> str:
    """`jane.doe@example.com` → `j***@e***.com`: enough to recognise, not to harvest."""
    if not email:
        return ""
    local, _, domain = str(email).partition("@")
    if not domain:
        return (local[:1] or "*") + "***"
    host, dot, suffix = domain.rpartition(".")
    masked_domain = f"{host[:1]}***{dot}{suffix}" if dot else f"{domain[:1]}***"
    return f"{local[:1]}***@{masked_domain}"


def mask_phone(phone: str | None) -> str:
    """`+447700900123` → `+44*******23`: the country prefix and last two digits."""
    if not phone:
        return ""
    text = str(phone)
    if len(text) <= 5:
        return "*" * len(text)
    return text[:3] + "*" * (len(text) - 5) + text[-2:]


class RunSummary:
    """Thread-safe counters for one run, with a progress line every `progress_interval` s.

    Every record read ends in exactly one of: `accepted` (Omnisend confirmed the contact),
    `rejected` (in the rejects file, by reason) or `duplicates_merged` (a later record with the
    same email in the same batch superseded it; the contact it merged into was sent).
    """

    def __init__(
        self,
        logger: logging.Logger,
        progress_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start the clock."""
        self._logger = logger
        self._clock = clock
        self._interval = progress_interval
        self._started = clock()
        self._next_progress = self._started + progress_interval
        self._lock = threading.Lock()
        self.records_read = 0
        self.accepted = 0
        self.duplicates_merged = 0
        self.tagged = 0
        self.rejected: Counter[str] = Counter()
        self.dry_run_payloads = 0
        self.unchanged = 0
        self.deletions = 0
        self.sections: dict[str, Any] = {}

    # -- counting -----------------------------------------------------------------------------

    def add_read(self, count: int = 1) -> None:
        """Records read by a sink (after the SDK's stream maps).

        Called once per record, only by the thread reading the input: no lock (others only read).
        """
        self.records_read += count

    def add_accepted(self, count: int) -> None:
        """Contacts Omnisend confirmed (or written to the dry-run file in a dry run)."""
        with self._lock:
            self.accepted += count

    def add_dry_run_payloads(self, count: int) -> None:
        """Contacts written to the dry-run file instead of being sent."""
        with self._lock:
            self.dry_run_payloads += count

    def add_unchanged(self, count: int) -> None:
        """Contacts not re-sent: Omnisend already confirmed exactly this payload."""
        with self._lock:
            self.unchanged += count

    def add_deletions(self, count: int) -> None:
        """Records marking an exit (`_sdc_deleted_at`): not sent, applied as segment exits."""
        with self._lock:
            self.deletions += count

    def add_section(self, name: str, values: Mapping[str, Any]) -> None:
        """A block of figures added to the final summary (segments, dry-run report)."""
        with self._lock:
            self.sections[name] = dict(values)

    def add_duplicates_merged(self, count: int) -> None:
        """Records superseded by a later one with the same key in the same batch."""
        with self._lock:
            self.duplicates_merged += count

    def add_rejected(self, code: str, count: int = 1) -> None:
        """Records written to the rejects file."""
        with self._lock:
            self.rejected[code] += count

    def add_tagged(self, count: int) -> None:
        """Emails sent to the tags endpoint."""
        with self._lock:
            self.tagged += count

    @property
    def rejected_total(self) -> int:
        """All rejected records."""
        with self._lock:
            return sum(self.rejected.values())

    @property
    def unaccounted(self) -> int:
        """Records read that are not yet accepted, rejected or merged (in flight)."""
        with self._lock:
            done = (
                self.accepted
                + self.dry_run_payloads
                + sum(self.rejected.values())
                + self.duplicates_merged
                + self.unchanged
                + self.deletions
            )
            return self.records_read - done

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self._clock() - self._started

    # -- reporting ----------------------------------------------------------------------------

    def maybe_log_progress(self) -> None:
        """Log a progress line when the interval has passed (cheap to call often)."""
        now = self._clock()
        if now < self._next_progress:
            return
        with self._lock:
            if now < self._next_progress:
                return
            self._next_progress = now + self._interval
            read, accepted = self.records_read, self.accepted
            rejected = sum(self.rejected.values())
            merged = self.duplicates_merged + self.dry_run_payloads + self.unchanged
            merged += self.deletions
        elapsed = max(now - self._started, 1e-9)
        self._logger.info(
            "progress: %d records read, %d contacts upserted, %d rejected, %d in flight "
            "(%.0f records/s)",
            read,
            accepted,
            rejected,
            read - accepted - rejected - merged,
            read / elapsed,
        )

    def as_dict(self, client_stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The summary as a JSON-ready dict (request figures from the client's stats)."""
        with self._lock:
            result: dict[str, Any] = {
                "records_read": self.records_read,
                "contacts_upserted": self.accepted,
                "rejected": sum(self.rejected.values()),
                "rejected_by_reason": dict(sorted(self.rejected.items())),
                "duplicates_merged": self.duplicates_merged,
                "dry_run_payloads": self.dry_run_payloads,
                "tagged_emails": self.tagged,
                "unchanged_skipped": self.unchanged,
                "deletions": self.deletions,
                **{name: dict(values) for name, values in self.sections.items()},
            }
        stats = dict(client_stats or {})
        requests_by_endpoint = dict(stats.get("requests_by_endpoint") or {})
        total_requests = stats.get("requests", sum(requests_by_endpoint.values()))
        polls = sum(count for endpoint, count in requests_by_endpoint.items() if "GET" in endpoint)
        result["requests"] = total_requests
        result["requests_by_endpoint"] = requests_by_endpoint
        result["responses_429"] = stats.get("responses_429", stats.get("throttled", 0))
        result["retries"] = stats.get("retries", 0)
        result["polls_share"] = round(polls / total_requests, 4) if total_requests else 0.0
        result["elapsed_seconds"] = round(self.elapsed(), 3)
        return result

    def log_final(self, client_stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Log the one-line JSON summary and a readable table; return the summary."""
        summary = self.as_dict(client_stats)
        self._logger.info("%s%s", SUMMARY_PREFIX, json.dumps(summary, sort_keys=True))
        for line in format_table(summary).splitlines():
            self._logger.info("%s", line)
        return summary


def format_table(summary: Mapping[str, Any]) -> str:
    """A two-column table of the summary for people."""
    rows: list[tuple[str, str]] = [
        ("records read", str(summary["records_read"])),
        ("contacts upserted", str(summary["contacts_upserted"])),
        ("unchanged, not sent", str(summary.get("unchanged_skipped", 0))),
        ("deletions (exits)", str(summary.get("deletions", 0))),
        ("duplicates merged", str(summary["duplicates_merged"])),
        ("dry-run payloads", str(summary["dry_run_payloads"])),
        ("rejected", str(summary["rejected"])),
    ]
    rows += [(f"  {code}", str(n)) for code, n in summary["rejected_by_reason"].items()]
    rows.append(("tagged emails", str(summary["tagged_emails"])))
    for name, values in summary.items():
        if isinstance(values, Mapping) and name not in (
            "rejected_by_reason",
            "requests_by_endpoint",
        ):
            rows += [(f"{name}: {key}", _cell(value)) for key, value in values.items()]
    rows.append(("requests", str(summary["requests"])))
    rows += [(f"  {name}", str(n)) for name, n in sorted(summary["requests_by_endpoint"].items())]
    rows += [
        ("429 responses", str(summary["responses_429"])),
        ("retries", str(summary["retries"])),
        ("polling share", f"{summary['polls_share']:.1%}"),
        ("elapsed", f"{summary['elapsed_seconds']:.1f} s"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def _cell(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)
