"""`TargetOmnisend`: the singer-sdk target, its settings, shared wiring and state safety.

One `OmnisendClient` (so one pacer per brand), one `BatchPipeline`, one `RejectWriter` and one
`RunSummary` per target instance, shared by every sink (sinks drain in parallel threads).

State safety: the SDK calls `_write_state_message` after every sink handed its records to the
pipeline (which returns before Omnisend processed them). The hook records the STATE as pending
together with the pipeline's sequence watermark, and writes it only once every batch up to that
watermark is finished and accounted for. At the end of input (and on SIGTERM) the target waits
for every batch, checks that every record read is accepted, rejected or merged, and only then
writes the latest pending STATE. If anything is unaccounted, the run fails without a STATE.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from singer_sdk import Target, metrics
from singer_sdk import typing as th
from singer_sdk.exceptions import (
    ConfigValidationError,
    MissingKeyPropertiesError,
    RecordsWithoutSchemaException,
)
from singer_sdk.helpers.capabilities import PluginCapabilities
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_omnisend.client import OmnisendError, TransientApiError
from target_omnisend.dry_run import DryRunFileError, DryRunWriter
from target_omnisend.mapping import (
    API_VERSIONS,
    STATUSES,
    MappedContact,
    MappingConfig,
    MappingConfigError,
    compile_plan,
    make_getter,
)
from target_omnisend.mapping_checks import check_status_values
from target_omnisend.mapping_worker import MappingWorker, Outcome, StreamSpec, usable_cpus
from target_omnisend.reader import (
    UNREADABLE,
    BatchFileError,
    SingerLineReader,
    batch_records,
    decode_line,
)
from target_omnisend.rejects import RejectWriter, dumps
from target_omnisend.segments import (
    DEFAULT_MAX_EXIT_RATIO,
    DEFAULT_SEGMENT_TAG,
    EXIT_MODES,
    StreamCompletion,
)
from target_omnisend.sinks import ContactSink
from target_omnisend.summary import Progress, ProgressTicker, RunSummary
from target_omnisend.sync import ExitTicket, SegmentSync, SyncSettings
from target_omnisend.sync_store import DEFAULT_SYNC_STATE_PATH, SyncStoreError

__all__ = ["RunFailed", "TargetOmnisend"]

DEFAULT_API_URLS = {
    "2026-03-15": "https://api.omnisend.com/api",
    "v5": "https://api.omnisend.com/v5",
}
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
# The SDK's load methods (singer_sdk.helpers.capabilities.TargetLoadMethods); only upsert is done.
LOAD_METHODS = ("upsert", "append-only", "overwrite")
TAGS_PER_CALL = 250
_SDK_DRAIN_LINE = "Target sink for '%s' is full. Current size is '%s'. Draining..."
_METRICS_LEVEL_SET: int | None = None  # the metrics level the last target set


class _SdkDrainLines(logging.Filter):
    """The SDK's 'Target sink … is full. Draining...' line, once per batch: DEBUG, not INFO.

    The SDK logs it at INFO with these exact words (`Target._process_record_message`);
    tests/test_operator.py fails if a run at INFO shows it again.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != _SDK_DRAIN_LINE or record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self._logger.isEnabledFor(logging.DEBUG)


class RunFailed(RuntimeError):
    """The run cannot end successfully (records unaccounted, reject ratio exceeded)."""


