"""OmnisendClient over real HTTP against the sandbox (both generations), judged by its dump."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from target_omnisend.client import (
    DIALECTS,
    FatalApiError,
    OmnisendClient,
    PayloadTooLargeError,
    RequestStopped,
    TransientApiError,
    encode_json,
    shared_pacer,
)
from target_omnisend.pacer import SlidingWindowPacer

VERSIONS = ["2026-03-15", "v5"]
FAST_RETRIES = {"backoff_base": 0.01, "backoff_cap": 0.05}


def new_key() -> str:
    """A fresh brand per test, so shared pacers never couple tests."""
    return f"t{uuid.uuid4().hex[:10]}-SECRETpart{uuid.uuid4().hex}"


def base_url(sandbox: Any, version: str) -> str:
    return sandbox.v5_url if version == "v5" else sandbox.api_url


def make_client(sandbox: Any, version: str = "2026-03-15", **options: Any) -> OmnisendClient:
    options.setdefault("api_key", new_key())
    options.setdefault("max_requests_per_minute", 4000)
    return OmnisendClient(api_version=version, api_url=base_url(sandbox, version), **options)


def contact_item(email: str, version: str = "2026-03-15") -> dict[str, Any]:
    date_field = "statusDate" if version == "v5" else "statusChangedAt"
    channel = {"status": "nonSubscribed", date_field: "1970-01-01T00:00:00Z"}
    return {
        "identifiers": [{"type": "email", "id": email, "channels": {"email": channel}}],
        "firstName": "Test",
        "sendWelcomeMessage": False,
    }


def emails(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{n}@example.com" for n in range(count)]


def wait_until(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def stored_emails(sandbox: Any) -> set[str]:
    return {
        identifier["id"]
        for contact in sandbox.dump()["contacts"]
        for identifier in contact["identifiers"]
        if identifier["type"] == "email"
    }


def assert_no_key(key: str, *texts: str) -> None:
    for text in texts:
        assert key not in text
        assert key.split("-", 1)[1] not in text


def requests_to(sandbox: Any, route: str) -> dict[str, int]:
    return sandbox.dump()["requests"].get(route, {})


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://api.example.com/api", "http://10.0.0.1/api", "ftp://127.0.0.1/api", "api.omnisend"],
)
def test_unsafe_api_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="api_url"):
        OmnisendClient("brand-KEY", api_url=url)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.omnisend.com/api",
        "http://127.0.0.1:8080/api",
        "http://127.1.2.3/api",
        "http://localhost:1/api",
        "http://[::1]:8080/api",
    ],
)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    assert OmnisendClient("brand-KEY", api_url=url).api_url == url


def test_default_urls_and_dialects() -> None:
    assert OmnisendClient("brand-KEY").api_url == "https://api.omnisend.com/api"
    v5 = OmnisendClient("brand-KEY", api_version="v5")
    assert v5.api_url == "https://api.omnisend.com/v5"
    assert (v5.dialect.batch_limit, v5.dialect.has_tags_endpoint, v5.dialect.id_field) == (
        1000,
        False,
        "contactID",
    )
    current = DIALECTS["2026-03-15"]
    assert (current.batch_limit, current.has_tags_endpoint, current.id_field) == (100, True, "id")
    assert current.headers("b-k") == {
        "Authorization": "Omnisend-API-Key b-k",
        "Omnisend-Version": "2026-03-15",
    }
    assert DIALECTS["v5"].headers("b-k") == {"X-API-KEY": "b-k"}
    with pytest.raises(ValueError, match="api_version"):
        OmnisendClient("brand-KEY", api_version="v3")


def test_the_key_is_not_in_the_repr() -> None:
    key = new_key()
    client = OmnisendClient(key, api_url="http://127.0.0.1:1/api")
    assert key not in repr(client)
    assert key.split("-")[1] not in repr(client)


def test_pacers_are_shared_per_brand_and_limit() -> None:
    key = new_key()
    first = OmnisendClient(key, max_requests_per_minute=300)
    second = OmnisendClient(key, max_requests_per_minute=300)
    other_brand = OmnisendClient(new_key(), max_requests_per_minute=300)
    assert first.pacer is second.pacer
    assert first.tags_pacer is second.tags_pacer
    assert first.pacer is not first.tags_pacer
    assert other_brand.pacer is not first.pacer
    assert first.pacer is shared_pacer(key.split("-")[0], "all", 300)
    assert (first.pacer.limit, first.tags_pacer.limit) == (300, 60)


def test_rates_above_omnisends_limit_shrink_the_window() -> None:
    """4000/min is 400 per 6 s (a sandbox running 10 times faster), never 4000 in one burst."""
    client = OmnisendClient(new_key(), max_requests_per_minute=4000)
    assert client.pacer.limit == 400
    assert client.pacer.window == pytest.approx(6.0 * 1.02)
    assert client.tags_pacer.limit == 60
    assert client.tags_pacer.window == pytest.approx(6.0 * 1.02)


def test_json_encoding_handles_decimals_and_dates() -> None:
    value = {
        "a": decimal.Decimal("10"),
        "b": decimal.Decimal("1.5"),
        "c": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        "d": dt.date(2024, 1, 2),
        "e": "žalia",
    }
    assert json.loads(encode_json(value)) == {
        "a": 10,
        "b": 1.5,
        "c": "2024-01-02T03:04:05Z",
        "d": "2024-01-02",
        "e": "žalia",
    }
    with pytest.raises(ValueError):
        encode_json({"x": float("nan")})


def test_finite_encoding_writes_the_same_bytes_without_the_scan() -> None:
    # mapped payloads are finite (test_map_never_raises_on_odd_values): only the scan is skipped
    value = {"a": 1.5, "b": None, "c": "NaN and Infinity as text", "d": [1, "x"], "e": "ž"}
    assert encode_json(value, finite=True) == encode_json(value)
    assert json.loads(encode_json({"n": decimal.Decimal("12.30")}, finite=True)) == {"n": 12.3}


def test_retry_after_prefers_the_header_then_the_body() -> None:
    client = OmnisendClient(new_key(), **FAST_RETRIES)

    def response(headers: dict[str, str], body: Any) -> requests.Response:
        answer = requests.Response()
        answer.status_code = 429
        answer.headers.update(headers)
        answer._content = json.dumps(body).encode()
        return answer

    assert client._retry_after(response({"Retry-After": "7"}, {"retryAfter": 3}), 0) == 7
    assert client._retry_after(response({}, {"retryAfter": 3}), 0) == 3
    backoff = client._retry_after(response({}, {}), 2)
    assert 0.02 <= backoff <= 0.05


# -- batches, both generations --------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_submit_poll_and_items(sandbox_factory: Callable[..., Any], version: str) -> None:
    sandbox = sandbox_factory(
        batch_processing_delay=0.1, item_errors={"bad@example.com": [422, "refused here"]}
    )
    client = make_client(sandbox, version)
    addresses = [*emails(5), "bad@example.com"]
    batch_id = client.submit_batch([contact_item(e, version) for e in addresses])
    status = wait_until(lambda: client.poll([batch_id])[batch_id].done and client.poll([batch_id]))
    assert status[batch_id].status == "finished"
    assert (status[batch_id].total, status[batch_id].errors) == (6, 1)
    outcomes = client.batch_items(batch_id)
    assert sorted(o.request["identifiers"][0]["id"] for o in outcomes if o.ok) == emails(5)
    [failed] = [o for o in outcomes if not o.ok]
    assert failed.response_code == 422
    assert "refused here" in (failed.error or "")
    assert stored_emails(sandbox) == set(emails(5))


@pytest.mark.parametrize("version", VERSIONS)
def test_poll_answers_many_batches_with_one_request(
    sandbox_factory: Callable[..., Any], version: str
) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.05)
    client = make_client(sandbox, version)
    ids = [client.submit_batch([contact_item(f"p{n}@example.com", version)]) for n in range(8)]
    prefix = "/v5" if version == "v5" else "/api"
    statuses = wait_until(lambda: (s := client.poll(ids)) and all(x.done for x in s.values()) and s)
    assert set(statuses) == set(ids)
    polls = sandbox.dump()["requests"]
    assert f"GET {prefix}/batches/{{id}}" not in polls  # never one request per batch
    assert sum(polls[f"GET {prefix}/batches"].values()) == client.stats.polls


def test_poll_pages_on_until_the_oldest_id_is_seen(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.0, time_scale=10)
    client = make_client(sandbox)
    ids = [client.submit_batch([contact_item(f"q{n}@example.com")]) for n in range(130)]
    statuses = client.poll([ids[0], ids[129]])
    assert set(statuses) == {ids[0], ids[129]}
    assert requests_to(sandbox, "GET /api/batches") == {"200": 2}  # two pages, no single GETs
    statuses = client.poll(ids[100:])  # the newest 30: one page suffices
    assert len(statuses) == 30
    assert requests_to(sandbox, "GET /api/batches") == {"200": 3}


def test_unknown_batches_are_reported_missing(sandbox: Any) -> None:
    client = make_client(sandbox)
    statuses = client.poll(["b0000000000000000000ffff"])
    assert statuses["b0000000000000000000ffff"].status == "missing"
    assert requests_to(sandbox, "GET /api/batches/{id}") == {"404": 1}


def test_too_many_items_is_a_fatal_error_with_the_problem_detail(sandbox: Any) -> None:
    client = make_client(sandbox)
    with pytest.raises(FatalApiError, match="items") as caught:
        client.submit_batch([contact_item(e) for e in emails(101)])
    assert caught.value.status == 400


def test_413_is_a_distinct_error(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(max_body_bytes=2000)
    client = make_client(sandbox)
    with pytest.raises(PayloadTooLargeError):
        client.submit_batch([contact_item(e) for e in emails(40)])
    assert requests_to(sandbox, "POST /api/batches") == {"413": 1}  # not retried


# -- fatal answers name the setting, never the key ------------------------------------------------


@pytest.mark.parametrize(
    ("version", "settings", "status", "setting"),
    [
        ("2026-03-15", {"api_keys": ["someone-else"]}, 401, "api_key"),
        ("v5", {"api_keys": ["someone-else"]}, 401, "api_key"),
        ("2026-03-15", {"forbidden_keys": ["KEY"]}, 403, "api_key"),
        ("v5", {"forbidden_keys": ["KEY"]}, 403, "api_key"),
        ("2026-03-15", {"retired_versions": ["2026-03-15"]}, 410, "api_version"),
    ],
)
def test_fatal_answers_name_the_setting(
    sandbox: Any,
    caplog: pytest.LogCaptureFixture,
    version: str,
    settings: dict[str, Any],
    status: int,
    setting: str,
) -> None:
    key = new_key()
    if "forbidden_keys" in settings:
        settings = {"forbidden_keys": [key]}
    sandbox.configure(**settings)
    client = make_client(sandbox, version, api_key=key)
    with caplog.at_level(logging.DEBUG), pytest.raises(FatalApiError) as caught:
        client.submit_batch([contact_item("a@example.com", version)])
    message = str(caught.value)
    assert caught.value.status == status
    assert f"'{setting}'" in message
    assert_no_key(key, message, caplog.text)
    assert sum(requests_to(sandbox, f"POST /{'v5' if version == 'v5' else 'api'}/batches").values())
    assert client.stats.retries == 0  # fatal: not retried


# -- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_5xx_and_dropped_connections_are_retried(
    sandbox_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture, version: str
) -> None:
    sandbox = sandbox_factory(error_rate=0.3, drop_rate=0.2, seed=7, batch_processing_delay=0)
    key = new_key()
    client = make_client(sandbox, version, api_key=key, max_retries=20, **FAST_RETRIES)
    with caplog.at_level(logging.WARNING):
        ids = [client.submit_batch([contact_item(e, version)]) for e in emails(15)]
    assert len(ids) == 15
    dump = sandbox.dump()
    injected = dump["faults_injected"]
    assert injected.get("error", 0) + injected.get("drop", 0) == client.stats.retries > 0
    assert stats_failures(client) == client.stats.retries
    wait_until(lambda: stored_emails(sandbox) == set(emails(15)))
    assert "retry" in caplog.text
    assert_no_key(key, caplog.text)


def stats_failures(client: OmnisendClient) -> int:
    by_status = client.stats.to_dict()["requests_by_status"]
    return sum(
        count
        for codes in by_status.values()
        for code, count in codes.items()
        if code in ("500", "503", "connection", "timeout")
    )


def test_timeouts_exhaust_the_retry_budget(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(slow_rate=1.0, slow_seconds=0.4)
    key = new_key()
    client = make_client(sandbox, api_key=key, request_timeout=0.1, max_retries=2, **FAST_RETRIES)
    with pytest.raises(TransientApiError, match="3 attempts") as caught:
        client.submit_batch([contact_item("slow@example.com")])
    assert_no_key(key, str(caught.value))
    assert client.stats.to_dict()["requests_by_status"]["POST /batches"] == {"timeout": 3}


def test_429_honours_retry_after_and_pauses_everyone(
    sandbox_factory: Callable[..., Any],
) -> None:
    """A pacer that ignores the limit meets 429s; the client waits them out and succeeds."""
    sandbox = sandbox_factory(rate_limit_per_minute=5, time_scale=60, batch_processing_delay=0)
    pacer = SlidingWindowPacer(10_000, 60)
    client = make_client(sandbox, pacer=pacer, **FAST_RETRIES)
    started = time.monotonic()
    ids = [client.submit_batch([contact_item(e)]) for e in emails(8)]
    elapsed = time.monotonic() - started
    assert len(set(ids)) == 8
    dump = sandbox.dump()
    assert dump["rate_limited"] == client.stats.rate_limited > 0
    assert client.stats.to_dict()["responses_429"] == client.stats.rate_limited
    assert elapsed >= 1.0  # Retry-After is at least 1 s: it was honoured, not hammered
    assert dump["rate_limited"] <= 3  # everyone paused: not one 429 per queued request


def test_v5_rate_headers_hold_requests_before_a_429(sandbox_factory: Callable[..., Any]) -> None:
    """Another app spent the budget: v5's X-Rate-Limit-Remaining 0 pauses instead of a 429."""
    sandbox = sandbox_factory(rate_limit_per_minute=3, time_scale=60, batch_processing_delay=0)
    client = make_client(sandbox, "v5", pacer=SlidingWindowPacer(10_000, 60))
    for address in emails(7):
        client.submit_batch([contact_item(address, "v5")])
    assert sandbox.dump()["rate_limited"] == 0
    assert requests_to(sandbox, "POST /v5/batches") == {"200": 7}


