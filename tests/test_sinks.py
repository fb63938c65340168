"""ContactSink and the target's state gating, in process, with a stand-in pipeline.

The stand-in implements the BatchPipeline contract (submit returns at once; batches finish only
when the test says so), so these tests can hold batches "in flight" deterministically. The
end-to-end tests in test_cli_e2e.py prove the same against the sandbox over real HTTP.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import redirect_stdout
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from target_omnisend.client import encode_json
from target_omnisend.mapping import MappedContact
from target_omnisend.sinks import pack_record, unpack_record
from target_omnisend.target import RunFailed, TargetOmnisend

SCHEMA = {
    "type": "SCHEMA",
    "stream": "s",
    "schema": {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "email": {"type": ["string", "null"]}},
    },
    "key_properties": ["id"],
}


def record(index: int, email: str | None = None) -> dict:
    email = email if email is not None else f"user{index}@example.com"
    return {"type": "RECORD", "stream": "s", "record": {"id": index, "email": email}}


def state(value: int) -> dict:
    return {"type": "STATE", "value": {"bookmark": value}}


class StandInPipeline:
    """Holds submitted batches until `finish()`; sequence numbers as the real pipeline's."""

    def __init__(self, target: TargetOmnisend, reject: Callable[[MappedContact], str | None]):
        self.target = target
        self.reject = reject
        self.batches: list[tuple[int, list[MappedContact], Any]] = []
        self.encoded: list[list[bytes | None] | None] = []  # per submit, as the sink passed it
        self.seq = 0
        self.done_through = 0

    def submit(
        self, contacts: list[MappedContact], ticket: Any, encoded: list[bytes | None] | None = None
    ) -> None:
        if encoded is not None:  # payloads the sink encoded early are what the pipeline would send
            assert len(encoded) == len(contacts)
            for contact, payload in zip(contacts, encoded, strict=True):
                assert payload is None or payload == encode_json(contact.payload, finite=True)
        self.encoded.append(encoded)
        self.seq += 1
        self.batches.append((self.seq, contacts, ticket))

    def pump(self) -> None:
        return None

    def outstanding_seq(self) -> int:
        return self.seq

    def completed_through(self, seq: int) -> bool:
        return self.done_through >= seq

    def finish(self, count: int | None = None) -> None:
        todo = self.batches if count is None else self.batches[:count]
        for seq, contacts, ticket in list(todo):
            accepted = [c for c in contacts if self.reject(c) is None]
            rejected = [(c, self.reject(c)) for c in contacts if self.reject(c) is not None]
            self.target.account(ticket, accepted, rejected)
            self.done_through = seq
            self.batches.remove((seq, contacts, ticket))
        self.target._flush_state_if_ready()

    def wait_all(self) -> None:
        self.finish()


@pytest.fixture
def make_target(tmp_path: Path) -> Callable[..., tuple[TargetOmnisend, StandInPipeline]]:
    def make(
        reject: Callable[[MappedContact], str | None] = lambda _: None, **config: Any
    ) -> tuple[TargetOmnisend, StandInPipeline]:
        target = TargetOmnisend(
            config={
                "api_key": "brand-KEY",
                "api_url": "http://127.0.0.1:9/api",
                "rejects_path": str(tmp_path / "rejects.jsonl"),
                "batch_size_rows": 2,
                "sync_state_path": str(tmp_path / "sync.sqlite"),
                "segment_tag": "",  # no tags server behind the stand-in pipeline
                **config,
            }
        )
        pipeline = StandInPipeline(target, reject)
        target._pipeline = pipeline
        return target, pipeline

    return make


def feed(target: TargetOmnisend, messages: list[dict]) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        target.process_lines(io.StringIO("".join(json.dumps(m) + "\n" for m in messages)))
    return out.getvalue()


def end(target: TargetOmnisend) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        target.process_endofpipe()
    return out.getvalue()


def drain(target: TargetOmnisend) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        target.drain_all()
    return out.getvalue()


