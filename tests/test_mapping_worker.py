"""The mapping worker: the same outcomes as the main process, in order, and nothing lost.

Unit tests drive `WorkerMapper` and `MappingWorker` directly (a real worker process, no mocks);
the CLI tests run `target-omnisend` twice on one input with edge cases, with and without
`parallel_mapping`, and require the same dry-run file, rejects, summary, STATE and sandbox.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from target_omnisend.client import encode_json
from target_omnisend.dry_run import encode_payload_line
from target_omnisend.mapping import MappedContact, MappingConfig, compile_plan
from target_omnisend.mapping_worker import (
    CHUNK_LINES,
    EncodedPayload,
    MappingWorker,
    StreamSpec,
    WorkerMapper,
    read_frame,
    write_frame,
)
from target_omnisend.pipeline import encode_payload
from target_omnisend.reader import JSON_DECODER
from target_omnisend.sync_store import fingerprint
from target_omnisend.target import summary_from_log_line
from tests.helpers import EXECUTABLE, run_cli, write_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import generate  # noqa: E402

STREAM = generate.STREAMS[0]
TAGS = ("segment: vip_customers",)


def mapping_config(**changes: Any) -> MappingConfig:
    return MappingConfig.from_target_config(generate.target_mapping_config() | changes)


def spec(dry_run: bool = True, fingerprints: bool = False, **changes: Any) -> StreamSpec:
    return StreamSpec(
        stream=STREAM,
        schema=generate.SCHEMA,
        mapping_config=mapping_config(),
        key_properties=("id",),
        tags=TAGS,
        validate=True,
        validate_formats=False,
        fingerprints=fingerprints,
        dry_run=dry_run,
        **changes,
    )


def record_line(record: dict[str, Any], stream: str = STREAM) -> bytes:
    return encode_json({"type": "RECORD", "stream": stream, "record": record})


def records(count: int) -> list[dict[str, Any]]:
    lines = (JSON_DECODER.decode(line) for line in generate.iter_messages(count))
    return [m["record"] for m in lines if m["type"] == "RECORD"]


# -- WorkerMapper: what the worker computes -----------------------------------------------------


@pytest.mark.parametrize("dry_run", [True, False])
def test_outcomes_equal_the_sinks_own_mapping(dry_run: bool) -> None:
    mapper = WorkerMapper()
    mapper.add(spec(dry_run=dry_run, fingerprints=True))
    plan = compile_plan(generate.SCHEMA, mapping_config())
    sample = records(300)
    outcomes = mapper.map_lines([record_line(record) for record in sample])
    mapped = 0
    for record, outcome in zip(sample, outcomes, strict=True):
        contact = plan.map(record, TAGS)
        if not isinstance(contact, MappedContact):
            assert outcome is None  # rejects are the main process's to write
            continue
        mapped += 1
        key, email, phone, tags, payload, line, print_ = outcome
        assert (key, email, phone, tags) == (
            contact.key,
            contact.email,
            contact.phone,
            contact.tags,
        )
        assert print_ == fingerprint(contact.payload, contact.tags, exclude_tags=TAGS)
        if dry_run:
            assert (payload, line) == (None, encode_payload_line(STREAM, contact))
        else:
            assert (payload, line) == (encode_payload(contact), None)
    assert mapped == generate.expected(300).valid


def test_lines_the_worker_does_not_map_are_handed_back() -> None:
    mapper = WorkerMapper()
    mapper.add(spec())
    good = records(1)[0]
    cases = [
        record_line(good | {"orders_count": "many"}),  # fails validation: a reject
        record_line(good | {"_sdc_deleted_at": "2026-01-01T00:00:00Z"}),  # an exit
        record_line({k: v for k, v in good.items() if k != "id"}),  # missing key property
        record_line(good, stream="unknown"),
        record_line(good | {"email": None, "phone": None}),  # missing_identifier
        b'{"type": "STATE", "value": {}}',
        b"not json",
        b'{"type": "RECORD", "stream": "vip_customers", "record": [1]}',
        not_utf8(record_line(good), b'"first_name":"'),  # not UTF-8 where it is mapped
    ]
    assert mapper.map_lines(cases) == [None] * len(cases)
    assert mapper.map_lines([record_line(good)])[0] is not None


def test_encoded_payload_decodes_only_when_read() -> None:
    contact = compile_plan(generate.SCHEMA, mapping_config()).map(records(1)[0], TAGS)
    assert isinstance(contact, MappedContact)
    payload = EncodedPayload(encode_payload(contact))
    assert payload._decoded is None
    assert dict(payload) == contact.payload
    in_line = EncodedPayload(encode_payload_line(STREAM, contact), in_line=True)
    assert dict(in_line) == contact.payload
    assert len(in_line) == len(contact.payload)


def test_frames_round_trip_and_a_cut_frame_is_the_end() -> None:
    buffer = io.BytesIO()
    write_frame(buffer, b"one")
    write_frame(buffer, b"")
    write_frame(buffer, b"three")
    data = buffer.getvalue()
    stream = io.BytesIO(data)
    assert [read_frame(stream) for _ in range(4)] == [b"one", b"", b"three", None]
    assert read_frame(io.BytesIO(data[:-1][-9:])) is None


# -- MappingWorker: a real worker process -------------------------------------------------------


class Collector:
    """The `deliver` callback: keeps every (sink, line, outcome) of every chunk, in order."""

    def __init__(self) -> None:
        self.delivered: list[tuple[Any, bytes, Any]] = []

    def __call__(self, sinks: Any, lines: Any, outcomes: Any) -> None:
        self.delivered.extend(zip(sinks, lines, outcomes, strict=True))


def feed(worker: MappingWorker, lines: list[bytes]) -> list[bool]:
    taken = []
    for line in lines:
        taken.append(worker.take(line))
        if not taken[-1]:
            worker.barrier()
    worker.barrier()
    return taken


def test_every_line_comes_back_in_order_with_the_local_outcome() -> None:
    collector = Collector()
    worker = MappingWorker(collector, warmup_records=10)
    worker.register("sink", spec())
    lines = [record_line(record) for record in records(6 * CHUNK_LINES)]
    state = b'{"type": "STATE", "value": {}}'
    lines.insert(3000, state)
    try:
        taken = feed(worker, lines)
        for _ in range(200):  # the worker imports for a moment; then it takes chunks too
            if worker._worker_ready:
                break
            time.sleep(0.05)
        more = [record_line(record) for record in records(8 * CHUNK_LINES)[-4 * CHUNK_LINES :]]
        taken += feed(worker, more)
    finally:
        worker.close()
    assert taken[:10] == [False] * 10  # the warm-up stays in the main process
    assert taken.count(False) == 11  # and the STATE line was never taken
    expected = [line for line, took in zip(lines + more, taken, strict=True) if took]
    assert [line for _, line, _ in collector.delivered] == expected
    reference = WorkerMapper()
    reference.add(spec())
    assert [outcome for _, _, outcome in collector.delivered] == reference.map_lines(expected)
    assert worker.lines_in_worker > 0
    assert worker.lines_in_worker + worker.lines_in_main == len(expected)
    assert worker.stopped_reason is None


def test_a_dead_worker_leaves_its_lines_to_the_main_process() -> None:
    collector = Collector()
    worker = MappingWorker(collector, warmup_records=0)
    worker.register("sink", spec())
    lines = [record_line(record) for record in records(10 * CHUNK_LINES)]
    try:
        worker.take(lines[0])
        for _ in range(200):
            if worker._worker_ready:
                break
            time.sleep(0.05)
        assert worker._worker_ready
        worker._process.kill()
        feed(worker, lines[1:])
    finally:
        worker.close()
    assert [line for _, line, _ in collector.delivered] == lines
    reference = WorkerMapper()
    reference.add(spec())
    assert [outcome for _, _, outcome in collector.delivered] == reference.map_lines(lines)
    assert "stopped" in (worker.stopped_reason or "")


def test_only_record_lines_of_registered_streams_are_taken() -> None:
    worker = MappingWorker(Collector(), warmup_records=0)
    good = record_line(records(1)[0])
    assert not worker.take(good)  # nothing registered yet
    worker.register("sink", spec())
    try:
        assert not worker.take(record_line(records(1)[0], stream="other"))
        assert not worker.take(b'{"type": "SCHEMA", "stream": "vip_customers"}')
        assert not worker.take(good.decode())  # text lines stay in the main process
        assert not worker.take(b"{not json")
        assert worker.take(good)
        worker.unregister(STREAM)
        assert not worker.take(good)
        worker.barrier()
    finally:
        worker.close()


# -- the CLI, with and without the worker -------------------------------------------------------


def not_utf8(line: bytes, before: bytes) -> bytes:
    return line.replace(before, before + b"\xff")


def edge_case_input(path: Path, count: int = 9000) -> Path:
    """Generated profiles plus what must go the main process's way, at known places."""
    lines = [line.encode() for line in generate.iter_messages(count)]
    records_at = [i for i, line in enumerate(lines) if line.startswith(b'{"type":"RECORD"')]
    message = json.loads(lines[records_at[4000]])
    duplicate = message | {"record": message["record"] | {"first_name": "Later"}}
    deleted = json.loads(lines[records_at[5000]])
    deleted["record"]["_sdc_deleted_at"] = "2026-11-30T00:00:00Z"
    mismatch = json.loads(lines[records_at[5500]])
    mismatch["record"]["orders_count"] = "many"
    schema = next(line for line in lines if line.startswith(b'{"type":"SCHEMA"'))
    inserts = {
        records_at[4010]: [json.dumps(duplicate).encode()],  # same contact, same batch
        records_at[5001]: [json.dumps(deleted).encode()],
        records_at[5501]: [json.dumps(mismatch).encode()],
        records_at[3000]: [schema],  # the stream's schema again, mid-stream
        records_at[6000]: [not_utf8(lines[records_at[6000]], b'"first_name":"')],  # mapped
        records_at[6500]: [not_utf8(lines[records_at[6500]], b'"updated_at":"')],  # unmapped
    }
    with path.open("wb") as out:
        for index, line in enumerate(lines):
            out.write(line + b"\n")
            for extra in inserts.get(index, ()):
                out.write(extra + b"\n")
    return path


