"""BatchPipeline against the sandbox over real HTTP, judged by the sandbox's dump.

Every test checks what the sandbox holds (contacts, batches, requests) as well as what the
pipeline reported, so "accepted" always means "really stored".
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from target_omnisend.client import OmnisendClient, encode_json
from target_omnisend.mapping import MappedContact
from target_omnisend.pacer import SlidingWindowPacer
from target_omnisend.pipeline import (
    NOT_UTF8,
    POLL_SHARE,
    BatchPipeline,
    BatchResult,
    UnaccountedBatchError,
)

VERSIONS = ["2026-03-15", "v5"]


def contact(email: str, version: str = "2026-03-15", padding: int = 0) -> MappedContact:
    date_field = "statusDate" if version == "v5" else "statusChangedAt"
    channel = {"status": "nonSubscribed", date_field: "1970-01-01T00:00:00Z"}
    payload: dict[str, Any] = {
        "identifiers": [{"type": "email", "id": email, "channels": {"email": channel}}],
        "sendWelcomeMessage": False,
    }
    if padding:
        payload["customProperties"] = {"notes": "x" * padding}
    return MappedContact(email, email, None, payload, ())


def contacts(count: int, prefix: str = "user", version: str = "2026-03-15") -> list[MappedContact]:
    return [contact(f"{prefix}{n}@example.com", version) for n in range(count)]


class Recorder:
    """Collects on_result calls (checking they never overlap)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, BatchResult]] = []
        self._busy = threading.Lock()

    def __call__(self, ticket: Any, result: BatchResult) -> None:
        assert self._busy.acquire(blocking=False), "on_result calls overlapped"
        try:
            self.calls.append((ticket, result))
        finally:
            self._busy.release()

    def accepted(self) -> list[str]:
        return sorted(c.key for _, result in self.calls for c in result.accepted)

    def rejected(self) -> dict[str, str]:
        return {c.key: error for _, result in self.calls for c, error in result.rejected}


def make_client(sandbox: Any, version: str = "2026-03-15", **options: Any) -> OmnisendClient:
    options.setdefault("max_requests_per_minute", 4000)
    options.setdefault("backoff_base", 0.01)
    options.setdefault("backoff_cap", 0.05)
    return OmnisendClient(
        f"p{uuid.uuid4().hex[:10]}-PIPELINESECRET",
        api_version=version,
        api_url=sandbox.v5_url if version == "v5" else sandbox.api_url,
        **options,
    )


def make_pipeline(
    sandbox: Any, version: str = "2026-03-15", max_in_flight: int = 8, **options: Any
) -> tuple[BatchPipeline, Recorder]:
    client_options = {k: options.pop(k) for k in list(options) if k in ("max_retries",)}
    recorder = Recorder()
    options.setdefault("poll_interval", 0.1)
    pipeline = BatchPipeline(
        make_client(sandbox, version, **client_options), max_in_flight, recorder, **options
    )
    return pipeline, recorder


def stored_emails(sandbox: Any) -> set[str]:
    return {
        identifier["id"]
        for c in sandbox.dump()["contacts"]
        for identifier in c["identifiers"]
        if identifier["type"] == "email"
    }


def batch_route(version: str) -> str:
    return "/v5/batches" if version == "v5" else "/api/batches"


# -- the happy path, both generations -------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_contacts_are_chunked_submitted_and_accounted(
    sandbox_factory: Callable[..., Any], version: str
) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.1)
    pipeline, recorder = make_pipeline(sandbox, version)
    limit = pipeline.batch_limit
    people = contacts(2 * limit + 50, version=version)
    seq = pipeline.submit(people, "ticket-1")
    assert seq == 1 == pipeline.outstanding_seq()
    pipeline.wait_all()
    assert pipeline.completed_through(1)
    assert recorder.accepted() == sorted(c.key for c in people)
    assert [ticket for ticket, _ in recorder.calls] == ["ticket-1"] * 3  # once per batch
    dump = sandbox.dump()
    assert stored_emails(sandbox) == {c.key for c in people}
    assert sorted(b["totalCount"] for b in dump["batches"]) == [50, limit, limit]
    assert all(b["status"] == "finished" for b in dump["batches"])
    route = f"GET {batch_route(version)}/{{id}}/items"
    assert route not in dump["requests"]  # no errors: items never read