def test_state_waits_for_batches_submitted_before_it(make_target: Callable) -> None:
    target, pipeline = make_target()
    assert feed(target, [SCHEMA, record(1), record(2), record(3), state(3)]) == ""
    # A drain (as every 5 minutes) submits and asks to write the state: it must be held.
    assert drain(target) == ""
    assert len(pipeline.batches) == 2
    out = io.StringIO()
    with redirect_stdout(out):
        pipeline.finish(1)
    assert out.getvalue() == ""  # one batch before the STATE is still in flight
    with redirect_stdout(out):
        pipeline.finish()
    assert json.loads(out.getvalue()) == {"bookmark": 3}
    assert target.summary.accepted == 3


def test_end_of_input_waits_then_writes_latest_state(make_target: Callable) -> None:
    target, pipeline = make_target()
    feed(target, [SCHEMA, record(1), state(1), record(2), record(3), state(3), record(4)])
    assert [json.loads(line) for line in end(target).splitlines()] == [{"bookmark": 3}]
    assert not pipeline.batches
    assert target.summary.unaccounted == 0


def test_api_rejects_go_to_the_rejects_file(make_target: Callable, tmp_path: Path) -> None:
    target, _ = make_target(reject=lambda c: "400 invalid" if c.key.startswith("user2") else None)
    feed(target, [SCHEMA, record(1), record(2), state(2)])
    assert json.loads(end(target)) == {"bookmark": 2}
    lines = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert lines[1]["record"]["email"] == "user2@example.com"
    assert lines[1]["record"]["_reject"]["code"] == "api_rejected"
    assert lines[1]["record"]["_reject"]["api_error"] == "400 invalid"


def test_a_state_is_written_after_the_rejects_it_covers_reach_the_file(
    make_target: Callable, tmp_path: Path
) -> None:
    target, pipeline = make_target()
    rejects_file = tmp_path / "rejects.jsonl"
    on_disk_at_state: list[str] = []

    class Stdout(io.StringIO):
        def write(self, text: str) -> int:
            if text.strip():
                on_disk_at_state.append(rejects_file.read_text() if rejects_file.exists() else "")
            return super().write(text)

    feed(target, [SCHEMA, record(1), record(2, "not-an-email"), state(2)])
    drain(target)
    with redirect_stdout(Stdout()):
        pipeline.finish()
    assert len(on_disk_at_state) == 1
    assert '"invalid_email"' in on_disk_at_state[0]


def test_unaccounted_batch_fails_without_state(make_target: Callable) -> None:
    target, pipeline = make_target()
    pipeline.wait_all = lambda: None  # a batch never finishes
    feed(target, [SCHEMA, record(1), state(1)])
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(RunFailed, match="not accounted for"):
        target.process_endofpipe()
    assert out.getvalue() == ""


def test_reported_unaccounted_batch_fails_without_state(make_target: Callable) -> None:
    target, _ = make_target()
    feed(target, [SCHEMA, record(1), state(1)])
    target.report_unaccounted("batch b1 ended stopped and its items could not be read")
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(RunFailed, match="b1 ended stopped"):
        target.process_endofpipe()
    assert out.getvalue() == ""


def test_duplicates_within_a_batch_latest_wins(make_target: Callable) -> None:
    target, pipeline = make_target(batch_size_rows=10)
    feed(
        target,
        [SCHEMA, record(1, "A@x.com"), record(2, "b@x.com"), record(3, "a@x.com"), state(3)],
    )
    drain(target)
    (_, contacts, ticket) = pipeline.batches[0]
    assert [c.key for c in contacts] == ["b@x.com", "a@x.com"]
    assert ticket.record("a@x.com")["id"] == 3
    end(target)
    assert target.summary.duplicates_merged == 1
    assert target.summary.accepted == 2
    assert target.summary.unaccounted == 0