def summary_of(stderr: str) -> dict[str, Any]:
    for line in reversed(stderr.splitlines()):
        summary = summary_from_log_line(line)
        if summary is not None:
            return dict(summary)
    raise AssertionError("no summary in the log")


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary's accounting of records (not timings, polls, nor where files went)."""
    timing = {"elapsed_seconds", "parallel_mapping", "requests", "requests_by_endpoint"}
    return {k: v for k, v in summary.items() if k not in timing | {"polls_share", "dry_run_file"}}


@pytest.mark.e2e
def test_a_dry_run_writes_the_same_files_with_and_without_the_worker(tmp_path: Path) -> None:
    source = edge_case_input(tmp_path / "input.singer")
    results = {}
    for parallel in (False, True):
        out = tmp_path / str(parallel)
        out.mkdir()
        config = generate.target_mapping_config() | {
            "api_key": "brand1-0123456789abcdef",
            "dry_run": True,
            "dry_run_path": str(out / "payloads.jsonl"),
            "rejects_path": str(out / "rejects.jsonl"),
            "parallel_mapping": parallel,
        }
        result = run_cli(config, source, out)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        results[parallel] = (out, summary_of(result.stderr))
    serial, parallel = results[False], results[True]
    for name in ("payloads.jsonl", "rejects.jsonl"):
        assert (serial[0] / name).read_bytes() == (parallel[0] / name).read_bytes(), name
    assert comparable(serial[1]) == comparable(parallel[1])
    # the duplicate and the two copies with bytes that are not UTF-8 are merged; one deletion
    assert (serial[1]["duplicates_merged"], serial[1]["deletions"]) == (3, 1)
    assert "schema_mismatch" in serial[1]["rejected_by_reason"]
    assert "parallel_mapping" not in serial[1]
    mapped = parallel[1]["parallel_mapping"]
    assert mapped["in_worker"] + mapped["in_main"] > 6000
    assert mapped["worker_peak_rss_mb"] > 5  # its memory is reported (benchmark 3 adds it)