def test_payloads_encoded_by_the_caller_are_sent_as_given(
    sandbox_factory: Callable[..., Any],
) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.05)
    pipeline, recorder = make_pipeline(sandbox)
    people = contacts(3)
    broken = contact("ren\udce9@example.com")
    given = encode_json({**people[0].payload, "firstName": "Given"}, finite=True)
    pipeline.submit([*people, broken], "t", [given, None, encode_json(people[2].payload), None])
    pipeline.wait_all()
    names = {c["identifiers"][0]["id"]: c.get("firstName") for c in sandbox.dump()["contacts"]}
    assert names == {
        "user0@example.com": "Given",
        "user1@example.com": None,
        "user2@example.com": None,
    }
    assert recorder.rejected() == {broken.key: NOT_UTF8}  # None: encoded (and refused) here


def test_submit_returns_before_processing(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(batch_processing_delay=1.0)
    pipeline, recorder = make_pipeline(sandbox)
    pipeline.submit(contacts(150), "t")
    assert recorder.calls == []
    assert not pipeline.completed_through(1)
    assert {b["status"] for b in sandbox.dump()["batches"]} == {"pending"}
    pipeline.wait_all()
    assert len(recorder.accepted()) == 150
    assert pipeline.completed_through(1)


# -- errors per item, stopped batches -------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_item_errors_map_back_to_their_contacts(
    sandbox_factory: Callable[..., Any], version: str
) -> None:
    bad = {"user3@example.com": [422, "blocked address"], "user7@example.com": [400, "nope"]}
    sandbox = sandbox_factory(batch_processing_delay=0.05, item_errors=bad)
    pipeline, recorder = make_pipeline(sandbox, version)
    people = contacts(12, version=version)
    pipeline.submit(people, "t")
    pipeline.wait_all()
    rejected = recorder.rejected()
    assert set(rejected) == set(bad)
    assert "blocked address" in rejected["user3@example.com"]
    assert "nope" in rejected["user7@example.com"]
    assert recorder.accepted() == sorted(c.key for c in people if c.key not in bad)
    assert stored_emails(sandbox) == {c.key for c in people} - set(bad)
    assert sandbox.dump()["requests"][f"GET {batch_route(version)}/{{id}}/items"] == {"200": 1}


def test_transient_item_errors_are_resubmitted(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(
        batch_processing_delay=0.05, item_errors={"user2@example.com": [503, "busy"]}
    )
    pipeline, recorder = make_pipeline(sandbox, max_resubmits=2)
    pipeline.submit(contacts(5), "t")

    original = pipeline.client.batch_items

    def items_then_heal(batch_id: str) -> list:
        outcomes = original(batch_id)
        sandbox.configure(item_errors={})  # the 503 goes away after the first attempt
        return outcomes

    pipeline.client.batch_items = items_then_heal  # type: ignore[method-assign]
    pipeline.wait_all()
    assert recorder.accepted() == sorted(c.key for c in contacts(5))
    assert recorder.rejected() == {}
    assert [b["totalCount"] for b in sandbox.dump()["batches"]] == [5, 1]
    assert stored_emails(sandbox) == {c.key for c in contacts(5)}


def test_persistent_transient_item_errors_end_unaccounted(
    sandbox_factory: Callable[..., Any],
) -> None:
    sandbox = sandbox_factory(
        batch_processing_delay=0.02, item_errors={"user2@example.com": [503, "busy"]}
    )
    pipeline, recorder = make_pipeline(sandbox, max_resubmits=2)
    pipeline.submit(contacts(5), "t")
    with pytest.raises(UnaccountedBatchError, match="1 contacts unprocessed"):
        pipeline.wait_all()
    assert [b["totalCount"] for b in sandbox.dump()["batches"]] == [5, 1, 1]
    assert len(recorder.accepted()) == 4
    assert recorder.rejected() == {}
    assert not pipeline.completed_through(1)


def test_unprocessed_items_of_stopped_batches_are_resubmitted(
    sandbox_factory: Callable[..., Any],
) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.02, stop_batches=True)
    pipeline, recorder = make_pipeline(sandbox, max_resubmits=5)
    people = contacts(4)
    pipeline.submit(people, "t")
    pipeline.wait_all()
    dump = sandbox.dump()
    # The sandbox stops every batch after its first item: 4, then 3, 2 and 1 items resubmitted.
    assert [b["totalCount"] for b in dump["batches"]] == [4, 3, 2, 1]
    assert {b["status"] for b in dump["batches"]} == {"stopped"}
    assert recorder.accepted() == sorted(c.key for c in people)
    assert len(recorder.calls) == 4
    assert stored_emails(sandbox) == {c.key for c in people}
    assert pipeline.completed_through(1)


