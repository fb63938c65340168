"""DryRunWriter: batches encoded at once, written in order by a background thread, failures loud."""

from __future__ import annotations

import errno
import json
import logging
import stat
from pathlib import Path

import pytest

from target_omnisend.dry_run import (
    DryRunFileError,
    DryRunWriter,
    encode_payload_line,
    encode_payload_lines,
)
from target_omnisend.mapping import MappedContact

LOGGER = logging.getLogger("test-dry-run")


def contact(n: int, first_name: str = "Jane") -> MappedContact:
    email = f"user{n}@example.com"
    payload = {"identifiers": [{"type": "email", "id": email}], "firstName": first_name}
    return MappedContact(email, email, None, payload, ("vip",))


def test_batches_land_in_order_one_line_per_contact(tmp_path: Path) -> None:
    path = tmp_path / "out" / "dry-run.jsonl"
    writer = DryRunWriter(path, LOGGER)
    for start in range(0, 300, 100):
        writer.write("crm", [contact(n) for n in range(start, start + 100)])
    writer.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["key"] for line in lines] == [f"user{n}@example.com" for n in range(300)]
    assert lines[0] == {
        "stream": "crm",
        "key": "user0@example.com",
        "payload": contact(0).payload,
        "tags": ["vip"],
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_nothing_written_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "dry-run.jsonl"
    DryRunWriter(path, LOGGER).close()
    assert not path.exists()


def test_a_lone_surrogate_is_escaped_not_fatal() -> None:
    data = encode_payload_lines("crm", [contact(1), contact(2, "Ren\udce9")])
    lines = data.decode("utf-8").splitlines()
    assert json.loads(lines[0])["payload"]["firstName"] == "Jane"
    assert "\\udce9" in lines[1]


def test_a_file_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    writer = DryRunWriter(blocker / "dry-run.jsonl", LOGGER)
    with pytest.raises(DryRunFileError, match="Cannot write the dry-run file"):
        writer.write("crm", [contact(1)])


def test_a_failed_write_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = DryRunWriter(tmp_path / "dry-run.jsonl", LOGGER)
    writer.write("crm", [contact(1)])
    assert writer._file is not None

    def disk_full(data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer._file, "write", disk_full)
    writer.write("crm", [contact(2)])
    with pytest.raises(DryRunFileError, match="No space left on device"):
        writer.close()


def test_lines_encoded_by_the_sink_make_the_same_bytes() -> None:
    contacts = [contact(1), contact(2, "Ren\udce9"), contact(3, "Zoë")]
    encoded = [encode_payload_line("crm", c) for c in contacts]
    assert encoded[1] is None  # msgspec refuses a lone surrogate: the tolerant encoder writes it
    assert encode_payload_lines("crm", contacts, encoded) == encode_payload_lines("crm", contacts)
    clean = [contacts[0], contacts[2]]
    data = encode_payload_lines("crm", clean, [encoded[0], encoded[2]])
    assert [json.loads(line)["key"] for line in data.splitlines()] == [c.key for c in clean]
    assert encode_payload_lines("crm", [], []) == b""