def test_payloads_are_encoded_at_mapping_time_while_batches_send_most(
    make_target: Callable,
) -> None:
    first, pipeline = make_target()
    feed(first, [SCHEMA, *(record(n) for n in range(1, 5))])
    end(first)
    assert [[p is not None for p in batch or []] for batch in pipeline.encoded] == [[True] * 2] * 2
    # The re-run: its first batch is unchanged, so the next batch's payloads are left to the
    # pipeline; that batch sends one of its two, so encoding at mapping time resumes.
    again, pipeline = make_target()
    feed(again, [SCHEMA, record(1), record(2), record(3), record(5), record(6), record(7)])
    end(again)
    assert [[p is not None for p in batch or []] for batch in pipeline.encoded] == [
        [False],  # user5 (user3 unchanged)
        [True, True],  # user6, user7
    ]
    assert again.summary.unchanged == 3
    assert again.summary.accepted == 3


def test_a_batch_is_full_at_max_size_contacts_not_records(make_target: Callable) -> None:
    target, pipeline = make_target(batch_size_rows=3)
    feed(
        target,
        [
            SCHEMA,
            record(1),
            record(2, "not-an-email"),  # rejected: holds no place
            record(3, "USER1@example.com"),  # merged into user1: holds no place
            record(4),
            record(5),  # the third contact: the batch is full and drained
            record(6),
        ],
    )
    assert [[c.key for c in contacts] for _, contacts, _ in pipeline.batches] == [
        ["user1@example.com", "user4@example.com", "user5@example.com"]
    ]
    end(target)
    assert target.summary.accepted == 4  # user6 went in the last, partial batch
    assert target.summary.unaccounted == 0


def test_a_duplicate_whose_merged_segments_are_refused_leaves_the_earlier_record_in_the_batch(
    make_target: Callable, tmp_path: Path
) -> None:
    # Each record alone carries 100 tags (99 labels + its segment tag); merged, 101.
    target, pipeline = make_target(
        batch_size_rows=10,
        segment_tag="seg: {segment}",
        segment_field="seg",
        field_mapping={"email": "email", "tags": "labels"},
    )
    schema = json.loads(json.dumps(SCHEMA))
    schema["schema"]["properties"]["seg"] = {"type": "string"}
    schema["schema"]["properties"]["labels"] = {"type": "array", "items": {"type": "string"}}
    labels = [f"label{n}" for n in range(99)]
    first, second = record(1, "a@x.com"), record(2, "a@x.com")
    first["record"].update(seg="gold", labels=labels)
    second["record"].update(seg="silver", labels=labels)
    feed(target, [schema, first, second])
    drain(target)
    (_, contacts, ticket) = pipeline.batches[0]
    assert [c.key for c in contacts] == ["a@x.com"]
    assert ticket.record("a@x.com")["id"] == 1  # the earlier record is still sent
    target.rejects.flush()  # rejects reach the file before the next STATE; none is due yet
    reject = json.loads((tmp_path / "rejects.jsonl").read_text().splitlines()[1])
    assert reject["record"]["id"] == 2
    assert reject["record"]["_reject"]["code"] == "too_many_tags"
    assert target.summary.duplicates_merged == 0
    assert target.summary.unaccounted == 1  # the earlier record, in flight


@pytest.mark.parametrize(
    "record",
    [
        {"id": 1, "n": Decimal("12.50"), "big": Decimal("1E+400"), "i": 10**30, "x": None},
        {"nested": {"a": [1, "b", True]}, "text": "Zoë", "empty": ""},
    ],
)
def test_a_source_record_waits_packed_and_comes_back_exactly(record: dict) -> None:
    packed = pack_record(record)
    assert isinstance(packed, bytes)
    back = unpack_record(packed)
    assert back == record
    assert [type(value) for value in back.values()] == [type(value) for value in record.values()]
    assert str(back.get("n", "")) == str(record.get("n", ""))  # Decimal digits kept: 12.50


@pytest.mark.parametrize(
    "record", [{"text": "bad \udcff byte"}, {"n": Decimal("NaN")}, {"when": object()}]
)
def test_a_record_that_cannot_be_packed_exactly_stays_as_it_is(record: dict) -> None:
    assert pack_record(record) is record
    assert unpack_record(record) is record