def test_stopped_batches_beyond_the_bound_fail_the_run(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.02, stop_batches=True)
    pipeline, recorder = make_pipeline(sandbox, max_resubmits=1)
    pipeline.submit(contacts(5), "t")
    with pytest.raises(UnaccountedBatchError, match="3 contacts unprocessed"):
        pipeline.wait_all()
    assert len(recorder.accepted()) == 2  # what was confirmed is still reported
    assert len(stored_emails(sandbox)) == 2
    assert not pipeline.completed_through(1)
    with pytest.raises(UnaccountedBatchError):  # and it keeps failing
        pipeline.submit(contacts(1, "later"), "t2")


def test_batches_stopped_for_too_many_errors(sandbox_factory: Callable[..., Any]) -> None:
    bad = {f"user{n}@example.com": [422, "bad"] for n in range(12)}
    sandbox = sandbox_factory(batch_processing_delay=0.02, item_errors=bad)
    pipeline, recorder = make_pipeline(sandbox, max_resubmits=3)
    people = contacts(30)
    pipeline.submit(people, "t")
    pipeline.wait_all()
    dump = sandbox.dump()
    assert dump["batches"][0]["status"] == "stopped"  # 10+ errors and over half failed
    assert set(recorder.rejected()) == set(bad)
    assert recorder.accepted() == sorted(c.key for c in people if c.key not in bad)
    assert stored_emails(sandbox) == {c.key for c in people} - set(bad)


# -- size limits ----------------------------------------------------------------------------------


def test_a_413_splits_the_batch_until_it_fits(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.02, max_body_bytes=4000)
    pipeline, recorder = make_pipeline(sandbox)
    people = [contact(f"big{n}@example.com", padding=500) for n in range(20)]
    pipeline.submit(people, "t")
    pipeline.wait_all()
    dump = sandbox.dump()
    assert dump["requests"]["POST /api/batches"]["413"] >= 1
    assert sum(b["totalCount"] for b in dump["batches"]) == 20
    assert recorder.accepted() == sorted(c.key for c in people)
    assert stored_emails(sandbox) == {c.key for c in people}


def test_batches_are_cut_to_the_body_limit_before_sending(
    sandbox_factory: Callable[..., Any],
) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.02, max_body_bytes=4000)
    pipeline, _ = make_pipeline(sandbox, max_body_bytes=4000)
    people = [contact(f"big{n}@example.com", padding=500) for n in range(20)]
    pipeline.submit(people, "t")
    pipeline.wait_all()
    assert sandbox.dump()["requests"]["POST /api/batches"].get("413") is None
    assert len(sandbox.dump()["batches"]) > 1
    assert stored_emails(sandbox) == {c.key for c in people}