def test_the_pacer_keeps_a_tight_limit_without_429s(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(rate_limit_per_minute=10, time_scale=60, batch_processing_delay=0)
    pacer = SlidingWindowPacer(10, 1.0 * 1.02)  # the sandbox's 10 per (60 / 60) s
    client = make_client(sandbox, pacer=pacer)
    for address in emails(25):
        client.submit_batch([contact_item(address)])
    assert sandbox.dump()["rate_limited"] == 0
    assert requests_to(sandbox, "POST /api/batches") == {"201": 25}
    # 25 starts at 10 per window: two full windows waited, counted for this thread only
    assert client.paced_seconds_in_thread() >= 1.5
    assert client.paced_seconds_in_thread() == pytest.approx(client.stats.waited_seconds)
    other: list[float] = []
    worker = threading.Thread(target=lambda: other.append(client.paced_seconds_in_thread()))
    worker.start()
    worker.join()
    assert other == [0.0]


# -- tags -----------------------------------------------------------------------------------------


def test_tags_are_added_and_removed_in_chunks_of_250(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0, tags_apply_delay=0.05, time_scale=10)
    client = make_client(sandbox)
    addresses = emails(600, "tagged")
    for start in range(0, 600, 100):
        client.submit_batch([contact_item(e) for e in addresses[start : start + 100]])
    wait_until(lambda: len(stored_emails(sandbox)) == 600)
    assert client.add_tags(["vip", "source: warehouse"], addresses) == 3
    assert requests_to(sandbox, "POST /api/contacts/tags") == {"202": 3}
    wait_until(lambda: len(sandbox.dump()["tag_operations"]) == 3)
    tagged = [
        c for c in sandbox.dump()["contacts"] if {"vip", "source: warehouse"} <= set(c["tags"])
    ]
    assert len(tagged) == 600
    assert client.remove_tags(["vip"], addresses[:10]) == 1
    assert requests_to(sandbox, "DELETE /api/contacts/tags") == {"202": 1}
    wait_until(lambda: len(sandbox.dump()["tag_operations"]) == 4)
    still_vip = [c for c in sandbox.dump()["contacts"] if "vip" in c["tags"]]
    assert len(still_vip) == 590


def test_more_than_100_tags_are_split(sandbox: Any) -> None:
    client = make_client(sandbox)
    assert client.add_tags([f"t{n}" for n in range(150)], ["x@example.com"]) == 2


def test_tag_calls_go_through_their_own_pacer(sandbox: Any) -> None:
    tags_pacer = SlidingWindowPacer(100, 60)
    client = make_client(sandbox, tags_pacer=tags_pacer)
    client.add_tags(["a"], emails(300))
    assert tags_pacer.in_window() == 2
    client.submit_batch([contact_item("z@example.com")])
    assert tags_pacer.in_window() == 2


def test_v5_has_no_tags_or_segments(sandbox: Any) -> None:
    client = make_client(sandbox, "v5")
    with pytest.raises(FatalApiError, match="tags endpoint"):
        client.add_tags(["a"], ["a@example.com"])
    with pytest.raises(FatalApiError, match="segments"):
        client.find_or_create_segment("S", "a")
    assert sandbox.dump()["requests_total"] == 0


# -- contacts and segments ------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_iter_contacts_pages_through_everything(
    sandbox_factory: Callable[..., Any], version: str
) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0)
    client = make_client(sandbox, version)
    addresses = emails(520, "paged")
    size = client.dialect.batch_limit
    for start in range(0, len(addresses), size):
        client.submit_batch([contact_item(e, version) for e in addresses[start : start + size]])
    wait_until(lambda: len(stored_emails(sandbox)) == 520)
    seen = [c["identifiers"][0]["id"] for c in client.iter_contacts()]
    assert sorted(seen) == sorted(addresses)
    prefix = "/v5" if version == "v5" else "/api"
    assert requests_to(sandbox, f"GET {prefix}/contacts") == {"200": 3}
    [one] = list(client.iter_contacts(email="paged7@example.com"))
    assert one[client.dialect.id_field]


