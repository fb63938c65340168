"""RejectWriter: owner-only Singer lines that can be piped back in; thread-safe; safe encoding."""

from __future__ import annotations

import json
import logging
import stat
import threading
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from target_omnisend.rejects import REJECT_PROPERTY, RejectWriter, json_default
from target_omnisend.summary import RunSummary, format_table, mask_email, mask_phone

SCHEMA = {"type": "object", "properties": {"email": {"type": "string"}, "n": {"type": "number"}}}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_no_file_until_first_reject(tmp_path: Path) -> None:
    writer = RejectWriter(tmp_path / "sub" / "rejects.jsonl")
    writer.close()
    assert not (tmp_path / "sub").exists()


def test_owner_only_file_and_directory(tmp_path: Path) -> None:
    path = tmp_path / "private" / "rejects.jsonl"
    writer = RejectWriter(path)
    writer.write("s", SCHEMA, {"email": "x"}, "invalid_email", "bad")
    writer.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_schema_once_then_records_with_reject_object(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = RejectWriter(path)
    writer.write("s", SCHEMA, {"email": "a"}, "invalid_email", "not an email")
    writer.write("s", SCHEMA, {"email": "b"}, "api_rejected", "Omnisend said no", "400 bad")
    writer.write("t", SCHEMA, {"email": "c"}, "missing_identifier", "none")
    writer.close()
    lines = _lines(path)
    assert [line["type"] for line in lines] == ["SCHEMA", "RECORD", "RECORD", "SCHEMA", "RECORD"]
    assert REJECT_PROPERTY in lines[0]["schema"]["properties"]
    assert lines[0]["schema"]["properties"]["email"] == {"type": "string"}
    assert lines[2]["record"] == {
        "email": "b",
        "_reject": {"code": "api_rejected", "message": "Omnisend said no", "api_error": "400 bad"},
    }
    assert writer.counts_by_code() == {
        "invalid_email": 1,
        "api_rejected": 1,
        "missing_identifier": 1,
    }
    assert writer.total == 3


def test_a_changed_schema_is_written_again(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = RejectWriter(path)
    writer.write("s", SCHEMA, {"email": "a"}, "c", "m")
    changed = {"type": "object", "properties": {"mail": {"type": "string"}}}
    writer.write("s", changed, {"mail": "a"}, "c", "m")
    writer.write("s", dict(changed), {"mail": "b"}, "c", "m")
    writer.close()
    assert [line["type"] for line in _lines(path)] == [
        "SCHEMA",
        "RECORD",
        "SCHEMA",
        "RECORD",
        "RECORD",
    ]


def test_values_are_encoded_safely(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = RejectWriter(path)
    record = {
        "n": Decimal("1.5"),
        "i": Decimal("10"),
        "big": Decimal("0.1000000000000000000000001"),
        "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "raw": b"\x00\xff",
        "text": "Zoë",
    }
    writer.write("s", SCHEMA, record, "c", "m")
    writer.close()
    row = _lines(path)[1]["record"]
    assert row["n"] == 1.5
    assert row["i"] == 10
    assert row["big"] == "0.1000000000000000000000001"
    assert row["at"] == "2026-01-02T03:04:05+00:00"
    assert row["text"] == "Zoë"
    assert json_default(Decimal("NaN")) == "NaN"


def test_an_old_reject_object_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = RejectWriter(path)
    old = {"code": "x", "message": "old", "api_error": None}
    writer.write("s", SCHEMA, {"email": "a", "_reject": old}, "invalid_email", "new")
    writer.close()
    assert _lines(path)[1]["record"]["_reject"]["message"] == "new"


def test_a_source_column_named_reject_is_kept_intact(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = RejectWriter(path)
    writer.write("s", SCHEMA, {"email": "a", "_reject": "a column of the source"}, "x", "why")
    writer.write("s", SCHEMA, {"email": "b", "_reject": None}, "x", "again")
    writer.close()
    schema, first, second = _lines(path)
    assert first["record"] == {
        "email": "a",
        "_reject": "a column of the source",
        "_reject_1": {"code": "x", "message": "why", "api_error": None},
    }
    assert second["record"]["_reject"] is None
    assert second["record"]["_reject_1"]["message"] == "again"
    assert "_reject_1" in schema["schema"]["properties"]


def test_thread_safe_lines_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = RejectWriter(path)

    def write_many(stream: str) -> None:
        for index in range(200):
            writer.write(stream, SCHEMA, {"email": "x" * 500, "n": index}, "c", "m")

    threads = [threading.Thread(target=write_many, args=(f"s{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    lines = _lines(path)
    assert sum(1 for line in lines if line["type"] == "RECORD") == 800
    assert sum(1 for line in lines if line["type"] == "SCHEMA") == 4
    assert writer.total == 800


def test_masking_helpers() -> None:
    assert mask_email("jane.doe@example.com") == "j***@e***.com"
    assert mask_email("nodomain") == "n***"
    assert mask_email(None) == ""
    assert mask_phone("+447700900123") == "+44********23"
    assert mask_phone("123") == "***"


def test_summary_accounts_and_formats() -> None:
    ticks = iter([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    summary = RunSummary(logging.getLogger("test"), clock=lambda: next(ticks))
    summary.add_read(5)
    summary.add_accepted(2)
    summary.add_rejected("invalid_email")
    summary.add_duplicates_merged(1)
    assert summary.unaccounted == 1
    summary.add_rejected("api_rejected")
    assert summary.unaccounted == 0
    stats = {
        "requests": 10,
        "requests_by_endpoint": {"POST /batches": 8, "GET /batches": 2},
        "responses_429": 1,
        "retries": 2,
    }
    result = summary.as_dict(stats)
    assert result["contacts_upserted"] == 2
    assert result["rejected_by_reason"] == {"api_rejected": 1, "invalid_email": 1}
    assert result["polls_share"] == 0.2
    assert result["responses_429"] == 1
    table = format_table(result)
    assert "contacts upserted" in table
    assert "invalid_email" in table