def test_a_contact_too_large_for_any_batch_is_rejected_unsent(
    sandbox_factory: Callable[..., Any],
) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.02)
    pipeline, recorder = make_pipeline(sandbox, max_body_bytes=3000)
    huge = contact("huge@example.com", padding=5000)
    pipeline.submit([huge, *contacts(3)], "t")
    pipeline.wait_all()
    assert "1 MB" in recorder.rejected()["huge@example.com"]
    assert stored_emails(sandbox) == {c.key for c in contacts(3)}
    assert pipeline.completed_through(1)


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_nothing_is_lost_under_5xx_and_dropped_connections(
    sandbox_factory: Callable[..., Any], version: str
) -> None:
    sandbox = sandbox_factory(
        batch_processing_delay=0.05, error_rate=0.2, drop_rate=0.1, seed=3, time_scale=10
    )
    pipeline, recorder = make_pipeline(sandbox, version, max_retries=30)
    people = contacts(3 * pipeline.batch_limit, "faulty", version)
    pipeline.submit(people, "t")
    pipeline.wait_all()
    dump = sandbox.dump()
    assert sum(dump["faults_injected"].values()) > 0
    assert recorder.accepted() == sorted(c.key for c in people)
    assert stored_emails(sandbox) == {c.key for c in people}


def test_a_lost_batch_fails_the_run(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.5)
    pipeline, recorder = make_pipeline(sandbox)
    pipeline.submit(contacts(3), "t")
    sandbox.reset()  # Omnisend forgets the batch
    with pytest.raises(UnaccountedBatchError, match="unknown to Omnisend"):
        pipeline.wait_all()
    assert recorder.calls == []
    assert not pipeline.completed_through(1)


def test_a_batch_that_never_finishes_fails_the_run(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(batch_processing_delay=30)
    pipeline, _ = make_pipeline(sandbox, max_batch_age=0.3)
    pipeline.submit(contacts(3), "t")
    with pytest.raises(UnaccountedBatchError, match="still pending"):
        pipeline.wait_all()
    assert not pipeline.completed_through(1)


# -- in flight, sequence numbers, threads ---------------------------------------------------------


def test_never_more_than_max_in_flight_batches_unconfirmed(
    sandbox_factory: Callable[..., Any],
) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.15)
    pipeline, recorder = make_pipeline(sandbox, max_in_flight=2)
    client = pipeline.client
    original = client.submit_batch
    unfinished_before_submit: list[int] = []

    def checked_submit(items: list[dict], encoded: Any = None) -> str:
        batches = sandbox.dump()["batches"]
        unfinished_before_submit.append(sum(b["status"] == "pending" for b in batches))
        return original(items, encoded)

    client.submit_batch = checked_submit  # type: ignore[method-assign]
    for n in range(6):
        pipeline.submit(contacts(10, f"wave{n}-"), n)
    pipeline.wait_all()
    assert max(unfinished_before_submit) <= 1  # a slot is free before every submit
    assert len(recorder.accepted()) == 60
    assert len(stored_emails(sandbox)) == 60


def test_completed_through_follows_the_oldest_unfinished_submit(
    sandbox_factory: Callable[..., Any],
) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.3)
    pipeline, _ = make_pipeline(sandbox)
    assert pipeline.completed_through(0)
    first = pipeline.submit(contacts(5, "a"), "a")
    sandbox.configure(batch_processing_delay=0.0)
    second = pipeline.submit(contacts(5, "b"), "b")
    assert (first, second) == (1, 2)
    assert not pipeline.completed_through(1)
    pipeline.wait_all()
    assert pipeline.completed_through(2)
    assert pipeline.completed_seq() == 2
    assert pipeline.submit([], "empty") == 3
    assert pipeline.completed_through(3)


def test_concurrent_submitters(sandbox_factory: Callable[..., Any]) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.05, time_scale=10)
    pipeline, recorder = make_pipeline(sandbox, max_in_flight=4)
    seqs: list[int] = []
    lock = threading.Lock()

    def sink(index: int) -> None:
        for wave in range(5):
            seq = pipeline.submit(contacts(120, f"s{index}w{wave}-"), (index, wave))
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=sink, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pipeline.wait_all()
    assert sorted(seqs) == list(range(1, 21))
    assert pipeline.completed_through(20)
    assert len(recorder.accepted()) == 4 * 5 * 120
    assert len(stored_emails(sandbox)) == 4 * 5 * 120
    assert len(sandbox.dump()["batches"]) == 40