def test_find_or_create_segment(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0, tags_apply_delay=0, time_scale=10)
    client = make_client(sandbox)
    client.submit_batch([contact_item(e) for e in emails(3, "seg")])
    wait_until(lambda: len(stored_emails(sandbox)) == 3)
    client.add_tags(["segment: vip"], emails(2, "seg"))
    segment_id = client.find_or_create_segment("VIP", "segment: vip")
    assert client.find_or_create_segment("VIP", "segment: vip") == segment_id
    [segment] = sandbox.dump()["segments"]
    assert segment["segmentID"] == segment_id
    assert segment["name"] == "VIP"
    [group] = segment["conditionGroups"]
    [condition] = group["conditions"]
    assert condition["filters"] == [
        {"property": "tags", "operator": "anyOf", "value": ["segment: vip"]}
    ]
    assert requests_to(sandbox, "POST /api/segments") == {"201": 1}
    members = wait_until(lambda: list(client.iter_contacts(segmentID=segment_id)))
    assert sorted(m["email"] for m in members) == emails(2, "seg")


# -- stats ----------------------------------------------------------------------------------------


def test_stats_count_by_endpoint_and_status(sandbox: Any) -> None:
    client = make_client(sandbox)
    batch_id = client.submit_batch([contact_item("s@example.com")])
    client.poll([batch_id])
    client.poll(["b00000000000000000000fff"])
    stats = client.stats.to_dict()
    assert stats["requests_by_endpoint"] == {
        "GET /batches": 2,
        "GET /batches/{id}": 1,
        "POST /batches": 1,
    }
    assert stats["requests_by_status"]["GET /batches/{id}"] == {"404": 1}
    assert stats["requests"] == 4 == sandbox.dump()["requests_total"]
    assert stats["polls"] == 3
    assert (stats["retries"], stats["responses_429"]) == (0, 0)