class EndPhaseStopped(Exception):
    """SIGTERM/SIGINT arrived while the run was ending (raised by the signal handler)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped on signal {signum}")
        self.signum = signum


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(api_url: str) -> None:
    """Refuse URLs that would leak the key: plain http is allowed to loopback hosts only.

    Raises:
        ValueError: The URL is not https (or http to a loopback host), or has no host.
    """
    parts = urlsplit(api_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"api_url {api_url!r} must be an https:// URL.")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            f"api_url {api_url!r} uses plain http to a non-loopback host; the API key would "
            "travel unencrypted. Use https:// (plain http is allowed only to 127.0.0.1/localhost)."
        )


def check_load_method(load_method: object) -> None:
    """Refuse the SDK load methods this target does not do (it always upserts).

    Raises:
        ValueError: `load_method` is set to anything but `upsert`.
    """
    if load_method in (None, "upsert"):
        return
    if load_method == "overwrite":
        raise ValueError(
            "load_method 'overwrite' is not supported: it would delete every Omnisend contact "
            "that is not in this run's input, the brand's other contacts included. "
            "target-omnisend upserts (load_method: upsert); to remove people who left a segment "
            "use full_segment_snapshot: true with on_segment_exit: remove_tag or unsubscribe."
        )
    if load_method == "append-only":
        raise ValueError(
            "load_method 'append-only' is not supported: Omnisend holds one contact per email "
            "or phone, so every write updates that contact (and unchanged contacts are skipped "
            "on re-runs). Use load_method: upsert (the default)."
        )
    raise ValueError(f"load_method {load_method!r} is not supported; use 'upsert'.")


def check_api_key(api_key: Any) -> None:
    """Refuse a key that cannot be one, without repeating any of it.

    A key travels in an HTTP header: a line break or control character in it would end up in
    an exception (with the key) instead of a request.

    Raises:
        ValueError: The key is missing, blank, or holds a character no API key has.
    """
    if not isinstance(api_key, str) or not api_key.strip():
        raise ValueError(
            "Setting 'api_key' is empty: set it to the brand's API key (Omnisend: Store "
            "settings → API keys, shaped brandID-secret)."
        )
    for position, char in enumerate(api_key.strip(), start=1):
        if not "!" <= char <= "~":
            if not char.isprintable():
                kind = "a line break or control character"
            elif char.isspace():
                kind = "a space"
            else:
                kind = "a non-ASCII character"
            raise ValueError(
                f"Setting 'api_key' holds {kind} at position {position}, which no API key has "
                "(the key is not shown). Copy the key again from Omnisend (Store settings → "
                "API keys) without surrounding text or line breaks."
            )


_STATUS_ENUM = th.StringType(allowed_values=list(STATUSES))

CONFIG_SCHEMA = th.PropertiesList(
    th.Property(
        "api_key",
        th.StringType,
        required=True,
        secret=True,
        title="API key",
        description="Omnisend API key (Store settings → API keys). Never logged.",
    ),
    th.Property(
        "api_version",
        th.StringType(allowed_values=list(API_VERSIONS)),
        default="2026-03-15",
        description="Omnisend API generation: 2026-03-15 (current) or v5.",
    ),
    th.Property(
        "api_url",
        th.StringType,
        description=(
            "Base URL including the version path. Default https://api.omnisend.com/api "
            "(2026-03-15) or https://api.omnisend.com/v5 (v5). Plain http only to loopback hosts."
        ),
        examples=["https://api.omnisend.com/api", "http://127.0.0.1:8080/api"],
    ),
    th.Property(
        "field_mapping",
        th.ObjectType(additional_properties=th.StringType),
        description=(
            "Omnisend contact field → record path (dotted for nested values, e.g. `address.city`, "
            "`phones.0`). Without it, conventional column names (email, first_name, zip, …) are "
            "recognised and the log says what matched."
        ),
        examples=[{"email": "email_address", "firstName": "profile.first_name"}],
    ),
    th.Property(
        "custom_properties",
        th.ObjectType(additional_properties=th.StringType),
        description="Omnisend custom property name → record path.",
        examples=[{"lifetime_value": "ltv", "loyalty_tier": "loyalty.tier"}],
    ),
    th.Property(
        "tags",
        th.ArrayType(th.StringType),
        description="Static tags added to every contact (after its batch finished, on 2026).",
        examples=[["source: warehouse"]],
    ),
    th.Property(
        "status_values",
        th.ObjectType(additional_properties=_STATUS_ENUM),
        description=(
            "Source status value → subscribed | unsubscribed | nonSubscribed, for emailStatus "
            "and smsStatus."
        ),
        examples=[{"true": "subscribed", "Y": "subscribed", "opted_out": "unsubscribed"}],
    ),
    th.Property(
        "default_phone_region",
        th.StringType,
        description="ISO 3166-1 alpha-2 region for phones in national format (e.g. GB).",
        examples=["GB", "US"],
    ),
    th.Property(
        "send_welcome_message",
        th.BooleanType,
        default=False,
        description="Ask Omnisend to send its welcome message to new subscribers.",
    ),
    th.Property(
        "lowercase_emails",
        th.BooleanType,
        default=True,
        description="Trim and lower-case emails (Omnisend treats emails case-sensitively).",
    ),
    th.Property(
        "rejects_path",
        th.StringType,
        description=(
            "Where rejected records go, as Singer messages (owner-only file). Default "
            "`.target-omnisend/rejects-<UTC timestamp>.jsonl`."
        ),
    ),
    th.Property(
        "max_reject_ratio",
        th.NumberType(minimum=0, maximum=1),
        description=(
            "Fail the run (non-zero exit, no STATE) when rejected / read exceeds this share, "
            "checked once everything is accounted for. Default: off."
        ),
        examples=[0.05],
    ),
    th.Property(
        "max_requests_per_minute",
        th.IntegerType(minimum=1),
        default=400,
        description="Requests per minute this target may spend (the brand's limit is 400).",
    ),
    th.Property(
        "request_timeout",
        th.NumberType(exclusive_minimum=0),
        default=10,
        description="Seconds to wait for an HTTP response before retrying.",
    ),
    th.Property(
        "max_retry_seconds",
        th.NumberType(exclusive_minimum=0),
        default=120,
        description=(
            "Longest time one request keeps retrying after its first failure (5xx, timeouts, "
            "dropped connections) before the run fails, naming it."
        ),
    ),
    th.Property(
        "max_batches_in_flight",
        th.IntegerType(minimum=1),
        default=64,
        description="Batches processing at Omnisend at once while the next ones are built.",
    ),
    th.Property(
        "dry_run",
        th.BooleanType,
        default=False,
        description="Map and validate only: write would-be payloads, no writes, no STATE.",
    ),
    th.Property(
        "dry_run_path",
        th.StringType,
        description=(
            "Where a dry run writes payloads (owner-only). Default "
            "`.target-omnisend/dry-run-<UTC timestamp>.jsonl`."
        ),
    ),
    th.Property(
        "parallel_mapping",
        th.BooleanType,
        default=True,
        description=(
            "On a machine with more than one CPU, decode, validate and map records in a second "
            "process (from the 2,000th record of a run on), in input order; off: all in one."
        ),
    ),
    th.Property(
        "metrics_log_level",
        th.StringType(allowed_values=["DEBUG", "INFO", "WARNING", "ERROR"]),
        description=(
            "Level of the SDK's METRIC log lines (logger `singer_sdk.metrics`). Default: off "
            "(WARNING), unless SINGER_SDK_LOG_CONFIG sets that logger's level; INFO shows them."
        ),
        examples=["INFO"],
    ),
    th.Property(
        "max_records",
        th.IntegerType(minimum=1),
        description=(
            "Process only the first N records (a trial run): the rest of the input is read and "
            "ignored, no STATE is emitted and no segment exits are applied."
        ),
        examples=[1000],
    ),
    th.Property(
        "segment_tag",
        th.StringType,
        default=DEFAULT_SEGMENT_TAG,
        description=(
            "Tag every segment member carries: a template with {stream} and {segment}. An empty "
            "string turns segment tags off (memberships are still tracked for exits)."
        ),
        examples=["segment: {segment}", "warehouse/{stream}"],
    ),
    th.Property(
        "segment_field",
        th.StringType,
        description=(
            "Record path naming the record's segment(s) (a string or a list of strings). "
            "Default: the stream is the segment."
        ),
        examples=["audience", "segments"],
    ),
    th.Property(
        "create_segments",
        th.BooleanType,
        default=False,
        description=(
            "Create (or find, by name) an Omnisend segment per segment tag, filtered on "
            "`tags anyOf [tag]`. 2026-03-15 API only."
        ),
    ),
    th.Property(
        "on_segment_exit",
        th.StringType(allowed_values=list(EXIT_MODES)),
        default="keep",
        description=(
            "What happens to contacts that left a segment (full snapshots only): keep, "
            "remove_tag, or unsubscribe (destructive: the email channel is unsubscribed, never "
            "for a contact still in another segment, of this run or per the sync store)."
        ),
    ),
    th.Property(
        "full_segment_snapshot",
        th.BooleanType,
        default=False,
        description=(
            "Treat every stream as a full snapshot of its segments even without ACTIVATE_VERSION "
            "(members absent from the run are exits), once the tap is seen to have finished it: "
            "it went on to another stream, or `snapshot_size_field` says all records arrived. "
            "End of input alone is no such sign: a tap that died half way ends it too."
        ),
    ),
    th.Property(
        "snapshot_size_field",
        th.StringType,
        description=(
            "Record path holding the number of records in the stream's snapshot (in a SQL view: "
            "`count(*) over () AS snapshot_size`). With full_segment_snapshot, a stream whose "
            "records all arrived counts as complete, even the tap's last one."
        ),
        examples=["snapshot_size"],
    ),
    th.Property(
        "max_exit_ratio",
        th.NumberType(minimum=0, maximum=1),
        default=DEFAULT_MAX_EXIT_RATIO,
        description=(
            "Largest share of a segment's members allowed to leave in one run; above it nobody "
            "is removed and the run exits non-zero saying why."
        ),
    ),
    th.Property(
        "reconcile_existing_tag",
        th.BooleanType,
        default=False,
        description=(
            "When the sync store does not know a segment but contacts already carry its tag in "
            "Omnisend, count them as members: those absent from a full snapshot lose the tag. "
            "Off: they keep it and the run reports how many there are."
        ),
    ),
    th.Property(
        "sync_state_path",
        th.StringType,
        default=DEFAULT_SYNC_STATE_PATH,
        description=(
            "SQLite sync store: fingerprints of what Omnisend confirmed and segment memberships, "
            "so re-runs send only changes (owner-only; one run per brand at a time)."
        ),
    ),
    th.Property(
        "full_resync",
        th.BooleanType,
        default=False,
        description="Ignore the sync store and send every contact.",
    ),
    th.Property(
        "resync_after_days",
        th.NumberType(minimum=0),
        default=7,
        description=(
            "Re-send unchanged contacts confirmed this many days ago or more (repairs drift from "
            "edits made in Omnisend); 0 re-sends always."
        ),
    ),
    th.Property(
        "load_method",
        th.StringType(allowed_values=list(LOAD_METHODS)),
        default="upsert",
        description=(
            "How contacts are written: `upsert` (the only method: Omnisend keys a contact by its "
            "email or phone, so a write updates the contact or creates it). `append-only` and "
            "`overwrite` (the SDK's other values) are refused: Omnisend cannot hold two contacts "
            "for one email, and deleting the brand's other contacts is not this target's to do; "
            "use `full_segment_snapshot` with `on_segment_exit` to have people leave a segment."
        ),
    ),
).to_dict()


class TargetOmnisend(Target):
    """Singer target that upserts contacts into Omnisend through its batch API."""

    name = "target-omnisend"
    config_jsonschema = CONFIG_SCHEMA
    default_sink_class = ContactSink
    capabilities = [
        *Target.capabilities,
        PluginCapabilities.ACTIVATE_VERSION,
        PluginCapabilities.BATCH,
    ]
    message_reader_class = SingerLineReader

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Validate the settings and prepare the shared run objects (no I/O yet)."""
        metrics_level_before = metrics.get_metrics_logger().level
        super().__init__(*args, **kwargs)
        self._quiet_sdk_chatter(metrics_level_before)
        self._forget_null_settings()
        try:
            self.mapping_config = self._check_settings()
        except (ValueError, MappingConfigError) as error:
            raise ConfigValidationError(str(error), errors=[str(error)]) from None
        stamp = _utc_stamp()
        self.dry_run: bool = bool(self.config.get("dry_run", False))
        self.rejects = RejectWriter(
            self.config.get("rejects_path") or f".target-omnisend/rejects-{stamp}.jsonl"
        )
        self.summary = RunSummary(self.logger, tags_inline=self.tags_inline())
        self.dry_run_writer = DryRunWriter(
            self.config.get("dry_run_path") or f".target-omnisend/dry-run-{stamp}.jsonl",
            self.logger,
        )
        if self.dry_run:
            self.summary.dry_run_path = str(self.dry_run_writer.path)
        self.progress = ProgressTicker(self.logger, self._progress_snapshot)
        self._input_done = False
        self._tag_emails_sending = 0
        self._lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._client: Any = None
        self._pipeline: Any = None
        self._pending_state: tuple[dict, int] | None = None
        self._tag_buffers: dict[tuple[str, ...], list[str]] = {}
        self._tag_lock = threading.Lock()
        self._failure: str | None = None
        self._finished = False
        self._finishing = False  # the end-of-input STATE waits for the final checks
        self._busy = 0
        self._terminate_requested: int | None = None
        # What the end of the run is doing (None while records are read): a signal then stops it.
        self._end_phase: str | None = None
        self._stop_signal: int | None = None
        self._end_phase_when_stopped: str | None = None
        self._state_withheld_logged = False
        self._untaggable_warned = False
        self._sync: SegmentSync | None = None
        max_records = self.config.get("max_records")
        self.max_records: int | None = int(max_records) if max_records else None
        self._records_taken = 0
        self._ended_normally = False
        self._input_broken = False  # a line that cannot be read ended the input
        self._lean_sinks: dict[Any, ContactSink] = {}
        # identifier → the sink holding a staged contact with it (see ContactSink._stage)
        self.staged_in: dict[str, ContactSink] = {}
        self._mapping_worker: MappingWorker | None = None
        self._max_record_age_seconds = self._MAX_RECORD_AGE_IN_MINUTES * 60
        size_field = self.config.get("snapshot_size_field") or None
        self._completion = StreamCompletion(make_getter(size_field) if size_field else None)

    # -- logging --------------------------------------------------------------------------------

    def _quiet_sdk_chatter(self, metrics_level_before: int) -> None:
        """METRIC lines off unless asked for; the SDK's per-drain lines only at DEBUG.

        The SDK sets its metrics logger to the plugin's log level (INFO) in `__init__`, over
        any level a SINGER_SDK_LOG_CONFIG file gave it: that level (`metrics_level_before`),
        else `metrics_log_level`, else WARNING wins.
        """
        global _METRICS_LEVEL_SET
        metrics_logger = metrics.get_metrics_logger()
        configured = self.config.get("metrics_log_level")
        if configured:
            level = logging.getLevelName(str(configured).upper())
        elif metrics_level_before not in (logging.NOTSET, _METRICS_LEVEL_SET):
            level = metrics_level_before  # a logging config file set it
        else:
            level = logging.WARNING
        metrics_logger.setLevel(level)
        _METRICS_LEVEL_SET = level
        if not any(isinstance(f, _SdkDrainLines) for f in self.logger.filters):
            self.logger.addFilter(_SdkDrainLines(self.logger))

    def _progress_snapshot(self) -> Progress | None:
        """The figures of a progress line (see `summary.ProgressTicker`)."""
        summary = self.summary
        if not summary.records_read and not self._input_done:
            return None
        pipeline, client = self._pipeline, self._client
        at_omnisend = waiting_chunks = undelivered = 0
        latency = 0.0
        if pipeline is not None:
            figures = pipeline.progress()
            at_omnisend, waiting_chunks = figures.at_omnisend, figures.waiting_to_send
            undelivered, latency = figures.results_to_deliver, figures.latency
        staged = sum(sink.staged_contacts for sink in list(self._sinks_active.values()))
        batches_to_send = waiting_chunks + math.ceil(staged / self.batch_limit)
        with self._tag_lock:
            queued = [len(emails) for emails in self._tag_buffers.values() if emails]
        sending = self._tag_emails_sending
        tag_calls_left = sum(math.ceil(n / TAGS_PER_CALL) for n in queued)
        tag_calls_left += math.ceil(sending / TAGS_PER_CALL)
        unaccounted = summary.unaccounted
        tags_by_call = not self.tags_inline() and not self.dry_run
        if tags_by_call:
            # Contacts still in flight will want tag calls as the confirmed ones did so far.
            confirmed = summary.accepted + summary.unchanged
            share = min(1.0, summary.tagged / confirmed) if confirmed else 1.0
            tag_calls_left += math.ceil(share * unaccounted / TAGS_PER_CALL)
        rate = float(self.config.get("max_requests_per_minute", 400))
        tag_rate: float | None = None
        waiting: list[str] = []
        eta = 0.0
        if client is not None:
            from target_omnisend.client import WINDOW_MARGIN

            eta = client.pacer.seconds_for(batches_to_send)
            if tags_by_call:
                tags_pacer = client.tags_pacer
                tag_rate = tags_pacer.limit * 60.0 / tags_pacer.window * (1 + WINDOW_MARGIN)
                eta = max(eta, tags_pacer.seconds_for(tag_calls_left))
                if (sending or queued) and tags_pacer.delay() > 0:
                    waiting.append("the tags rate limit")
            if (waiting_chunks or sending) and client.pacer.delay() > 0:
                waiting.append("the contacts rate limit")
        if at_omnisend:
            waiting.append("batches processing at Omnisend")
        if at_omnisend or batches_to_send:  # the last batch still has to be processed
            eta += latency
        if not waiting:
            if undelivered and tags_by_call:
                waiting.append("tag calls")
            elif not self._input_done:
                waiting.append("input from the tap")
            elif unaccounted:
                waiting.append("results to be accounted for")
        return Progress(
            records_read=summary.records_read,
            confirmed=summary.accepted,
            rejected=summary.rejected_total,
            in_flight=unaccounted,
            batches_at_omnisend=at_omnisend,
            batches_to_send=batches_to_send,
            batches_waiting_for_tags=undelivered if tags_by_call else 0,
            tag_calls_left=tag_calls_left,
            requests_per_minute=rate,
            tag_calls_per_minute=tag_rate,
            waiting_for=tuple(waiting),
            eta_seconds=eta,
            input_done=self._input_done,
            elapsed=summary.elapsed(),
        )

    # -- settings -----------------------------------------------------------------------------

    def _forget_null_settings(self) -> None:
        """A setting given as null (JSON `null`, an empty Meltano value) is not set: its default
        applies, and the log says so (the SDK's schema lets every optional setting be null)."""
        for name in [name for name, value in self._config.items() if value is None]:
            del self._config[name]
            if name != "api_key":  # refused just after, as empty
                self.logger.warning("Setting %r is null: its default applies.", name)

    def _check_settings(self) -> MappingConfig:
        check_api_key(self.config.get("api_key"))
        version = self.config.get("api_version") or "2026-03-15"
        if version not in API_VERSIONS:
            raise ValueError(
                f"api_version {version!r} is not supported; use one of {', '.join(API_VERSIONS)}."
            )
        check_api_url(self.api_url)
        check_load_method(self.config.get("load_method"))
        mapping_config = MappingConfig.from_target_config(self.config)
        compile_plan({}, mapping_config)  # unknown fields, names, status values fail here
        if mapping_config.field_mapping is not None:  # else decided per stream schema
            check_status_values(self.config, mapping_config.field_mapping)
        if mapping_config.static_tags and not isinstance(self.config.get("tags"), list):
            raise ValueError("Setting 'tags' must be a list of strings.")
        self.sync_settings = SyncSettings.from_config(self.config, version)
        return mapping_config

    @property
    def api_version(self) -> str:
        """The configured API generation."""
        return str(self.config.get("api_version") or "2026-03-15")

    @property
    def api_url(self) -> str:
        """The configured base URL, or the generation's default."""
        return str(self.config.get("api_url") or DEFAULT_API_URLS[self.api_version])

    # -- shared objects -----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The one OmnisendClient of this run (created on first use)."""
        with self._lock:
            if self._client is None:
                from target_omnisend.client import OmnisendClient

                self._client = OmnisendClient(
                    self.config["api_key"],
                    api_version=self.api_version,
                    api_url=self.api_url,
                    max_requests_per_minute=int(self.config.get("max_requests_per_minute", 400)),
                    request_timeout=float(self.config.get("request_timeout", 10)),
                    logger=self.logger,
                    max_retry_seconds=float(self.config.get("max_retry_seconds", 120)),
                )
            return self._client

    @property
    def pipeline(self) -> Any:
        """The one BatchPipeline of this run (created on first use)."""
        with self._lock:
            if self._pipeline is None:
                from target_omnisend.pipeline import BatchPipeline

                self._pipeline = BatchPipeline(
                    self.client,
                    max_in_flight=int(self.config.get("max_batches_in_flight", 64)),
                    on_result=self._on_batch_result,
                )
            return self._pipeline

    @property
    def sync(self) -> SegmentSync:
        """The run's segments and sync store (opened, and the run lock taken, on first use)."""
        with self._lock:
            if self._sync is None:
                self._sync = SegmentSync(
                    self.sync_settings,
                    self.api_url,
                    self.config["api_key"],
                    dry_run=self.dry_run,
                    logger=self.logger,
                )
                if not self.dry_run:
                    self._sync.set_member_lister(self._list_tagged_page)
            return self._sync

    def _list_tagged_page(
        self, tag: str, cursor: str | None, limit: int
    ) -> tuple[list[str], int, str | None]:
        """One page of the contacts carrying `tag` in Omnisend: their emails, the page's size."""
        from target_omnisend.client import identifiers_of

        if cursor is None and limit > 1:
            self.logger.info("The sync store does not know segment %r: listing its members.", tag)
        page, after = self.client.contacts_page(cursor, limit, tag=tag)
        emails = [i for contact in page for i in identifiers_of(contact) if "@" in i]
        return emails, len(page), after

    @property
    def batch_limit(self) -> int:
        """Items per batch for the configured generation."""
        return 1000 if self.api_version == "v5" else 100

    def tags_inline(self) -> bool:
        """True where tags travel inside the contact payload (v5)."""
        return self.api_version == "v5"

    # -- called by sinks ----------------------------------------------------------------------

    def submit_contacts(
        self,
        contacts: Sequence[MappedContact],
        ticket: Any,
        encoded: Sequence[bytes | None] | None = None,
    ) -> None:
        """Hand contacts to the pipeline (returns before Omnisend processed them).

        `encoded`: their payloads as `client.encode_json(payload, finite=True)` writes them.
        """
        if not contacts:
            return
        self.pipeline.submit(list(contacts), ticket, encoded)
        self._flush_state_if_ready()

    def write_dry_run(
        self,
        stream: str,
        contacts: Sequence[MappedContact],
        encoded: Sequence[bytes | None] | None = None,
    ) -> None:
        """Append would-be payloads to the dry-run file (owner-only); `encoded`: their lines."""
        self.dry_run_writer.write(stream, contacts, encoded)

    # -- batch results ------------------------------------------------------------------------

    def _on_batch_result(self, ticket: Any, result: Any) -> None:
        """Pipeline callback: account for every contact of a finished batch."""
        self.account(ticket, result.accepted, result.rejected)

    def account(
        self,
        ticket: Any,
        accepted: Sequence[MappedContact],
        rejected: Sequence[tuple[MappedContact, str]],
    ) -> None:
        """Account for finished contacts: accepted → summary and tags; rejected → rejects."""
        ticket.sink.handle_result(ticket, accepted, rejected)

    def add_tags_later(self, pairs: Sequence[tuple[str | None, Sequence[str]]]) -> None:
        """Queue (email, tags) of confirmed contacts; send full groups of 250 emails (2026)."""
        ready: list[tuple[tuple[str, ...], list[str]]] = []
        with self._tag_lock:
            for email, tags in pairs:
                if not tags:
                    continue
                if email is None:
                    self._warn_untaggable()
                    continue
                tag_set = tuple(sorted(set(tags)))
                buffer = self._tag_buffers.setdefault(tag_set, [])
                buffer.append(email)
                if len(buffer) >= TAGS_PER_CALL:
                    ready.append((tag_set, buffer[:]))
                    buffer.clear()
        for tag_set, emails in ready:
            self._send_tags(tag_set, emails)

    def _warn_untaggable(self) -> None:
        if not self._untaggable_warned:
            self._untaggable_warned = True
            self.logger.warning(
                "Contacts identified by phone only cannot be tagged through the tags endpoint "
                "(it takes emails); their tags are not sent."
            )

    def flush_tags(self) -> None:
        """Send every queued tag group (before a STATE is written and at the end)."""
        with self._tag_lock:
            groups = [(tags, emails) for tags, emails in self._tag_buffers.items() if emails]
            self._tag_buffers = {}
        for tag_set, emails in groups:
            self._send_tags(tag_set, emails)

    def _send_tags(self, tag_set: tuple[str, ...], emails: list[str]) -> None:
        self._tag_emails_sending += len(emails)  # read by the progress line
        try:
            calls = self.client.add_tags(list(tag_set), emails)
        finally:
            self._tag_emails_sending -= len(emails)
        self.summary.add_tagged(len(emails), calls)
        self.sync.memberships_confirmed(self.sync.segment_keys_of_tags(tag_set), emails)

    def report_unaccounted(self, message: str) -> None:
        """A batch could not be accounted for: the run will fail without STATE."""
        with self._lock:
            if self._failure is None:
                self._failure = message
        self.logger.error("%s", message)

    # -- state safety -------------------------------------------------------------------------

    def _write_state_message(self, state: dict) -> None:
        """Hold the STATE until every batch submitted before it is finished and accounted for."""
        if self.dry_run or self.max_records is not None:
            if not self._state_withheld_logged:
                why = "Dry run" if self.dry_run else "max_records is set (a trial run)"
                self.logger.info("%s: no STATE is emitted.", why)
                self._state_withheld_logged = True
            return
        watermark = self._pipeline.outstanding_seq() if self._pipeline is not None else 0
        with self._state_lock:
            self._pending_state = (state, watermark)
        self._flush_state_if_ready()

    def _flush_state_if_ready(self) -> None:
        with self._state_lock:
            pending = self._pending_state
            if pending is None or self._failure is not None or self._finishing:
                return
            state, watermark = pending
            if self._pipeline is not None and not self._pipeline.completed_through(watermark):
                return
            self.flush_tags()
            self._pending_state = None
            self._emit_state(state)

    def _emit_state(self, state: dict) -> None:
        self.rejects.flush()  # the records this STATE covers are on disk before it is written
        super()._write_state_message(state)

    # -- message handling: pump the pipeline, defer termination while busy ---------------------

    @contextlib.contextmanager
    def _busy_section(self) -> Iterator[None]:
        self._busy += 1
        try:
            yield
        finally:
            self._leave_busy()

    def _leave_busy(self) -> None:
        """End a busy section; a SIGTERM that arrived meanwhile is handled now."""
        self._busy -= 1
        if self._busy == 0 and self._terminate_requested is not None:
            self._terminate(self._terminate_requested)

    def _process_record_message(self, message_dict: dict) -> None:
        if self.max_records is not None and not self._take_record():
            return
        self._busy += 1  # _busy_section without a generator: this runs once per record
        try:
            stream = message_dict.get("stream")
            sink = self._lean_sinks.get(stream)
            record = message_dict.get("record")
            completion = self._completion
            if stream != completion.last:
                completion.switch(stream)
            if completion.size_getter is not None and type(record) is dict:
                completion.record(stream, record)
            if sink is not None and type(record) is dict:
                self._process_record_lean(sink, record)
            elif not isinstance(record, dict):  # one record at fault: a reject, not a stop
                self._reject_unusable(message_dict)
            else:
                super()._process_record_message(message_dict)
                self._remember_lean_sink(stream)
            self._after_record()
        finally:
            self._leave_busy()

    def _take_mapped_lines(
        self,
        sinks: Sequence[ContactSink],
        lines: Sequence[bytes],
        outcomes: Sequence[Outcome | None],
    ) -> None:
        """A chunk of RECORD lines back from the mapping worker, in input order.

        Consecutive contacts of one sink are staged together (up to the room left in its
        batch); a line the worker did not map goes the usual way.
        """
        self._busy += 1
        try:
            index, count = 0, len(lines)
            while index < count:
                sink = sinks[index]
                if outcomes[index] is None:  # invalid, a reject, a deletion...: as usual
                    self._process_record_message(self._decode_taken(lines[index]))
                    index += 1
                    continue
                if sink.stream_name != self._completion.last:
                    self._completion.switch(sink.stream_name)
                end = index + 1
                last = min(count, index + max(1, sink.drain_size - sink.staged_contacts))
                while end < last and sinks[end] is sink and outcomes[end] is not None:
                    end += 1
                sink.take_mapped(lines, outcomes, index, end)  # type: ignore[arg-type]
                sink.record_counter_metric.increment(end - index)
                self._drain_if_full(sink)
                index = end
            self._after_record()
        finally:
            self._leave_busy()

    def _reject_unusable(self, message: dict) -> None:
        """A RECORD whose `record` is not an object, or could not be read: rejected."""
        sink = self.get_sink(str(message.get("stream")))  # no schema yet: the SDK's error
        reason = message.get(UNREADABLE)
        if reason is None:
            kind = type(message.get("record")).__name__
            reason = f"The RECORD message holds a {kind} where Singer puts the record's object."
        sink.reject_unusable(message.get("record"), str(reason))  # type: ignore[attr-defined]

    @staticmethod
    def _decode_taken(line: bytes) -> dict:
        try:
            return decode_line(line)
        except ValueError:  # the envelope was JSON, so the whole line is: never seen
            raise InvalidInputLine("A RECORD line is not valid JSON.") from None

    def _after_record(self) -> None:
        if self._pipeline is not None:
            self._pipeline.pump()
            self._flush_state_if_ready()

    def _take_record(self) -> bool:
        """Count a record against max_records; False once the trial has enough."""
        assert self.max_records is not None
        if self._records_taken >= self.max_records:
            if self._records_taken == self.max_records:
                self._records_taken += 1
                self.logger.info(
                    "max_records %d reached: the rest of the input is ignored.", self.max_records
                )
            return False
        self._records_taken += 1
        return True

    def _process_record_lean(self, sink: ContactSink, record: dict) -> None:
        """The SDK's record path for a stream with no stream map, minus what it cannot need.

        Same calls and order as `Target._process_record_message`, without the record copy, the
        identity transform, the sink lookup, `preprocess_record` (not overridden) and
        `_after_process_record` (a no-op in ContactSink); `is_full` and the record-age check
        are read without their property chains. Streams with stream maps, flattening or `_sdc`
        metadata columns take the SDK's own path.
        """
        sink._remove_sdc_metadata_from_record(record)
        context = sink._get_context(record)
        sink._validate_and_parse(record)
        sink._singer_validate_message(record)
        sink.tally_record_read()
        sink.process_record(record, context)
        sink.record_counter_metric.increment()
        self._drain_if_full(sink)

    def _drain_if_full(self, sink: ContactSink) -> None:
        if sink.staged_contacts >= sink.drain_size:  # sink.is_full without the property call
            self.logger.debug(
                "Target sink for '%s' is full. Current size is '%s'. Draining...",
                sink.stream_name,
                sink.current_size,
            )
            self.drain_one(sink)
        if time.time() - self._last_full_drain_at > self._max_record_age_seconds:
            self._handle_max_record_age()

    def _remember_lean_sink(self, stream: Any) -> None:
        """After a record took the SDK path: may this stream's next records take the lean one?"""
        from singer_sdk.mapper import SameRecordTransform
        from singer_sdk.sinks import Sink

        maps = self.mapper.stream_maps.get(stream) or []
        sink = self._sinks_active.get(stream)
        lean = (
            len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and maps[0].stream_alias == stream
            and not maps[0].flattening_enabled
            and isinstance(sink, ContactSink)
            and not sink.include_sdc_metadata_properties
            and type(sink).preprocess_record is Sink.preprocess_record
        )
        if lean:
            self._lean_sinks[stream] = sink
            self._map_in_worker(stream, sink)  # type: ignore[arg-type]
        else:
            self._lean_sinks.pop(stream, None)

    def _map_in_worker(self, stream: str, sink: ContactSink) -> None:
        """Let the mapping worker map this stream (not when each record names its segments)."""
        worker = self._mapping_worker
        if worker is None or self.sync.settings.segment_field is not None:
            return
        size_field = self.config.get("snapshot_size_field")
        if size_field and size_field.split(".")[0] in sink.schema.get("properties", {}):
            return  # its records' snapshot sizes are read here, as they arrive
        worker.register(
            sink,
            StreamSpec(
                stream=stream,
                schema=sink.schema,
                mapping_config=self.mapping_config,
                key_properties=tuple(sink.key_properties or ()),
                tags=sink.segment_tags,
                validate=sink.validates,
                validate_formats=bool(sink.validate_field_string_format),
                fingerprints=self.sync.store is not None,
                dry_run=self.dry_run,
            ),
        )

    def _process_schema_message(self, message_dict: dict) -> None:
        with self._busy_section():
            self._lean_sinks.pop(message_dict.get("stream"), None)  # the SDK may replace the sink
            if self._mapping_worker is not None:
                self._mapping_worker.unregister(message_dict.get("stream"))
            super()._process_schema_message(message_dict)

    def _process_state_message(self, message_dict: dict) -> None:
        with self._busy_section():
            super()._process_state_message(message_dict)

    def _process_activate_version_message(self, message_dict: dict) -> None:
        with self._busy_section():
            super()._process_activate_version_message(message_dict)

    def _process_batch_message(self, message_dict: dict) -> None:
        """BATCH: each record of its files takes the RECORD path, in order.

        The SDK's own handling passes a file's records to `Sink.process_batch` in one list,
        past validation, stream maps, mapping, de-duplication and rejects; here they are read
        one at a time (memory stays flat) and behave exactly as RECORD messages would, the
        STATE after the BATCH waiting for them like any STATE.
        """
        with self._busy_section():
            stream = message_dict.get("stream")
            for record in batch_records(message_dict):
                self._process_record_message({"type": "RECORD", "stream": stream, "record": record})

    # -- end of input, termination ------------------------------------------------------------

    def listen(self, file_input: Any = None) -> None:
        """Read the input; the garbage collector spares the objects that live for the whole run.

        Every record allocates short-lived dicts and strings freed by reference counting; the
        cyclic collector scanning them and the long-lived SDK objects cost ~15% of the CPU time,
        so start-up objects are frozen and collections are rarer (memory stays flat: nothing
        here depends on cycle collection).
        """
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        if self._parallel_mapping():
            self._mapping_worker = MappingWorker(self._take_mapped_lines)
            self.message_reader.router = self._mapping_worker
        self.progress.start()
        try:
            super().listen(file_input)
        except InvalidInputLine as error:  # the records before the line are still loaded
            self._stop_mapping_worker()
            self._finish_before_bad_line(error)
        except (OmnisendError, RunFailed):
            if not self._finished:  # the run summary is logged once, whatever ended the run
                self._finished = True
                self._close_files()
                self.summary.log_final(self._client_stats())
            raise
        finally:
            self.progress.stop()
            self._stop_mapping_worker()

    def _finish_before_bad_line(self, error: InvalidInputLine) -> None:
        """Load what was read before a line that cannot be read, then fail saying how far.

        Everything before the line is drained, sent and accounted for (its STATE written once
        Omnisend confirmed it); segment exits are not applied (the input is incomplete).
        """
        self._input_broken = True
        self.logger.error("%s", error)
        self.process_endofpipe()
        summary = self.summary
        others = summary.records_read - summary.accepted - summary.rejected_total
        raise RunFailed(
            f"The input stopped at a line that cannot be read (see the error above). Of the "
            f"{summary.records_read} records before it, {summary.accepted} were loaded into "
            f"Omnisend, {summary.rejected_total} rejected (in {self.rejects.path}) and {others} "
            "merged into later ones, unchanged or deletions; its STATE was written once they "
            "were confirmed. Nothing from that line on was loaded: fix it and run again."
        ) from None

    def _parallel_mapping(self) -> bool:
        """A second process maps records: allowed, a CPU for it, and no max_records trial."""
        return (
            self.config.get("parallel_mapping", True) is not False
            and self.max_records is None
            and usable_cpus() > 1
            and isinstance(self.message_reader, SingerLineReader)
        )

    def _stop_mapping_worker(self) -> None:
        worker, self._mapping_worker = self._mapping_worker, None
        if worker is None:
            return
        self.message_reader.router = None
        worker.close()
        if worker.stopped_reason is not None:
            self.logger.warning("%s: records were mapped in this process.", worker.stopped_reason)
        if worker.lines_in_worker or worker.lines_in_main:
            self.summary.add_section(
                "parallel_mapping",
                {
                    "in_worker": worker.lines_in_worker,
                    "in_main": worker.lines_in_main,
                    "worker_peak_rss_mb": round(worker.worker_peak_rss_kib / 1024, 1),
                },
            )

    def process_endofpipe(self) -> None:
        """Drain every sink, wait for every batch, account for every record, then write STATE."""
        self._busy += 1  # a SIGTERM now stops the end phases (_handle_termination)
        self._finishing = True
        self._ended_normally = True
        self._input_done = True
        try:
            self._end_phase = "sending the last records"
            self._stop_mapping_worker()  # the reader handed back every line it took
            super().process_endofpipe()
            self._finish()
        except EndPhaseStopped as stopped:
            self._stopped_while_ending(stopped.signum)
        finally:
            self._busy -= 1

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            self._end_phase = "waiting for the last batches"
            if self._pipeline is not None:
                self._pipeline.wait_all()
            self._end_phase = "adding tags"
            self.flush_tags()
            self._check_accounting()
            if self._sync is not None:
                self._end_segments()
            self._end_phase = "writing the final STATE"
            self._check_reject_ratio()
            with self._state_lock:
                pending, self._pending_state = self._pending_state, None
            if pending is not None and not self.dry_run and self.max_records is None:
                self._emit_state(pending[0])
        finally:
            self._end_phase = None  # closing is quick: a signal now waits for it
            self._close_files()
            if self._sync is not None:
                self.summary.add_section("segments", self._sync.stats)
                if self.dry_run:
                    self.summary.add_section("dry_run_would", self._sync.report.to_dict()["would"])
                    self.logger.info("Dry run report: %s", dumps(self._sync.report.to_dict()))
                self._sync.close()
            self.progress.stop()
            self.summary.log_final(self._client_stats())
            if self.rejects.total:
                self.logger.info(
                    "%d rejected records are in %s", self.rejects.total, self.rejects.path
                )

    # -- segments at the end of a run ----------------------------------------------------------

    def _end_segments(self) -> None:
        """Apply exits and create segments, only after a complete, untruncated input."""
        sync = self.sync
        truncated = self.max_records is not None and self._records_taken > self.max_records
        if not self._ended_normally or truncated or self._input_broken:
            why = "the input was truncated by max_records" if truncated else "the run was stopped"
            if self._input_broken:
                why = "the input stopped at a line that cannot be read"
            self.logger.info("Segment exits are not computed: %s.", why)
            return
        self._check_completion(sync)
        self._apply_exits(sync)
        sync.register_segments()
        if sync.settings.create_segments and not self.dry_run:
            self._end_phase = "creating segments"
            for tag in sync.segment_tags_with_members():
                segment_id = self.client.find_or_create_segment(tag, tag)
                sync.stats["segments_created"] += 1
                self.logger.info(
                    "Omnisend segment %r (id %s) holds the tagged contacts.", tag, segment_id
                )

    def _check_completion(self, sync: SegmentSync) -> None:
        """Tell the sync which streams the tap finished; say why the others get no exits."""
        complete, incomplete = set(), {}
        for source in self._sinks_seen_sources():
            reason = self._completion.why_incomplete(source)
            for stream_map in self.mapper.stream_maps.get(source, []):
                if reason is None:
                    complete.add(stream_map.stream_alias)
                else:
                    incomplete[stream_map.stream_alias] = reason
        sync.streams_complete(complete)
        if sync.settings.full_segment_snapshot and sync.tracks_exits:
            for stream, reason in sorted(incomplete.items()):
                self.logger.warning(
                    "Stream %r is not treated as a full snapshot, so nobody leaves its segments: "
                    "%s.",
                    stream,
                    reason,
                )

    def _sinks_seen_sources(self) -> list[str]:
        """The tap's stream names that sent records this run."""
        return [name for name in self.mapper.stream_maps if self._completion.saw(name)]

    def _apply_exits(self, sync: SegmentSync) -> None:
        refused: list[str] = []
        self._end_phase = "deciding segment exits (member listings)"
        decisions = sync.plan_exits()
        self._end_phase = "applying segment exits"
        for stream, segment_key, decision in decisions:
            if decision.exceeds_ratio:
                refused.append(
                    f"segment {segment_key!r} of stream {stream!r}: {decision.skipped_reason}"
                )
                continue
            if decision.skipped_reason:
                self.logger.info("Segment %r: %s.", segment_key, decision.skipped_reason)
            actions = sync.exit_actions(segment_key, decision)
            if decision.leaving:
                self.logger.info(
                    "Segment %r: %d of %d members left (on_segment_exit=%s).",
                    segment_key,
                    len(decision.leaving),
                    decision.members_before,
                    sync.settings.on_segment_exit,
                )
            if self.dry_run:
                sync.report.add("untagged", actions.untag)
                sync.report.add("unsubscribed", actions.unsubscribe)
                continue
            if actions.untag and actions.tag:
                emails = sorted(key for key in actions.untag if "@" in key)
                self.client.remove_tags([actions.tag], emails)
                sync.stats["exits_untagged"] += len(emails)
            if actions.unsubscribe:
                self.pipeline.submit(
                    sync.unsubscribes(actions.unsubscribe), ExitTicket(sync, segment_key)
                )
            sync.exits_applied(segment_key, actions.leaving - actions.unsubscribe)
        if self._pipeline is not None:
            self._pipeline.wait_all()
        if refused:
            raise RunFailed(
                "Segment exits refused, nobody was removed from "
                + "; ".join(refused)
                + " No STATE was written."
            )

    def _client_stats(self) -> dict[str, Any] | None:
        """The client's request counters as a dict (None when nothing was sent)."""
        if self._client is None:
            return None
        stats = self._client.stats
        for name in ("snapshot", "as_dict", "to_dict"):
            method = getattr(stats, name, None)
            if callable(method):
                return dict(method())
        return dict(stats) if isinstance(stats, Mapping) else None

    def _check_accounting(self) -> None:
        unaccounted = self.summary.unaccounted
        if self._failure is not None or unaccounted:
            detail = self._failure or f"{unaccounted} records were not accounted for"
            raise RunFailed(f"{detail}; no STATE was written, so the next run replays them.")

    def _check_reject_ratio(self) -> None:
        limit = self.config.get("max_reject_ratio")
        read = self.summary.records_read
        if limit is None or not read:
            return
        ratio = self.summary.rejected_total / read
        if ratio > float(limit):
            raise RunFailed(
                f"{self.summary.rejected_total} of {read} records were rejected ({ratio:.1%}), "
                f"above max_reject_ratio {float(limit):.1%}; see {self.rejects.path}. "
                "No STATE was written."
            )

    def _close_files(self) -> None:
        self.rejects.close()
        self.dry_run_writer.close()

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: finish in-flight batches, write state for confirmed records, exit.

        While the run is ending (waiting for batches, listing members, tag calls, exits) there
        is nothing left to finish that is worth waiting for: the phase stops at once
        (:meth:`_stopped_while_ending`).
        """
        if self._end_phase is not None and self._stop_signal is None:
            self.logger.info(
                "Received termination signal %d while %s: stopping now.", signum, self._end_phase
            )
            self._stop_signal = signum
            self._end_phase_when_stopped = self._end_phase
            if self._client is not None:
                self._client.stop()  # requests of every thread end, retries too
            if self._sync is not None:
                self._sync.stop.set()
            raise EndPhaseStopped(signum)
        self.logger.info("Received termination signal %d: finishing in-flight batches.", signum)
        if self._busy:
            self._terminate_requested = signum
            return
        self._terminate(signum)

    def _stopped_while_ending(self, signum: int) -> None:
        """A signal stopped an end phase: no (further) exits; STATE only for what was confirmed.

        The latest pending STATE is written only if every batch before it is accounted for and
        no tag for its contacts waits unsent; otherwise none is, and the next run replays.
        """
        phase = self._end_phase_when_stopped or "ending"
        self._end_phase = None
        written = False
        with self._state_lock:
            pending, self._pending_state = self._pending_state, None
        with self._tag_lock:
            tags_waiting = any(self._tag_buffers.values())
        confirmed = (
            pending is not None
            and self._failure is None
            and not tags_waiting
            and (self._pipeline is None or self._pipeline.completed_through(pending[1]))
        )
        if confirmed and pending is not None and not self.dry_run and self.max_records is None:
            self._emit_state(pending[0])
            written = True
        if not self._finished:
            self._finished = True
            self._close_files()
            self.summary.log_final(self._client_stats())
        if self._sync is not None:
            self._sync.close()
        self.logger.error(
            "Stopped on signal %d while %s: segment exits not yet applied were not applied "
            "(the next complete run applies them); %s",
            signum,
            phase,
            "STATE written for what Omnisend confirmed."
            if written
            else "no STATE written: the next run replays what was not confirmed.",
        )
        sys.exit(0 if written or pending is None else 1)

    def _terminate(self, signum: int) -> None:
        self._terminate_requested = None
        self._busy += 1
        self._finishing = True
        self._input_done = True
        try:
            self._end_phase = "finishing in-flight batches"
            self._stop_mapping_worker()  # lines it holds were never staged: not read, no STATE
            self.drain_all(is_endofpipe=True)
            self._finish()
        except EndPhaseStopped as stopped:
            self._stopped_while_ending(stopped.signum)
        except Exception as error:  # reported as one line; no STATE was written
            self.logger.error("Stopped on signal %d: %s", signum, error)
            sys.exit(1)
        self.logger.info("Stopped on signal %d after accounting for every record.", signum)
        sys.exit(0)

    # -- CLI ----------------------------------------------------------------------------------

    @classmethod
    def cb_config(cls, ctx: Any, param: Any, value: tuple[str, ...]) -> Any:
        """Read `--config` files; a missing or non-JSON file is one clear line and exit 1."""
        for path in value:
            if path == "ENV":
                continue
            problem = _config_file_problem(path)
            if problem is not None:
                cls.logger.error("%s", problem)
                sys.exit(1)
        config_input = super().cb_config(ctx, param, value)
        config_input.files = [path for path in value if path != "ENV"]  # for the key's source
        return config_input

    @classmethod
    def _fill_secrets_from_env(cls, config_input: Any) -> None:
        """Secrets the config files lack come from the environment; log where the key came from.

        The SDK reads TARGET_OMNISEND_* variables only with `--config ENV`; a secret (the API
        key) is taken from its variable whenever the files do not hold it, so a key never has
        to be written into a file. The log names the source, never the key.
        """
        config = config_input.config
        files = getattr(config_input, "files", [])
        for name, schema in cls.config_jsonschema["properties"].items():
            if not schema.get("secret"):
                continue
            variable = f"{cls._env_var_prefix}{name.upper()}"
            from_env = os.environ.get(variable)
            if config_input.parse_env and from_env:
                source = f"the environment ({variable}, --config ENV)"
            elif config.get(name):
                source = "the config file " + ", ".join(files) if files else "the config"
            elif from_env:
                config[name] = from_env
                source = f"the environment ({variable}); the config file has none"
            else:
                continue
            cls.logger.info("Setting %s: taken from %s.", name, source)

    @classmethod
    def invoke(cls, **kwargs: Any) -> None:  # type: ignore[override]
        """Run the target; known failures end as one log line and exit code 1 (no traceback)."""
        config_input = kwargs.get("config")
        if config_input is not None and not kwargs.get("about"):
            cls._fill_secrets_from_env(config_input)
        try:
            super().invoke(**kwargs)
        except TransientApiError as error:
            cls.logger.error(
                "%s Omnisend did not answer as it should after every retry: nothing after the "
                "last confirmed batch is covered by a STATE, so running again later resumes "
                "there (upserts are idempotent).",
                error,
            )
            sys.exit(1)
        except (
            OmnisendError,
            RunFailed,
            MappingConfigError,
            SyncStoreError,
            InvalidInputLine,
            RecordsWithoutSchemaException,
            MissingKeyPropertiesError,
            DryRunFileError,
            BatchFileError,
        ) as error:
            cls.logger.error("%s", error)
            sys.exit(1)


def _config_file_problem(path: str) -> str | None:
    """Why a `--config` file cannot be used (None: it is a JSON object)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"Config file {path!r} does not exist."
    except OSError as error:
        return f"Config file {path!r} cannot be read: {error.strerror or error}."
    except UnicodeDecodeError:
        return f"Config file {path!r} is not UTF-8 text (it must be a JSON object)."
    try:
        value = json.loads(text)
    except ValueError as error:
        line = getattr(error, "lineno", None)
        where = f" (line {line})" if line else ""
        return f"Config file {path!r} is not valid JSON{where}: it must be a JSON object."
    if not isinstance(value, dict):
        return f"Config file {path!r} holds JSON but not an object of settings."
    return None


def summary_from_log_line(line: str) -> Mapping[str, Any] | None:
    """Parse the JSON summary out of a log line (for tests and tooling)."""
    marker = "target-omnisend summary: "
    if marker not in line:
        return None
    return json.loads(line.split(marker, 1)[1])


if __name__ == "__main__":
    TargetOmnisend.cli()