def test_a_slow_on_result_never_holds_up_submitting(sandbox_factory: Callable[..., Any]) -> None:
    """on_result runs on the results thread: tag calls waiting there do not stall the sink."""
    sandbox = sandbox_factory(batch_processing_delay=0.02)
    entered, release = threading.Event(), threading.Event()
    delivered: list[Any] = []

    def slow_on_result(ticket: Any, result: BatchResult) -> None:
        entered.set()
        assert release.wait(timeout=30)
        delivered.append(ticket)

    pipeline = BatchPipeline(make_client(sandbox), 8, slow_on_result, poll_interval=0.05)
    pipeline.submit(contacts(5, "first"), 1)
    while not entered.is_set():
        pipeline.pump()
        entered.wait(timeout=0.02)
    for wave in range(2, 6):  # the first result is still being delivered
        pipeline.submit(contacts(5, f"wave{wave}-"), wave)
    assert len(sandbox.dump()["batches"]) == 5
    assert delivered == []
    assert not pipeline.completed_through(1)
    release.set()
    pipeline.wait_all()
    assert delivered == [1, 2, 3, 4, 5]
    assert pipeline.completed_through(5)
    pipeline.close()


def test_an_on_result_error_is_raised_to_the_caller(sandbox_factory: Callable[..., Any]) -> None:
    from target_omnisend.client import FatalApiError

    sandbox = sandbox_factory(batch_processing_delay=0.02)

    def failing(ticket: Any, result: BatchResult) -> None:
        raise FatalApiError("tags refused: check 'api_key'")

    pipeline = BatchPipeline(make_client(sandbox), 8, failing, poll_interval=0.05)
    pipeline.submit(contacts(3), "t")
    with pytest.raises(FatalApiError, match="tags refused"):
        pipeline.wait_all()
    assert not pipeline.completed_through(1)


def test_results_can_be_delivered_by_the_polling_thread(
    sandbox_factory: Callable[..., Any],
) -> None:
    sandbox = sandbox_factory(batch_processing_delay=0.02)
    threads: list[str] = []
    pipeline = BatchPipeline(
        make_client(sandbox),
        8,
        lambda ticket, result: threads.append(threading.current_thread().name),
        poll_interval=0.05,
        background_results=False,
    )
    pipeline.submit(contacts(250), "t")
    pipeline.wait_all()
    assert threads == [threading.current_thread().name] * 3
    assert pipeline.completed_through(1)
    assert len(stored_emails(sandbox)) == 250


def test_polls_stay_a_small_share_of_requests(sandbox_factory: Callable[..., Any]) -> None:
    """40 batches at 4000/min (a sandbox 10x faster): polls stay a small share of requests."""
    sandbox = sandbox_factory(batch_processing_delay=2.0, time_scale=10)
    recorder = Recorder()
    pipeline = BatchPipeline(make_client(sandbox), 64, recorder)
    for wave in range(40):
        pipeline.submit(contacts(100, f"w{wave}-"), wave)
        pipeline.pump()
    pipeline.wait_all()
    requests = sandbox.dump()["requests"]
    polls = sum(requests.get("GET /api/batches", {}).values())
    total = sum(sum(codes.values()) for codes in requests.values())
    assert sum(requests["POST /api/batches"].values()) == 40
    assert polls <= 0.25 * total
    assert len(stored_emails(sandbox)) == 4000


# -- polling schedule, with a fake client and a fake clock (unit tests of this module) ------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class FakeClient:
    """Batches finish `latency` seconds after submission; each request costs 60/rpm seconds."""

    class dialect:  # mimics the client's attribute
        batch_limit = 100

    def __init__(self, clock: FakeClock, latency: float, rpm: int = 400) -> None:
        self.clock = clock
        self.latency = latency
        self.max_requests_per_minute = rpm
        self.submitted: dict[str, float] = {}
        self.poll_times: list[float] = []
        self.stats = type("Stats", (), {"requests": 0})()

    def _request(self) -> None:
        self.clock.now += 60.0 / self.max_requests_per_minute
        self.stats.requests += 1

    def submit_batch(self, items: list[dict], encoded: Any = None) -> str:
        self._request()
        batch_id = f"b{len(self.submitted)}"
        self.submitted[batch_id] = self.clock.now
        return batch_id

    def poll(self, ids: list[str]) -> dict:
        from target_omnisend.client import BatchStatus

        self._request()
        self.poll_times.append(self.clock.now)
        return {
            i: BatchStatus(
                i, "finished" if self.clock.now >= t + self.latency else "pending", 1, 1, 0
            )
            for i, t in self.submitted.items()
            if i in ids
        }


