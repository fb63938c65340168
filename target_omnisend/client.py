"""`OmnisendClient`: HTTP for both API generations, pacing, retries, batches, tags, segments.

Every request goes through one `SlidingWindowPacer` shared process-wide per brand and limit
(`shared_pacer`), and tag calls also through the tags endpoint's own pacer. Retries: a 429
honours `Retry-After`, then the body's `retryAfter`, then exponential backoff with jitter, and
pauses every caller of the shared pacer; 5xx, timeouts and dropped connections are retried with
exponential backoff and jitter up to `max_retries`. 401/403/410 and other request errors raise
`FatalApiError` naming the setting to fix; 413 raises `PayloadTooLargeError` (the pipeline splits
the batch). No redirect is ever followed (the key and the contacts would travel to another host):
a 3xx answer raises `RedirectRefusedError`, at once. The API key never appears in a message, log
line or repr, and emails and phones in any text that came from the server are masked (before it
is cut short).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import ipaddress
import json
import logging
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
import requests
from requests.adapters import HTTPAdapter

from target_omnisend.pacer import SlidingWindowPacer, acquire_together
from target_omnisend.summary import mask_personal_data

__all__ = [
    "DIALECTS",
    "BatchStatus",
    "ClientStats",
    "Dialect",
    "FatalApiError",
    "ItemOutcome",
    "OmnisendClient",
    "OmnisendError",
    "PayloadTooLargeError",
    "RedirectRefusedError",
    "TransientApiError",
    "encode_json",
    "shared_pacer",
]

MAX_BODY_BYTES = 1_000_000
BATCH_HEAD = b'{"method":"POST","endpoint":"contacts","items":['
TAG_EMAILS_PER_CALL = 250
TAGS_PER_CALL = 100
CONTACTS_PAGE = 250
DEFAULT_MAX_RETRY_SECONDS = 120.0
BATCH_LIST_PAGE = 100
SEGMENTS_PAGE = 50
# The brand's limit counts arrivals at Omnisend; starts are timed at the client, so the window is
# widened a little to absorb latency differences between requests.
WINDOW_MARGIN = 0.02
BASE_RATE_PER_MINUTE = 400  # Omnisend's per-brand limit, the reference for scaled pacing
TAGS_RATE_PER_MINUTE = 60  # the tags endpoint's own limit
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
RETRYABLE_STATUSES = frozenset({408, 500, 502, 503, 504, 520, 522, 524})
SERVER_TEXT_LIMIT = 300  # characters of a server's text kept in a message (after masking)


# -- errors ---------------------------------------------------------------------------------------


class OmnisendError(Exception):
    """Base of the client's errors."""


class FatalApiError(OmnisendError):
    """A request Omnisend will not accept as sent; the message names the setting to fix."""

    def __init__(self, message: str, status: int | None = None) -> None:
        """Keep the HTTP status (None when no answer applies)."""
        super().__init__(message)
        self.status = status


class PayloadTooLargeError(FatalApiError):
    """413: the request body is too large (the pipeline splits the batch and retries)."""


class RequestStopped(OmnisendError):
    """The run is stopping (SIGTERM): the request was not sent, or its retries were given up."""


class RedirectRefusedError(FatalApiError):
    """A 3xx answer: never followed (the key or contacts would go elsewhere), never retried."""


class TransientApiError(OmnisendError):
    """Retries exhausted for 429/5xx/timeouts/dropped connections."""


# -- JSON -----------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        if value.is_nan() or value.is_infinite():
            raise ValueError("NaN and infinite numbers cannot be sent as JSON")
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(
    default=_json_default, ensure_ascii=False, allow_nan=False, separators=(",", ":")
)


# msgspec writes Decimals as numbers with their own digits (12.30 stays 12.30: the same JSON value
# as json's float 12.3) and is several times faster; what it cannot write exactly goes to json.
_FAST_ENCODER = msgspec.json.Encoder(enc_hook=_json_default, decimal_format="number")