@pytest.mark.e2e
def test_a_real_run_loads_the_same_contacts_and_state_with_the_worker(
    tmp_path: Path, sandbox_factory: Any
) -> None:
    source = edge_case_input(tmp_path / "input.singer", count=7000)
    outcomes = {}
    for parallel in (False, True):
        sandbox = sandbox_factory(batch_processing_delay=0.05, supported_versions=["v5"])
        out = tmp_path / str(parallel)
        out.mkdir()
        config = generate.target_mapping_config() | {
            "api_key": "brand1-0123456789abcdef",
            "api_version": "v5",
            "api_url": sandbox.v5_url,
            "rejects_path": str(out / "rejects.jsonl"),
            "sync_state_path": str(out / "sync.sqlite"),
            "parallel_mapping": parallel,
        }
        result = run_cli(config, source, out, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        contacts = sorted(
            sandbox.dump()["contacts"], key=lambda c: json.dumps(c["identifiers"], sort_keys=True)
        )
        for contact in contacts:  # set by the sandbox at upsert time
            for moment in ("contactID", "id", "createdAt", "updatedAt"):
                contact.pop(moment, None)
        outcomes[parallel] = (
            result.stdout,
            (out / "rejects.jsonl").read_bytes(),
            contacts,
            comparable(summary_of(result.stderr)),
        )
    assert outcomes[False][0] == outcomes[True][0]  # STATE
    assert outcomes[False][1] == outcomes[True][1]  # rejects
    assert outcomes[False][2] == outcomes[True][2]  # what Omnisend holds
    assert len(outcomes[False][2]) > 5000
    assert "invalid_encoding" in outcomes[False][3]["rejected_by_reason"]
    assert outcomes[False][3] == outcomes[True][3]


@pytest.mark.e2e
def test_sigterm_with_the_worker_running_loses_nothing(
    tmp_path: Path, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory(batch_processing_delay=1.0, supported_versions=["v5"])
    source = tmp_path / "bulk.singer"
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "email": {}}}
    with source.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"type": "SCHEMA", "stream": "bulk", "schema": schema}) + "\n")
        for n in range(1, 40_001):
            record = {"n": n, "email": f"bulk{n}@example.com"}
            out.write(json.dumps({"type": "RECORD", "stream": "bulk", "record": record}) + "\n")
            if n % 500 == 0:
                out.write(json.dumps({"type": "STATE", "value": {"through": n}}) + "\n")
    config = {
        "api_key": "brand1-0123456789abcdef",
        "api_version": "v5",
        "api_url": sandbox.v5_url,
        "rejects_path": str(tmp_path / "rejects.jsonl"),
        "max_batches_in_flight": 2,  # slow enough to be stopped half way
    }
    with source.open("rb") as stdin:
        process = subprocess.Popen(
            [EXECUTABLE, "--config", str(write_config(config, tmp_path))],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        deadline = time.monotonic() + 60
        while len(sandbox.dump()["contacts"]) < 4000 and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    log = stderr.decode()
    assert process.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    summary = summary_of(log)
    read = summary["records_read"]
    assert 4000 <= read < 40_000  # stopped half way, with the worker's lines in use
    assert summary["parallel_mapping"]["in_worker"] + summary["parallel_mapping"]["in_main"] > 0
    states = [json.loads(line) for line in stdout.decode().splitlines()]
    assert len(states) == 1
    assert read - 500 <= states[0]["through"] <= read  # the last STATE read, all confirmed
    held = {c["identifiers"][0]["id"] for c in sandbox.dump()["contacts"]}
    assert {f"bulk{n}@example.com" for n in range(1, read + 1)} <= held