def fake_pipeline(latency: float, max_in_flight: int = 64) -> tuple[BatchPipeline, FakeClient]:
    clock = FakeClock()
    client = FakeClient(clock, latency)
    pipeline = BatchPipeline(client, max_in_flight, Recorder(), clock=clock, sleep=clock.sleep)
    return pipeline, client


def test_streaming_polls_stay_within_four_percent_of_requests() -> None:
    pipeline, client = fake_pipeline(latency=4.0)
    for wave in range(500):
        pipeline.submit(contacts(1, f"w{wave}-"), wave)
        for _ in range(100):  # the target pumps after every record
            pipeline.pump()
    streaming_polls = len(client.poll_times)
    pipeline.wait_all()
    assert streaming_polls <= 0.04 * 500 + 1
    assert pipeline.completed_through(500)
    assert len(client.poll_times) <= streaming_polls + 2


def test_the_final_wait_polls_when_the_newest_batch_is_expected_done() -> None:
    pipeline, client = fake_pipeline(latency=2.0)
    for wave in range(30):  # learn the latency
        pipeline.submit(contacts(1, f"a{wave}-"), wave)
        pipeline.pump()
    pipeline.wait_all()
    polls_before = len(client.poll_times)
    for wave in range(10):
        pipeline.submit(contacts(1, f"b{wave}-"), wave)
    newest = max(client.submitted.values())
    pipeline.wait_all()
    final_polls = client.poll_times[polls_before:]
    assert len(final_polls) <= 2
    assert final_polls[-1] <= newest + 2.0 + pipeline.idle_gap + 0.5


def submit_and_wait(pipeline: BatchPipeline, batches: int) -> None:
    """Submit `batches` one-contact batches as fast as the slots allow; wait for them all."""
    for wave in range(batches):
        pipeline.submit(contacts(1, f"w{wave}-"), wave)
    pipeline.wait_all()
    assert pipeline.completed_through(batches)


def test_a_full_pipeline_frees_several_slots_per_poll() -> None:
    pipeline, client = fake_pipeline(latency=4.0, max_in_flight=32)
    submit_and_wait(pipeline, 320)
    assert len(client.poll_times) <= 320 / 4


def test_a_batch_still_pending_raises_the_latency_estimate_to_its_age() -> None:
    pipeline, client = fake_pipeline(latency=10.0)
    pipeline.submit(contacts(1, "p-"), 1)
    client.clock.sleep(6.0)
    pipeline._poll_once()
    assert pipeline._latency >= 6.0  # not done at 6 s: the next poll is not due before 6 s
    pipeline.wait_all()
    assert pipeline.completed_through(1)


def test_a_window_kept_full_by_slow_batches_polls_at_most_once_per_busy_gap() -> None:
    # Batches take 8 s and only 32 may be in flight: the target waits for slots most of the
    # time. Beyond the polling budget, a slot wait polls once per busy_gap at most, rather than
    # each time a few slots could have freed up.
    pipeline, client = fake_pipeline(latency=8.0, max_in_flight=32)
    submit_and_wait(pipeline, 640)
    budget = POLL_SHARE * client.stats.requests + 1
    assert len(client.poll_times) <= budget + client.clock.now / pipeline.busy_gap + 2