def encode_json(value: Any, *, finite: bool = False) -> bytes:
    """Compact UTF-8 JSON; Decimal, datetime, date, UUID and sets handled defensively.

    Args:
        value: What to encode.
        finite: The caller guarantees that no float or Decimal inside is NaN or infinite (a
            mapped contact's payload: `mapping` rejects such values), so msgspec's output is
            not scanned for them (three scans cost as much as the encoding itself).
    """
    try:
        encoded = _FAST_ENCODER.encode(value)
    except (TypeError, ValueError, UnicodeEncodeError, msgspec.EncodeError):
        encoded = None  # json encodes what msgspec refused, or raises its own clear error
    if encoded is not None and finite:
        return encoded
    # msgspec writes a NaN Decimal as NaN and a NaN float as null: json refuses both (and a real
    # null or a string holding these letters is simply encoded again, identically).
    if encoded is None or b"NaN" in encoded or b"Infinity" in encoded or b"null" in encoded:
        return _ENCODER.encode(value).encode("utf-8")
    return encoded


# -- dialects -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """What differs between API generations."""

    name: str
    default_url: str
    auth_header: str
    auth_scheme: str  # prefix before the key ("" for none)
    version_header: str | None
    id_field: str
    batch_limit: int
    has_tags_endpoint: bool
    has_segments: bool
    cursor_paging: bool
    problem_errors: bool  # RFC 9457 problem+json with errors[]; else {error, fields}

    def headers(self, api_key: str) -> dict[str, str]:
        """Authentication and version headers for `api_key`."""
        headers = {self.auth_header: f"{self.auth_scheme}{api_key}"}
        if self.version_header:
            headers["Omnisend-Version"] = self.version_header
        return headers

    def error_text(self, body: Any) -> str:
        """A one-line description of an error body of this generation."""
        return describe_error(body)


DIALECTS: dict[str, Dialect] = {
    "2026-03-15": Dialect(
        name="2026-03-15",
        default_url="https://api.omnisend.com/api",
        auth_header="Authorization",
        auth_scheme="Omnisend-API-Key ",
        version_header="2026-03-15",
        id_field="id",
        batch_limit=100,
        has_tags_endpoint=True,
        has_segments=True,
        cursor_paging=True,
        problem_errors=True,
    ),
    "v5": Dialect(
        name="v5",
        default_url="https://api.omnisend.com/v5",
        auth_header="X-API-KEY",
        auth_scheme="",
        version_header=None,
        id_field="contactID",
        batch_limit=1000,
        has_tags_endpoint=False,
        has_segments=False,
        cursor_paging=False,
        problem_errors=False,
    ),
}


def describe_error(body: Any) -> str:
    """One line from a problem+json body, a v5 `{error, fields}` body or anything else.

    Not cut short: a caller masks it first (`OmnisendClient.server_text`).
    """
    if not isinstance(body, Mapping):
        return str(body) if body not in (None, "") else ""
    parts: list[str] = []
    main = body.get("detail") or body.get("error") or body.get("title") or body.get("message")
    if main:
        parts.append(str(main))
    fields: list[str] = []
    for item in body.get("errors") or []:
        if isinstance(item, Mapping):
            where = item.get("field") or item.get("path") or ""
            fields.append(f"{where}: {item.get('message') or item.get('code') or ''}".strip(": "))
    extra = body.get("fields")
    if isinstance(extra, Mapping):
        fields.extend(f"{name}: {message}" for name, message in extra.items())
    if fields:
        parts.append("(" + "; ".join(fields) + ")")
    if body.get("instance"):
        parts.append(f"[trace {body['instance']}]")
    return " ".join(parts) or json.dumps(body)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(api_url: str) -> str:
    """The URL without a trailing slash; raises `ValueError` if it could leak the key."""
    parts = urlsplit(api_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"api_url {api_url!r} must be an https:// URL with a host.")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            f"api_url {api_url!r} uses plain http to a non-loopback host, so the API key would "
            "travel unencrypted. Use https:// (plain http is allowed only to 127.0.0.1, ::1 "
            "or localhost)."
        )
    return api_url.rstrip("/")


# -- shared pacers --------------------------------------------------------------------------------

_PACERS: dict[tuple[str, str, int, float], SlidingWindowPacer] = {}
_PACERS_LOCK = threading.Lock()


def brand_of(api_key: str) -> str:
    """The brand part of a `<brandID>-<secret>` key (a digest when the key has no brand)."""
    brand, dash, _ = api_key.partition("-")
    if dash and brand:
        return brand
    return "k" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


def pacing_window(
    requests_per_minute: int, nominal_per_minute: int = BASE_RATE_PER_MINUTE
) -> tuple[int, float]:
    """(limit, window seconds) for a per-minute rate of a bucket Omnisend limits per minute.

    Up to the bucket's nominal limit (400/min for all requests, 60/min for tags) the window is
    a minute. Above it (only useful against a sandbox whose time runs faster) the window shrinks
    so bursts stay within the nominal limit per scaled minute.
    """
    if requests_per_minute <= nominal_per_minute:
        return requests_per_minute, 60.0
    return nominal_per_minute, 60.0 * nominal_per_minute / requests_per_minute


