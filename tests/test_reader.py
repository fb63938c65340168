"""SingerLineReader: bytes or text in, dicts out, bad lines reported by number only."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_omnisend.reader import SingerLineReader


def read_all(data: bytes | str) -> list[dict]:
    reader = SingerLineReader()
    seen: list[dict] = []
    stream = io.BytesIO(data) if isinstance(data, bytes) else io.StringIO(data)
    reader.process_lines(stream, {"RECORD": seen.append, "SCHEMA": seen.append})
    return seen


def test_bytes_and_text_lines_decode_alike_with_exact_numbers() -> None:
    line = '{"type": "RECORD", "stream": "s", "record": {"ltv": 12.30, "n": 3, "name": "Zoë"}}\n'
    from_bytes = read_all(line.encode("utf-8"))
    from_text = read_all(line)
    assert from_bytes == from_text
    record = from_bytes[0]["record"]
    assert record["ltv"] == Decimal("12.30")
    assert record["n"] == 3
    assert record["name"] == "Zoë"


def test_non_utf8_bytes_become_lone_surrogates_not_a_failure() -> None:
    line = b'{"type": "RECORD", "stream": "s", "record": {"name": "caf\xe9"}}\n'
    (message,) = read_all(line)
    assert message["record"]["name"] == "caf\udce9"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"type": "SCHEMA"}\n{"type": "RECORD", "record": {"email": "jane@x.com"\n', "line 2"),
        (b"[1, 2]\n", "line 1 is not a JSON object"),
        (b'{"stream": "s", "email": "jane@x.com"}\n', "line 1 is missing the type key"),
    ],
)
def test_bad_lines_are_reported_by_number_without_their_content(data: bytes, expected: str) -> None:
    with pytest.raises(InvalidInputLine) as raised:
        read_all(data)
    assert expected in str(raised.value)
    assert "jane" not in str(raised.value)