class WindowFullClient(FakeClient):
    """Like FakeClient; a poll can be made to wait for the pacer first (a full window)."""

    def __init__(self, clock: FakeClock, latency: float) -> None:
        super().__init__(clock, latency)
        self.stall_next_poll = 0.0
        self.paced = 0.0

    def paced_seconds_in_thread(self) -> float:
        return self.paced

    def poll(self, ids: list[str]) -> dict:
        stall, self.stall_next_poll = self.stall_next_poll, 0.0
        self.clock.now += stall
        self.paced += stall
        return super().poll(ids)


@pytest.mark.parametrize("stalled", [True, False])
def test_late_polls_do_not_make_later_polls_late(stalled: bool) -> None:
    clock = FakeClock()
    client = WindowFullClient(clock, latency=4.0)
    pipeline = BatchPipeline(client, 32, Recorder(), clock=clock, sleep=clock.sleep)
    for wave in range(100):  # learn the latency while streaming
        pipeline.submit(contacts(1, f"a{wave}-"), wave)
        for _ in range(100):
            pipeline.pump()
    pipeline.wait_all()
    for wave in range(32):  # fill the pipeline, then a poll sees every batch 20 s late
        pipeline.submit(contacts(1, f"b{wave}-"), wave)
    if stalled:
        client.stall_next_poll = 20.0  # waited for the pacer: the window was full
    else:
        clock.sleep(20.0)  # or the caller came back late (busy mapping records)
    pipeline.wait_all()
    polls_before = len(client.poll_times)
    for wave in range(32):  # fill it again; the 33rd submit waits for a slot
        pipeline.submit(contacts(1, f"c{wave}-"), wave)
    submitted = sorted(client.submitted.values())[-32:]
    pipeline.submit(contacts(1, "d-"), 33)
    first_poll = client.poll_times[polls_before]
    # the slot wait polls once the oldest quarter is expected done: ~4 s after it was submitted
    assert first_poll <= submitted[32 // 4 - 1] + 4.0 + pipeline.idle_gap + 1.0


class PacedFakeClient(FakeClient):
    """Like FakeClient, with a real sliding-window pacer on the fake clock for every request."""

    def __init__(self, clock: FakeClock, latency: float, limit: int, window: float) -> None:
        super().__init__(clock, latency)
        # a sleep of a few ulps must move the fake clock, as a real one moves on its own
        self.pacer = SlidingWindowPacer(
            limit, window, clock=clock, sleep=lambda seconds: clock.sleep(max(seconds, 1e-6))
        )

    def _request(self) -> None:
        self.pacer.acquire()
        super()._request()


def test_a_full_rate_limit_window_does_not_block_the_caller() -> None:
    clock = FakeClock()
    client = PacedFakeClient(clock, latency=1.0, limit=3, window=60.0)
    pipeline = BatchPipeline(
        client, 8, Recorder(), clock=clock, sleep=clock.sleep, background_results=False
    )
    seqs = [pipeline.submit(contacts(1, f"w{n}-"), n) for n in range(5)]
    # three requests fit the window; the other chunks wait, encoded, and the caller goes on
    assert len(client.submitted) == 3
    assert clock.now < 1.0
    assert pipeline.in_flight == 5
    pipeline.pump()
    assert len(client.submitted) == 3  # still no room: nothing is sent, nothing blocks
    assert not pipeline.completed_through(seqs[3])
    clock.sleep(60.0)  # the window moves on: the next pump sends the waiting chunks in order
    pipeline.pump()
    assert list(client.submitted) == ["b0", "b1", "b2", "b3", "b4"]
    assert len(client.submitted) == 5
    pipeline.wait_all()
    assert pipeline.completed_through(seqs[-1])


def test_waiting_chunks_are_sent_when_the_slots_run_out() -> None:
    clock = FakeClock()
    client = PacedFakeClient(clock, latency=1.0, limit=2, window=10.0)
    pipeline = BatchPipeline(
        client, 3, Recorder(), clock=clock, sleep=clock.sleep, background_results=False
    )
    for n in range(6):  # only 3 slots: a submit that finds them held by waiting chunks sends them
        pipeline.submit(contacts(1, f"s{n}-"), n)
        assert pipeline.in_flight <= 3
    pipeline.wait_all()
    assert len(client.submitted) == 6
    assert pipeline.completed_through(6)