def shared_pacer(brand: str, bucket: str, requests_per_minute: int) -> SlidingWindowPacer:
    """The process-wide pacer of a brand's bucket ("all" or "tags") at a rate."""
    nominal = TAGS_RATE_PER_MINUTE if bucket == "tags" else BASE_RATE_PER_MINUTE
    limit, window = pacing_window(requests_per_minute, nominal)
    window *= 1.0 + WINDOW_MARGIN
    key = (brand, bucket, limit, window)
    with _PACERS_LOCK:
        pacer = _PACERS.get(key)
        if pacer is None:
            pacer = _PACERS[key] = SlidingWindowPacer(limit, window)
        return pacer


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchStatus:
    """A batch's progress. `status`: pending, inProgress, finished, stopped or missing (404)."""

    id: str
    status: str
    total: int
    finished: int
    errors: int

    @property
    def done(self) -> bool:
        """Processing ended (finished or stopped) or the batch is gone."""
        return self.status in ("finished", "stopped", "missing")


@dataclass(frozen=True)
class ItemOutcome:
    """One processed batch item: the request as sent and Omnisend's answer to it."""

    request: dict
    response_code: int
    ok: bool
    error: str | None


class ClientStats:
    """Thread-safe request counters by "METHOD /path-template" and status."""

    def __init__(self) -> None:
        """Start at zero."""
        self._lock = threading.Lock()
        self._by_endpoint: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.rate_limited = 0
        self.retries = 0
        self.polls = 0
        self.waited_seconds = 0.0

    def count(self, endpoint: str, status: int | str) -> None:
        """Count one request attempt and its outcome (status code, "timeout", "connection")."""
        with self._lock:
            self._by_endpoint[endpoint][str(status)] += 1
            if status == 429:
                self.rate_limited += 1
            if endpoint in ("GET /batches", "GET /batches/{id}"):
                self.polls += 1

    def add_retry(self) -> None:
        """Count one retry."""
        with self._lock:
            self.retries += 1

    def add_wait(self, seconds: float) -> None:
        """Count time spent waiting for the pacer."""
        if seconds:
            with self._lock:
                self.waited_seconds += seconds

    @property
    def requests(self) -> int:
        """Every request attempt."""
        with self._lock:
            return sum(sum(codes.values()) for codes in self._by_endpoint.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counters (the target's summary reads these names)."""
        with self._lock:
            by_status = {
                endpoint: dict(sorted(codes.items()))
                for endpoint, codes in sorted(self._by_endpoint.items())
            }
            by_endpoint = {endpoint: sum(codes.values()) for endpoint, codes in by_status.items()}
            total = sum(by_endpoint.values())
            return {
                "requests": total,
                "requests_by_endpoint": by_endpoint,
                "requests_by_status": by_status,
                "responses_429": self.rate_limited,
                "rate_limited": self.rate_limited,
                "retries": self.retries,
                "polls": self.polls,
                "polls_share": round(self.polls / total, 4) if total else 0.0,
                "pacer_wait_seconds": round(self.waited_seconds, 3),
            }

    as_dict = to_dict
    snapshot = to_dict


# -- the client -----------------------------------------------------------------------------------


class OmnisendClient:
    """Omnisend's API for contacts in batches, tags and segments, paced and retried."""

    def __init__(
        self,
        api_key: str,
        api_version: str = "2026-03-15",
        api_url: str | None = None,
        max_requests_per_minute: int = 400,
        request_timeout: float = 10.0,
        pacer: SlidingWindowPacer | None = None,
        logger: logging.Logger | None = None,
        tags_requests_per_minute: int | None = None,
        max_retries: int = 8,
        *,
        tags_pacer: SlidingWindowPacer | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], object] = time.sleep,
        pool_size: int = 16,
        max_retry_seconds: float = DEFAULT_MAX_RETRY_SECONDS,
    ) -> None:
        """Validate settings, share pacers per brand, open one keep-alive session.

        Args:
            api_key: `<brandID>-<secret>`; never logged or shown.
            api_version: "2026-03-15" or "v5".
            api_url: base URL including the version path; plain http only to loopback hosts.
            max_requests_per_minute: budget of this process for the brand (all endpoints).
            request_timeout: seconds to wait for an answer before retrying.
            pacer: a pacer to use instead of the shared one (tests).
            logger: where to log retries (default: this module's logger).
            tags_requests_per_minute: the tags endpoint's own limit; default 60, scaled up
                alike when `max_requests_per_minute` is above 400 (a faster sandbox clock).
            max_retries: retries of one request after 5xx/timeouts/dropped connections.
            tags_pacer: a tags pacer to use instead of the shared one (tests).
            backoff_base: first backoff in seconds (doubles per retry, with jitter).
            backoff_cap: longest single backoff in seconds.
            sleep: how to wait (tests).
            pool_size: keep-alive connections kept for concurrent threads.
            max_retry_seconds: the longest one request keeps retrying after its first failure
                (5xx, timeouts, dropped connections), so a dead server ends a run in bounded time.
        """
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("Setting 'api_key' is required.")
        if api_version not in DIALECTS:
            raise ValueError(
                f"api_version {api_version!r} is not supported; use one of {', '.join(DIALECTS)}."
            )
        if max_requests_per_minute < 1:
            raise ValueError("max_requests_per_minute must be at least 1.")
        self.dialect = DIALECTS[api_version]
        self.api_url = check_api_url(api_url or self.dialect.default_url)
        self.request_timeout = float(request_timeout)
        self.max_requests_per_minute = int(max_requests_per_minute)
        self.max_retries = int(max_retries)
        self.max_retry_seconds = float(max_retry_seconds)
        self._stopping = threading.Event()
        self.logger = logger or logging.getLogger(__name__)
        self.stats = ClientStats()
        self._thread_waits = threading.local()  # pacer seconds waited by each thread
        self._api_key = api_key.strip()
        brand = brand_of(self._api_key)
        self.pacer = pacer or shared_pacer(brand, "all", self.max_requests_per_minute)
        if tags_requests_per_minute is None:
            scale = max(1.0, self.max_requests_per_minute / BASE_RATE_PER_MINUTE)
            tags_requests_per_minute = int(TAGS_RATE_PER_MINUTE * scale)
        self.tags_pacer = tags_pacer or shared_pacer(brand, "tags", tags_requests_per_minute)
        # Above Omnisend's 400/min only a sandbox whose clock runs faster answers: its backoffs
        # shrink alike (as the pacer's window does), so retries run out in the same scaled time.
        time_scale = max(1.0, self.max_requests_per_minute / BASE_RATE_PER_MINUTE)
        self._backoff_base = backoff_base / time_scale
        self._backoff_cap = backoff_cap / time_scale
        self._sleep = sleep
        self._random = random.Random()
        self._session = self._open_session(pool_size)

    def paced_seconds_in_thread(self) -> float:
        """Seconds the calling thread's requests have waited for the pacer so far."""
        return getattr(self._thread_waits, "seconds", 0.0)

    def unanswered_in_thread(self) -> int:
        """Attempts of the calling thread's requests that got no final answer but may have been
        carried out (a timeout after connecting, a dropped connection, a 5xx): a retried
        `POST /batches` may then leave a duplicate batch that appears later."""
        return getattr(self._thread_waits, "unanswered", 0)

    def _count_unanswered(self) -> None:
        self._thread_waits.unanswered = self.unanswered_in_thread() + 1

    def _open_session(self, pool_size: int) -> requests.Session:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update(
            {
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": "target-omnisend",
                **self.dialect.headers(self._api_key),
            }
        )
        session.trust_env = False  # no proxies or .netrc credentials picked up by surprise
        return session

    def __repr__(self) -> str:
        return f"OmnisendClient(api_version={self.dialect.name!r}, api_url={self.api_url!r})"

    def stop(self) -> None:
        """The run is stopping: no request starts from now on, and retries end at once."""
        self._stopping.set()

    def _pause(self, seconds: float) -> None:
        """Wait before a retry; a stop ends the wait."""
        if self._sleep is time.sleep:
            self._stopping.wait(seconds)
        else:
            self._sleep(seconds)

    def close(self) -> None:
        """Close the keep-alive connections."""
        self._session.close()

    def __enter__(self) -> OmnisendClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP core -------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Remove the key (and its secret part) from any text."""
        secret = self._api_key.partition("-")[2]
        text = text.replace(self._api_key, "***")
        return text.replace(secret, "***") if len(secret) >= 4 else text

    def server_text(self, text: str, limit: int = SERVER_TEXT_LIMIT) -> str:
        """Text that came from the server, safe to log: key removed, emails and phones masked,
        then cut to `limit` characters (cutting first could leave part of either)."""
        safe = mask_personal_data(self._scrub(text))
        return safe if len(safe) <= limit else safe[: limit - 1] + "…"

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of base * 2^attempt."""
        ceiling = min(self._backoff_cap, self._backoff_base * (2**attempt))
        return ceiling * (0.5 + 0.5 * self._random.random())

    def _retry_after(self, response: requests.Response, attempt: int) -> float:
        """Seconds to wait after a 429: header, then body `retryAfter`, then backoff."""
        header = response.headers.get("Retry-After")
        if header:
            try:
                return max(0.0, float(header))
            except ValueError:
                pass
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, Mapping):
            try:
                return max(0.0, float(body["retryAfter"]))
            except (KeyError, TypeError, ValueError):
                pass
        return self._backoff(attempt)

    def request(
        self,
        method: str,
        template: str,
        path: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        data: bytes | None = None,
        tags_endpoint: bool = False,
        allow_404: bool = False,
        retry_conflict: int = 0,
    ) -> requests.Response:
        """One paced API call with retries; returns the final 2xx (or allowed 404) response.

        Args:
            method: HTTP method.
            template: the path template, used for stats ("/batches/{id}").
            path: the concrete path (defaults to `template`).
            params: query parameters.
            body: JSON body (encoded with `encode_json`), or `data`: pre-encoded bytes.
            tags_endpoint: also pace through the tags endpoint's own pacer.
            allow_404: return a 404 instead of raising.
            retry_conflict: how many 409 answers to wait out (segments building).

        Raises:
            FatalApiError: 4xx that retrying cannot fix (PayloadTooLargeError for 413).
            TransientApiError: 429/5xx/timeouts/dropped connections beyond the retry budget.
        """
        endpoint = f"{method} {template}"
        url = self.api_url + (path or template)
        payload = data if data is not None else (encode_json(body) if body is not None else None)
        failures = 0
        throttled = 0
        conflicts = 0
        failing_since = 0.0
        while True:
            if self._stopping.is_set():
                raise RequestStopped(f"{endpoint} was not sent: the run is stopping.")
            pacers = (self.tags_pacer, self.pacer) if tags_endpoint else (self.pacer,)
            # A tag call is counted by both limits: one slot in each, at the same instant.
            waited, stamp = acquire_together(pacers)
            self.stats.add_wait(waited)
            self._thread_waits.seconds = self.paced_seconds_in_thread() + waited
            try:
                try:
                    response = self._session.request(
                        method,
                        url,
                        params=params,
                        data=payload,
                        timeout=self.request_timeout,
                        allow_redirects=False,  # never: see RedirectRefusedError
                    )
                finally:
                    for pacer in pacers:
                        pacer.restamp(stamp)
            except requests.Timeout as error:
                self.stats.count(endpoint, "timeout")
                if not isinstance(error, requests.ConnectTimeout):  # the request was sent
                    self._count_unanswered()
                problem = f"no answer within {self.request_timeout:g} s"
                remedy = "raise request_timeout if Omnisend is slow, or run again later"
            except requests.ConnectionError as error:
                self.stats.count(endpoint, "connection")
                if _unresolved(error):  # never sent
                    problem = f"the host {urlsplit(url).hostname!r} does not resolve (DNS)"
                    remedy = "check api_url's host and this machine's network and DNS"
                else:
                    self._count_unanswered()
                    problem = "connection failed or dropped"
                    remedy = "check the network, or run again later"
            else:
                status = response.status_code
                self.stats.count(endpoint, status)
                if (status < 300 and self._holds_json(response)) or (status == 404 and allow_404):
                    self._honour_rate_headers(response)
                    return response
                if status < 300:
                    self._count_unanswered()  # answered, so it may have been carried out
                    problem = f"answered {status} with a body that is not JSON"
                    remedy = "run again later; if it persists, check api_url (a proxy?)"
                else:
                    if 300 <= status < 400:
                        raise self._redirect_refused(endpoint, response)
                    if status == 429:
                        throttled += 1
                        if throttled > max(self.max_retries, 20):
                            raise TransientApiError(
                                f"{endpoint} was still rate limited (429) after {throttled} "
                                "tries; lower max_requests_per_minute if other apps share the "
                                "brand's limit."
                            )
                        delay = self._retry_after(response, throttled - 1)
                        self.pacer.pause_for(delay)
                        if tags_endpoint:
                            self.tags_pacer.pause_for(delay)
                        self.stats.add_retry()
                        self.logger.warning(
                            "%s: rate limited (429), waiting %.1f s", endpoint, delay
                        )
                        continue
                    if status == 409 and conflicts < retry_conflict:
                        conflicts += 1
                        self.stats.add_retry()
                        self._pause(self._backoff(conflicts - 1))
                        continue
                    if status not in RETRYABLE_STATUSES:
                        raise self._fatal(endpoint, response)
                    if status != 408:  # a 5xx may come after the work was done (a gateway's)
                        self._count_unanswered()
                    problem = f"answered {status}: {self._body_text(response)}"
                    remedy = "Omnisend is failing: run again later"
            failures += 1
            now = time.monotonic()
            failing_since = failing_since or now
            delay = self._backoff(failures - 1)
            spent = now - failing_since
            if failures > self.max_retries or spent + delay > self.max_retry_seconds:
                raise TransientApiError(
                    self._scrub(
                        f"{endpoint} failed after {failures} attempts in {spent:.0f} s (a request "
                        f"is retried {self.max_retries} times within {self.max_retry_seconds:g} s "
                        f"at most: max_retry_seconds): {problem}; {remedy}."
                    )
                )
            self.stats.add_retry()
            self.logger.warning(
                "%s %s; retry %d/%d in %.1f s",
                endpoint,
                self._scrub(problem),
                failures,
                self.max_retries,
                delay,
            )
            self._pause(delay)

    def _honour_rate_headers(self, response: requests.Response) -> None:
        """v5 reports its window: with nothing remaining, hold everyone until it resets.

        This keeps 429s away even when other apps spend part of the brand's budget.
        """
        remaining = response.headers.get("X-Rate-Limit-Remaining")
        if remaining is None or remaining.strip() not in ("0", "0.0"):
            return
        try:
            reset = float(response.headers.get("X-Rate-Limit-Reset") or 0)
        except ValueError:
            return
        if reset > 0:
            self.pacer.pause_for(reset)

    def _body_text(self, response: requests.Response) -> str:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        return self.server_text(describe_error(body))

    def _redirect_refused(self, endpoint: str, response: requests.Response) -> FatalApiError:
        location = response.headers.get("Location") or ""
        try:
            host = urlsplit(location).hostname or ""
        except ValueError:
            host = ""
        where = f"to host {host!r}" if host else "elsewhere (no host in its Location)"
        if not host and location.startswith("/"):
            where = "to another path on the same host"
        return RedirectRefusedError(
            self._scrub(
                f"{endpoint} answered {response.status_code}, a redirect {where}. The target "
                "follows no redirect, so neither the API key nor any contact left for it; "
                f"check 'api_url' (now {self.api_url}) and use the URL the API answers on."
            ),
            response.status_code,
        )

    def _fatal(self, endpoint: str, response: requests.Response) -> FatalApiError:
        status = response.status_code
        detail = self._body_text(response)
        if status == 401:
            message = (
                f"Omnisend refused the API key ({endpoint} answered 401 Unauthorized): check the "
                "'api_key' setting (a key from Store settings → API keys, shaped brandID-secret)."
            )
        elif status == 403:
            message = (
                f"The key in 'api_key' lacks a permission ({endpoint} answered 403 Forbidden): "
                "give it contacts.write and batches (and contacts.read, segments.write for "
                f"segments). {detail}"
            )
        elif status == 410:
            message = (
                f"API version {self.dialect.name} is retired ({endpoint} answered 410 Gone): set "
                f"'api_version' to a supported version. {detail}"
            )
        elif status == 413:
            return PayloadTooLargeError(
                f"{endpoint} answered 413: the request body is too large. {detail}", status
            )
        else:
            message = f"{endpoint} answered {status}: {detail}"
        return FatalApiError(self._scrub(message.strip()), status)

    @staticmethod
    def _holds_json(response: requests.Response) -> bool:
        """An empty body, or JSON (decoded once, kept for `_json`)."""
        if not response.content:
            return True
        try:
            response.decoded_json = response.json()  # type: ignore[attr-defined]
        except ValueError:
            return False
        return True

    def _json(self, response: requests.Response) -> Any:
        if not response.content:
            return None
        decoded = getattr(response, "decoded_json", _NOT_DECODED)
        return response.json() if decoded is _NOT_DECODED else decoded

    # -- batches ---------------------------------------------------------------------------------

    def batch_body(self, encoded_items: Sequence[bytes]) -> bytes:
        """The `POST /batches` body around items already encoded with `encode_json`."""
        return (
            b'{"method":"POST","endpoint":"contacts","items":[' + b",".join(encoded_items) + b"]}"
        )

    def submit_batch(self, items: list[dict], encoded: Sequence[bytes] | None = None) -> str:
        """Submit contact upserts as one batch; returns its id (processing continues there).

        A retried submission may have created a batch Omnisend did not answer for; only the
        id of the answered one is returned (upserts are idempotent, so a duplicate is harmless).
        """
        if encoded is None:
            encoded = [encode_json(item) for item in items]
        data = self.batch_body(encoded)
        response = self.request("POST", "/batches", data=data)
        body = self._json(response)
        if not isinstance(body, Mapping) or not body.get("batchID"):
            raise TransientApiError("POST /batches answered without a batchID")
        return str(body["batchID"])

    def poll(self, ids: Sequence[str], max_pages: int = 3, max_single: int = 10) -> dict:
        """Statuses of `ids` (oldest first) with as few requests as possible.

        One `GET /batches?endpoint=contacts` page (newest first) usually holds every id; pages
        on only while the oldest id is not yet seen (at most `max_pages`), then fetches up to
        `max_single` remaining ids one by one (404 → status "missing"). Ids not reported are
        still unknown.
        """
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        remaining = set(wanted)
        found: dict[str, BatchStatus] = {}
        oldest = wanted[0]
        offset = 0
        for _ in range(max_pages):
            params = {"endpoint": "contacts", "limit": BATCH_LIST_PAGE, "offset": offset}
            body = self._json(self.request("GET", "/batches", params=params)) or {}
            page = body.get("batches") or []
            for raw in page:
                status = _batch_status(raw)
                if status is not None and status.id in remaining:
                    found[status.id] = status
                    remaining.discard(status.id)
            paging = body.get("paging") or {}
            more = bool(paging.get("next")) and len(page) >= BATCH_LIST_PAGE
            if not remaining or oldest in found or not more:
                break
            offset += len(page)
        for batch_id in [i for i in wanted if i in remaining][:max_single]:
            response = self.request("GET", "/batches/{id}", f"/batches/{batch_id}", allow_404=True)
            if response.status_code == 404:
                found[batch_id] = BatchStatus(batch_id, "missing", 0, 0, 0)
                continue
            status = _batch_status(self._json(response))
            if status is not None:
                found[batch_id] = status
        return found

    def batch_items(self, batch_id: str) -> list[ItemOutcome]:
        """Every processed item of a batch with its answer (errors and successes)."""
        response = self.request("GET", "/batches/{id}/items", f"/batches/{batch_id}/items")
        body = self._json(response) or {}
        outcomes = []
        for group in ("responses", "errors"):
            for raw in body.get(group) or []:
                if not isinstance(raw, Mapping):
                    continue
                code = int(raw.get("responseCode") or 0)
                ok = 200 <= code < 300
                error = None if ok else self.server_text(describe_error(raw.get("response")))
                request = raw.get("request")
                outcomes.append(
                    ItemOutcome(request if isinstance(request, dict) else {}, code, ok, error)
                )
        return outcomes

    # -- tags ------------------------------------------------------------------------------------

    def _require_tags_endpoint(self) -> None:
        if not self.dialect.has_tags_endpoint:
            raise FatalApiError(
                f"The {self.dialect.name} API has no tags endpoint; tags travel inside the "
                "contact payload there (set 'api_version' to 2026-03-15 to use it)."
            )

    def _change_tags(self, method: str, tags: Sequence[str], emails: Sequence[str]) -> int:
        self._require_tags_endpoint()
        tag_list = list(dict.fromkeys(tags))
        email_list = list(dict.fromkeys(emails))
        calls = 0
        for tag_start in range(0, len(tag_list), TAGS_PER_CALL):
            tag_chunk = tag_list[tag_start : tag_start + TAGS_PER_CALL]
            for start in range(0, len(email_list), TAG_EMAILS_PER_CALL):
                body = {
                    "tags": tag_chunk,
                    "emails": email_list[start : start + TAG_EMAILS_PER_CALL],
                }
                self.request(method, "/contacts/tags", body=body, tags_endpoint=True)
                calls += 1
        return calls

    def add_tags(self, tags: Sequence[str], emails: Sequence[str]) -> int:
        """Add tags to contacts by email (250 emails, 100 tags per call); returns the calls."""
        return self._change_tags("POST", tags, emails)

    def remove_tags(self, tags: Sequence[str], emails: Sequence[str]) -> int:
        """Remove tags from contacts by email; returns the calls made."""
        return self._change_tags("DELETE", tags, emails)

    # -- contacts and segments -------------------------------------------------------------------

    def contacts_page(
        self, after: str | None = None, limit: int = CONTACTS_PAGE, **filters: Any
    ) -> tuple[list[dict], str | None]:
        """One page of the contacts matching `filters`, and the next page's cursor (None: last).

        On v5 (offset paging) the cursor is the next page's offset.
        """
        params: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
        params["limit"] = limit
        if self.dialect.cursor_paging:
            if after:
                params["after"] = after
        else:
            params["offset"] = int(after or 0)
        body = self._json(self.request("GET", "/contacts", params=params)) or {}
        page = [c for c in body.get("contacts") or [] if isinstance(c, Mapping)]
        if self.dialect.cursor_paging:
            paging = body.get("paging") or {}
            cursor = (paging.get("cursors") or {}).get("after")
            return page, (str(cursor) if paging.get("hasMore") and cursor else None)
        return page, (str(params["offset"] + len(page)) if len(page) >= limit else None)

    def iter_contacts(self, **filters: Any) -> Iterator[dict]:
        """Every contact matching `filters` (email, phone, tag, status, segmentID, …)."""
        after: str | None = None
        while True:
            page, after = self.contacts_page(after, **filters)
            yield from page
            if after is None:
                return

    def _require_segments(self) -> None:
        if not self.dialect.has_segments:
            raise FatalApiError(
                f"The {self.dialect.name} API has no segments endpoint; set 'api_version' to "
                "2026-03-15 to build segments."
            )

    def iter_segments(self) -> Iterator[dict]:
        """Every segment of the brand."""
        self._require_segments()
        params: dict[str, Any] = {"limit": SEGMENTS_PAGE}
        while True:
            body = self._json(self.request("GET", "/segments", params=params)) or {}
            yield from body.get("segments") or []
            paging = body.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not paging.get("hasMore") or not after:
                return
            params["after"] = after

    @staticmethod
    def segment_body(name: str, tag: str) -> dict:
        """A segment of every contact carrying `tag`."""
        condition = {
            "entity": "contact",
            "junction": "and",
            "filters": [{"property": "tags", "operator": "anyOf", "value": [tag]}],
        }
        return {"name": name, "conditionGroups": [{"conditions": [condition]}]}

    def find_or_create_segment(self, name: str, tag: str) -> str:
        """The id of the segment named `name`, created as "tags anyOf [tag]" if missing."""
        for segment in self.iter_segments():
            if segment.get("name") == name and segment.get("segmentID"):
                return str(segment["segmentID"])
        response = self.request(
            "POST", "/segments", body=self.segment_body(name, tag), retry_conflict=5
        )
        body = self._json(response) or {}
        if not body.get("segmentID"):
            raise TransientApiError("POST /segments answered without a segmentID")
        return str(body["segmentID"])


_NOT_DECODED = object()


def _unresolved(error: requests.ConnectionError) -> bool:
    """Whether the connection failed because the host name does not resolve."""
    text = repr(error)
    return (
        "NameResolutionError" in text
        or "Failed to resolve" in text
        or ("Name or service not known" in text)
    )


def _batch_status(raw: Any) -> BatchStatus | None:
    if not isinstance(raw, Mapping) or not raw.get("batchID"):
        return None
    return BatchStatus(
        id=str(raw["batchID"]),
        status=str(raw.get("status") or "pending"),
        total=int(raw.get("totalCount") or 0),
        finished=int(raw.get("finishedCount") or 0),
        errors=int(raw.get("errorsCount") or 0),
    )


def identifiers_of(item: Mapping[str, Any]) -> Iterable[str]:
    """The identifier values (emails, phones) of a contact payload."""
    for identifier in item.get("identifiers") or []:
        if isinstance(identifier, Mapping) and identifier.get("id"):
            yield str(identifier["id"])
    for name in ("email", "phone"):
        value = item.get(name)
        if isinstance(value, str) and value:
            yield value
