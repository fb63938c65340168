"""Run counters, the periodic progress line, the final summary, and masking helpers for logs."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = [
    "PROGRESS_INTERVAL",
    "SUMMARY_PREFIX",
    "Progress",
    "ProgressTicker",
    "RunSummary",
    "format_progress",
    "mask_email",
    "mask_personal_data",
    "mask_phone",
]

SUMMARY_PREFIX = "target-omnisend summary: "
PROGRESS_INTERVAL = 10.0  # seconds between progress lines, from the first record to the end


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


# In free text (a server's error message): anything shaped like an email, and any run of 7 to 15
# digits (with the usual separators, an optional +) standing on its own. Masking too much is safe.
_EMAIL_IN_TEXT = re.compile(r"[^\s@\"'<>()\[\],;:]+@[^\s@\"'<>()\[\],;:]+")
_PHONE_IN_TEXT = re.compile(r"(?<![\w+])(?!\d{4}-\d\d-\d\d)\+?\d(?:[ ().-]{0,2}\d){6,14}(?!\w)")


def mask_personal_data(text: str) -> str:
    """Mask every email and phone number in free text (as `mask_email`, `mask_phone` do)."""
    if "@" in text:
        text = _EMAIL_IN_TEXT.sub(lambda found: mask_email(found.group()), text)
    return _PHONE_IN_TEXT.sub(lambda found: mask_phone(found.group()), text)


class RunSummary:
    """Thread-safe counters for one run and its final summary (progress: `ProgressTicker`).

    Every record read ends in exactly one of: `accepted` (Omnisend confirmed the contact),
    `rejected` (in the rejects file, by reason) or `duplicates_merged` (a later record with the
    same email in the same batch superseded it; the contact it merged into was sent).
    """

    def __init__(
        self,
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
        tags_inline: bool = False,
    ) -> None:
        """Start the clock; `tags_inline`: tags travel in the payload (v5), not by tag calls."""
        self._logger = logger
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self.tags_inline = tags_inline
        self.tag_calls = 0
        self.contacts_with_tags = 0  # v5: confirmed contacts whose payload carried tags
        self.dry_run_path: str | None = None
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

    def add_tagged(self, count: int, calls: int = 1) -> None:
        """Emails the tags endpoint accepted, in `calls` calls (2026)."""
        with self._lock:
            self.tagged += count
            self.tag_calls += calls

    def add_contacts_with_tags(self, count: int) -> None:
        """Confirmed contacts whose payload carried their tags (v5)."""
        with self._lock:
            self.contacts_with_tags += count

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
                "tags": self._tags_outcome(),
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
        if self.dry_run_path is not None:
            result["dry_run_file"] = self.dry_run_path
        return result

    def _tags_outcome(self) -> dict[str, Any]:
        """What happened to tags: how they travelled, and how many contacts got them. Lock held."""
        if self.tags_inline:
            return {"sent_in": "contact payloads (v5)", "contacts": self.contacts_with_tags}
        return {"sent_in": "tag calls", "emails": self.tagged, "calls": self.tag_calls}

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
    rows.append(("tags", _tags_cell(summary)))
    if summary.get("dry_run_file"):
        rows.append(("dry-run payloads file", str(summary["dry_run_file"])))
    for name, values in summary.items():
        if isinstance(values, Mapping) and name not in (
            "rejected_by_reason",
            "requests_by_endpoint",
            "tags",
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


def _tags_cell(summary: Mapping[str, Any]) -> str:
    tags = summary.get("tags") or {}
    if "contacts" in tags:
        return f"carried in the payload of {tags['contacts']} confirmed contacts (v5)"
    emails, calls = tags.get("emails", summary.get("tagged_emails", 0)), tags.get("calls", 0)
    return f"{emails} emails tagged in {calls} tag calls"


def _cell(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


# -- progress ---------------------------------------------------------------------------------


class Progress(NamedTuple):
    """What a progress line reports: counts, what the run waits for, and the ETA.

    `eta_seconds` is the benchmarks' floor for the requests still needed (batch requests and
    tag calls) at the limits in force, counting what their rate-limit windows hold now.
    """

    records_read: int
    confirmed: int
    rejected: int
    in_flight: int
    batches_at_omnisend: int
    batches_to_send: int
    batches_waiting_for_tags: int  # finished at Omnisend, their contacts wait for tag calls
    tag_calls_left: int
    requests_per_minute: float
    tag_calls_per_minute: float | None  # None: no tag calls (v5, dry run)
    waiting_for: tuple[str, ...]
    eta_seconds: float
    input_done: bool
    elapsed: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (the structured log's `extra`)."""
        values = self._asdict()
        values["eta_seconds"] = round(self.eta_seconds, 1)
        values["waiting_for"] = list(self.waiting_for)
        values["elapsed"] = round(self.elapsed, 1)
        return values


def _duration(seconds: float) -> str:
    seconds = max(0, math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_progress(progress: Progress) -> str:
    """The one-line progress message."""
    parts = [
        f"progress: {progress.records_read} records read, {progress.confirmed} confirmed, "
        f"{progress.rejected} rejected, {progress.in_flight} in flight "
        f"({progress.batches_at_omnisend} batches at Omnisend, "
        f"{progress.batches_to_send} batch requests to send"
        + (
            f", {progress.batches_waiting_for_tags} finished batches waiting for tag calls)"
            if progress.batches_waiting_for_tags
            else ")"
        )
    ]
    limits = f"{progress.requests_per_minute:.0f} requests/min"
    if progress.tag_calls_per_minute:
        parts.append(f"{progress.tag_calls_left} tag calls left")
        limits += f", {progress.tag_calls_per_minute:.0f} tag calls/min"
    parts.append("waiting for: " + (", ".join(progress.waiting_for) or "nothing"))
    eta = _duration(progress.eta_seconds)
    if progress.input_done:
        parts.append(f"ETA {eta} at {limits}")
    else:
        parts.append(f"ETA {eta} for the records read so far at {limits} (input still open)")
    return "; ".join(parts)


class ProgressTicker:
    """Logs a progress line every `interval` seconds from `start()` until `stop()`.

    A thread of its own, so the lines keep coming while the run waits for a rate limit or for
    Omnisend after the input ended. `snapshot` builds the figures (None: nothing to report).
    The line goes through the target's logger, so the SDK's structured logging (and Meltano)
    show it like every other line; the figures are in the record's `progress` extra.
    """

    def __init__(
        self,
        logger: logging.Logger,
        snapshot: Callable[[], Progress | None],
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        """Prepare (not start) the ticker."""
        self._logger = logger
        self._snapshot = snapshot
        self.interval = interval
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start ticking (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.log_now()

    def log_now(self) -> None:
        """Log one progress line now (a failure to build it is never fatal)."""
        try:
            progress = self._snapshot()
        except Exception as error:  # a figure read mid-update; the next tick tries again
            self._logger.debug("progress line skipped: %s", error)
            return
        if progress is not None:
            self._logger.info(
                "%s", format_progress(progress), extra={"progress": progress.as_dict()}
            )

    def stop(self) -> None:
        """Stop ticking; returns once the thread ended."""
        self._stopped.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
