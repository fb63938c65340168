"""A tap that dies half way must not look like a full snapshot (full_segment_snapshot).

End of input is not a sign that a stream is complete: Meltano closes the target's input when the
tap exits, finished or not, and SDK taps send no closing ACTIVATE_VERSION. Exits are applied
only to streams the tap is seen to have finished: it went on to another stream, or the records'
`snapshot_size_field` matches how many arrived. The real-tap version of these tests (tap-postgres
through Meltano, the tap failing mid-view) is in tests/test_postgres_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from target_omnisend.mapping import make_getter
from target_omnisend.segments import StreamCompletion
from tests.test_segments_e2e import SCHEMA, config, ok, people, run, tagged

__all__ = ["config"]  # the fixture, shared with test_segments_e2e

TEN = ("ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal", "ivy", "jo")


def tap_output(streams: list[tuple[str, dict[str, str]]], size: int | None = None) -> str:
    """What an SDK tap sends for full-table streams: SCHEMA, RECORDs, STATE; no ACTIVATE_VERSION.

    `size`: every record carries `snapshot_size` (the `count(*) over ()` of its view).
    """
    lines: list[dict[str, Any]] = []
    for stream, members in streams:
        schema = json.loads(json.dumps({**SCHEMA, "stream": stream}))
        schema["schema"]["properties"]["snapshot_size"] = {"type": ["integer", "null"]}
        lines.append(schema)
        for email, name in members.items():
            record: dict[str, Any] = {"email": email, "first_name": name}
            if size is not None:
                record["snapshot_size"] = size
            lines.append({"type": "RECORD", "stream": stream, "record": record})
        lines.append({"type": "STATE", "value": {"bookmarks": {stream: {}}}})
    return "".join(json.dumps(line) + "\n" for line in lines)


@pytest.fixture
def snapshot_config(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "full_segment_snapshot": True, "on_segment_exit": "remove_tag"}


def test_the_last_stream_without_a_sign_of_its_end_loses_nobody(
    snapshot_config: dict[str, Any], sandbox: Any, tmp_path: Path
) -> None:
    ok(run(snapshot_config, tap_output([("vip", people(*TEN))]), tmp_path))
    # The tap dies after 9 of 10 rows: the target sees the same end of input as a full run.
    result = ok(run(snapshot_config, tap_output([("vip", people(*TEN[:9]))]), tmp_path))
    assert tagged(sandbox, "segment: vip") == set(people(*TEN))
    assert "Stream 'vip' is not treated as a full snapshot" in result.stderr
    assert "nothing showed the tap finished it" in result.stderr


def test_a_stream_the_tap_moved_on_from_is_complete(
    snapshot_config: dict[str, Any], sandbox: Any, tmp_path: Path
) -> None:
    two = [("vip", people(*TEN)), ("lapsed", people("kim", "lou"))]
    ok(run(snapshot_config, tap_output(two), tmp_path))
    one_left = [("vip", people(*TEN[:9])), ("lapsed", people("kim", "lou"))]
    result = ok(run(snapshot_config, tap_output(one_left), tmp_path))
    assert tagged(sandbox, "segment: vip") == set(people(*TEN[:9]))
    # The last stream is not known complete: nobody could have left it.
    assert "Stream 'lapsed' is not treated as a full snapshot" in result.stderr
    assert "Stream 'vip' is not" not in result.stderr


def test_snapshot_size_completes_the_last_stream_only_when_every_row_arrived(
    snapshot_config: dict[str, Any], sandbox: Any, tmp_path: Path
) -> None:
    sized = {**snapshot_config, "snapshot_size_field": "snapshot_size"}
    ok(run(sized, tap_output([("vip", people(*TEN))], size=10), tmp_path))
    # Nine rows of a ten-row snapshot (the tap died): nobody leaves.
    result = ok(run(sized, tap_output([("vip", people(*TEN[:9]))], size=10), tmp_path))
    assert tagged(sandbox, "segment: vip") == set(people(*TEN))
    assert "9 of the 10 records its snapshot size announces arrived" in result.stderr
    # The view now holds nine rows and all nine arrived: jo left.
    ok(run(sized, tap_output([("vip", people(*TEN[:9]))], size=9), tmp_path))
    assert tagged(sandbox, "segment: vip") == set(people(*TEN[:9]))


def test_completion_signals() -> None:
    completion = StreamCompletion()
    for stream in ("a", "a", "b", "b", "c"):
        if stream != completion.last:
            completion.switch(stream)
    assert completion.why_incomplete("a") is None
    assert completion.why_incomplete("b") is None
    assert "last stream" in str(completion.why_incomplete("c"))
    completion.switch("a")  # a's records again after c's: interleaved, never complete
    assert "interleaved" in str(completion.why_incomplete("a"))
    assert completion.saw("a")
    assert completion.saw("c")
    assert not completion.saw("z")


@pytest.mark.parametrize(
    ("sizes", "reason"),
    [
        ([3, 3, 3], None),
        ([3, 3], "2 of the 3 records"),
        ([3, 4, 3], "different snapshot sizes"),
        (["3", "3", "3"], None),
        ([None, None, None], "not a number"),
        (["three"] * 3, "not a number"),
    ],
)
def test_snapshot_size_checks(sizes: list[Any], reason: str | None) -> None:
    completion = StreamCompletion(make_getter("meta.size"))
    completion.switch("vip")
    for size in sizes:
        completion.record("vip", {"meta": {"size": size}})
    got = completion.why_incomplete("vip")
    assert got is None if reason is None else reason in str(got)