def test_invalid_records_become_rejects(make_target: Callable, tmp_path: Path) -> None:
    target, _ = make_target()
    bad = {"type": "RECORD", "stream": "s", "record": {"id": "one", "email": "a@x.com"}}
    feed(target, [SCHEMA, bad, record(2), state(2)])
    assert json.loads(end(target)) == {"bookmark": 2}
    reject = json.loads((tmp_path / "rejects.jsonl").read_text().splitlines()[1])
    assert reject["record"]["_reject"]["code"] == "schema_mismatch"
    assert "'one' is not of type 'integer'" in reject["record"]["_reject"]["message"]


def test_validation_can_be_turned_off(make_target: Callable) -> None:
    target, _ = make_target(validate_records=False)
    bad = {"type": "RECORD", "stream": "s", "record": {"id": "one", "email": "a@x.com"}}
    feed(target, [SCHEMA, bad])
    end(target)
    assert target.summary.accepted == 1


def test_reject_ratio_fails_after_accounting(make_target: Callable) -> None:
    target, _ = make_target(max_reject_ratio=0.25)
    feed(target, [SCHEMA, record(1, "bad"), record(2), state(2)])
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(RunFailed, match=r"above max_reject_ratio 25\.0%"):
        target.process_endofpipe()
    assert out.getvalue() == ""
    assert target.summary.unaccounted == 0


def test_schema_change_recompiles_the_plan(make_target: Callable) -> None:
    target, _ = make_target()
    renamed = json.loads(json.dumps(SCHEMA))
    renamed["schema"]["properties"] = {"id": {"type": "integer"}, "note": {"type": "string"}}
    feed(
        target,
        [
            SCHEMA,
            record(1),
            renamed,
            {"type": "RECORD", "stream": "s", "record": {"id": 2, "note": "m@x.com"}},
        ],
    )
    end(target)
    assert target.summary.accepted == 1
    assert dict(target.summary.rejected) == {"missing_identifier": 1}


def test_termination_finishes_in_flight_batches_then_exits_cleanly(make_target: Callable) -> None:
    target, pipeline = make_target()
    feed(target, [SCHEMA, record(1), record(2), record(3), state(3)])
    assert len(pipeline.batches) == 1  # records 1-2 submitted, record 3 still in the sink
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as stopped:
        target._handle_termination(15, None)
    assert stopped.value.code == 0
    assert json.loads(out.getvalue()) == {"bookmark": 3}
    assert target.summary.accepted == 3


def test_termination_with_unaccounted_batches_exits_non_zero_without_state(
    make_target: Callable,
) -> None:
    target, pipeline = make_target()
    pipeline.wait_all = lambda: None
    feed(target, [SCHEMA, record(1), state(1)])
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as stopped:
        target._handle_termination(15, None)
    assert stopped.value.code == 1
    assert out.getvalue() == ""


def test_termination_while_busy_waits_for_the_message_to_finish(make_target: Callable) -> None:
    target, _ = make_target()
    feed(target, [SCHEMA, record(1)])
    target._busy += 1  # as if a signal arrived in the middle of a message
    target._handle_termination(15, None)
    assert target._terminate_requested == 15
    target._busy -= 1
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as stopped:
        feed(target, [record(2), state(2)])
    assert stopped.value.code == 0
    assert target.summary.accepted == 2


def test_the_sdc_columns_skipped_early_are_all_the_sdk_strips() -> None:
    # ContactSink skips the SDK's stripping when a record has none of _SDC_COLUMNS: that set
    # must hold every column the SDK's method names.
    import inspect
    import re

    from singer_sdk.sinks.core import Sink

    from target_omnisend.segments import SDC_COLUMNS as _SDC_COLUMNS

    source = inspect.getsource(Sink._remove_sdc_metadata_from_record)
    named = set(re.findall(r"[\"'](_sdc_\w+)[\"']", source))
    assert named
    assert named <= _SDC_COLUMNS