def test_retries_of_a_dead_server_end_within_max_retry_seconds() -> None:
    """Nothing listens: however many retries are left, the request gives up in bounded time."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    client = OmnisendClient(
        new_key(), api_url=f"http://127.0.0.1:{port}/api", max_retries=1000,
        backoff_base=0.05, backoff_cap=0.2, max_retry_seconds=1.0,
    )  # fmt: skip
    began = time.monotonic()
    with pytest.raises(TransientApiError, match="max_retry_seconds") as caught:
        client.contacts_page(tag="segment: vip")
    assert time.monotonic() - began < 3
    assert "within 1 s" in str(caught.value)


def test_a_stopped_client_sends_nothing_and_ends_its_retries(
    sandbox_factory: Callable[..., Any],
) -> None:
    sandbox = sandbox_factory(error_rate=1.0)
    client = make_client(sandbox, max_retries=1000, backoff_base=0.5, backoff_cap=5.0)
    threading.Timer(0.3, client.stop).start()
    began = time.monotonic()
    with pytest.raises(RequestStopped):
        client.contacts_page(tag="segment: vip")  # retrying 500s when the stop comes
    assert time.monotonic() - began < 3
    requests_made = client.stats.requests
    with pytest.raises(RequestStopped):
        client.contacts_page()
    assert client.stats.requests == requests_made


def test_contacts_pages_follow_cursors_and_offsets(sandbox: Any) -> None:
    for version in VERSIONS:
        client = make_client(sandbox, version)
        client.submit_batch([contact_item(e, version) for e in emails(7, f"page{version}")])
    wait = time.monotonic() + 10
    while len(sandbox.dump()["contacts"]) < 14 and time.monotonic() < wait:
        time.sleep(0.05)
    for version in VERSIONS:
        client = make_client(sandbox, version)
        seen, after = [], None
        while True:
            page, after = client.contacts_page(after, limit=3)
            seen += page
            if after is None:
                break
        assert len(seen) == 14
        assert len(list(client.iter_contacts())) == 14
