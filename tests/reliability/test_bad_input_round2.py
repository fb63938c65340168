"""Bad input, round 2 (issue 17): what Python taps write, records at fault, derived values,
unreadable lines and retries that run out; each a reject row with its reason or one clear line,
never a traceback. Real CLI against the sandbox (or a small local server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import (
    Accounting,
    Dataset,
    TargetRun,
    account,
    assert_clean_exit,
    assert_clear_error,
    base_config,
    check_security,
    email_of,
    held_emails,
    make_dataset,
    record_message,
    record_result,
    schema_message,
    singer_text,
    state_message,
)
from tests.reliability.local_server import LocalServer, Seen
from tests.reliability.test_bad_input import (
    GOOD,
    SCHEMA,
    assert_single_reject,
    run_input,
    run_records,
)
from tests.reliability.test_faults import RPM, TIME_SCALE

pytestmark = pytest.mark.reliability


def raw_record(n: int, email: str, extra: str) -> str:
    """A RECORD line written by hand (`extra`: more members, JSON as a Python tap writes it)."""
    record = f'{{"n": {n}, "email": "{email}"{extra}}}'
    return f'{{"type": "RECORD", "stream": "segment", "record": {record}}}\n'


def lines(*parts: str) -> str:
    """The SCHEMA, the good record, then `parts` (each a Singer line)."""
    return singer_text([schema_message(SCHEMA), record_message(GOOD)]) + "".join(parts)


# -- 3. what Python taps write: NaN, Infinity, lone surrogates ----------------------------------


def test_nan_infinity_and_lone_surrogates_are_read_as_the_sdk_reads_them(
    sandbox: Any, tmp_path: Path
) -> None:
    stdin = lines(
        raw_record(1, "nan@example.com", ', "attrs": NaN, "labels": "\\ud800 unmapped"'),
        raw_record(2, "inf@example.com", ', "attrs": -Infinity'),
        raw_record(3, "surrogate@example.com", ', "first_name": "Zo\\udce9"'),
        raw_record(4, "fine@example.com", ', "attrs": 12.5'),
        json.dumps(state_message(4)) + "\n",
    )
    outcome = run_input(sandbox, tmp_path, stdin, custom_properties={"score": "attrs"})
    assert_clean_exit(outcome)
    rows = {row["n"]: row for row in outcome.reject_rows()}
    assert {n: row["_reject"]["code"] for n, row in rows.items()} == {
        1: "invalid_number",
        2: "invalid_number",
        3: "invalid_encoding",
    }
    assert rows[1]["_reject"]["message"] == "customProperties.score is nan: not a finite number."
    assert rows[2]["_reject"]["message"] == "customProperties.score is -inf: not a finite number."
    held = held_emails(sandbox)
    assert {GOOD["email"], "fine@example.com"} <= held
    assert not {"nan@example.com", "inf@example.com", "surrogate@example.com"} & held
    assert outcome.states == [{"bookmarks": {"segment": {"last": 4}}}]
    emails = ["nan@example.com", "inf@example.com", "surrogate@example.com", "fine@example.com"]
    records = [GOOD] + [{"n": n, "email": e} for n, e in enumerate(emails, start=1)]
    result = account(
        "bad input: NaN, Infinity, lone surrogates",
        Dataset(records, {1, 2, 3}),
        sandbox.dump(),
        list(rows.values()),
    )
    assert result.lost == 0


def test_nan_in_a_field_that_is_not_mapped_is_no_reason_to_reject(
    sandbox: Any, tmp_path: Path
) -> None:
    stdin = lines(raw_record(1, "nan@example.com", ', "attrs": NaN, "labels": Infinity'))
    outcome = run_input(sandbox, tmp_path, stdin)
    assert_clean_exit(outcome)
    assert outcome.reject_rows() == []
    assert "nan@example.com" in held_emails(sandbox)


def test_a_bad_line_says_exactly_which_records_were_loaded(sandbox: Any, tmp_path: Path) -> None:
    before = [{"n": i, "email": email_of(i)} for i in range(1, 8)] + [{"n": 8, "email": "bad"}]
    stdin = singer_text(
        [schema_message(SCHEMA)] + [record_message(r) for r in before] + [state_message(8)]
    )
    stdin += '{"type": "RECORD", "stream": "segment", "record": {"n": 9,\n'  # cut short
    stdin += singer_text([record_message({"n": 10, "email": email_of(10)})])
    outcome = run_input(sandbox, tmp_path, stdin)
    assert_clear_error(outcome, "input line 11 is not valid JSON")
    assert "Of the 8 records before it, 7 were loaded into Omnisend, 1 rejected (in " in (
        outcome.stderr
    )
    assert (
        "rejects.jsonl) and 0 merged into later ones, unchanged or deletions; its STATE was "
        "written once they were confirmed. Nothing from that line on was loaded" in outcome.stderr
    )
    assert outcome.states == [{"bookmarks": {"segment": {"last": 8}}}]
    held = held_emails(sandbox)
    assert {email_of(i) for i in range(1, 8)} <= held
    assert email_of(10) not in held
    result = account("bad input: a bad line, the records before it loaded",
                     Dataset(before, {8}), sandbox.dump(), outcome.reject_rows())  # fmt: skip
    assert result.lost == 0


# -- 4. a record without a key property ----------------------------------------------------------


def test_a_record_missing_a_key_property_is_a_reject_not_an_aborted_run(
    sandbox: Any, tmp_path: Path
) -> None:
    records = [{"n": i, "email": email_of(i)} for i in range(1, 320)]
    keyless = {"email": "keyless@example.com"}
    outcome = run_records(sandbox, tmp_path, [*records[:100], keyless, *records[100:]])
    assert_clean_exit(outcome)
    rows = outcome.reject_rows()
    assert [row["_reject"]["code"] for row in rows] == ["missing_key_property"]
    assert rows[0]["_reject"]["message"] == (
        "The record has no 'n', one of its stream's key properties ('n')."
    )
    assert rows[0]["email"] == "keyless@example.com"
    held = held_emails(sandbox)
    assert {email_of(i) for i in range(1, 320)} <= held
    assert "keyless@example.com" not in held
    # The keyless record has no n to match its reject row by: counted by its email instead.
    accepted = sum(1 for record in records if record["email"] in held)
    rejected = sum(1 for row in rows if row["email"] == keyless["email"])
    lost = len(records) + 1 - accepted - rejected
    record_result(Accounting("bad input: a record missing its key property (320 records)",
                             len(records) + 1, accepted, rejected, 0, lost))  # fmt: skip
    assert lost == 0


# -- 5. derived values go through the same limits ------------------------------------------------


def test_a_stream_name_making_a_tag_too_long_is_one_clear_error_at_its_schema(
    sandbox: Any, tmp_path: Path
) -> None:
    stream = "s" * 3000
    stdin = singer_text(
        [schema_message(SCHEMA, stream)]
        + [record_message({"n": i, "email": email_of(i)}, stream) for i in range(3)]
    )
    outcome = run_input(sandbox, tmp_path, stdin)
    assert_clear_error(
        outcome,
        "the segment tag 'segment: sssssssssssssssssssssssssssssss'... would be 3,009 characters "
        "long; Omnisend's limit for a tag is 2,048. Give the stream a shorter name",
    )
    assert outcome.stderr.count("would be 3,009 characters long") == 1  # not once per record
    assert sandbox.dump()["requests_total"] == 0
    assert outcome.reject_rows() == []


@pytest.mark.parametrize(
    ("literal", "problem"),
    [
        ("1e400", "1E+400: too large for a double."),
        ("-1e400", "-1E+400: too large for a double."),
        ("1.5e-400", "1.5E-400: too near 0 for a double (it would become 0)."),
        ("123456789012345678901234567890", "123456789012345678901234567890: an integer beyond "
         "64 bits."),
    ],
)  # fmt: skip
def test_a_number_out_of_range_rejects_its_record(
    sandbox: Any, tmp_path: Path, literal: str, problem: str
) -> None:
    stdin = lines(raw_record(1, "range@example.com", f', "attrs": {literal}'))
    outcome = run_input(sandbox, tmp_path, stdin, custom_properties={"score": "attrs"})
    bad = {"n": 1, "email": "range@example.com"}
    assert_single_reject(sandbox, outcome, f"number {literal}", "invalid_number",
                         f"customProperties.score is {problem}", bad)  # fmt: skip
    assert "range@example.com" not in held_emails(sandbox)


# -- 6. a source column named _reject -----------------------------------------------------------


def test_a_source_column_named_reject_is_kept_intact(sandbox: Any, tmp_path: Path) -> None:
    bad = {"n": 1, "email": "no-at-sign", "_reject": {"code": "mine", "note": "a source column"}}
    outcome = run_records(sandbox, tmp_path, [bad])
    assert_clean_exit(outcome)
    lines_ = [json.loads(line) for line in (tmp_path / "run" / "rejects.jsonl").open()]
    schema, row = lines_[0], lines_[1]["record"]
    assert row["_reject"] == {"code": "mine", "note": "a source column"}
    assert row["_reject_1"]["code"] == "invalid_email"
    assert "_reject_1" in schema["schema"]["properties"]


# -- 11. clear messages instead of tracebacks ---------------------------------------------------


def test_an_unknown_message_type_is_a_clear_error(sandbox: Any, tmp_path: Path) -> None:
    outcome = run_input(sandbox, tmp_path, lines('{"type": "RECORDS", "stream": "segment"}\n'))
    assert_clear_error(
        outcome, "Input line 3 is a message of type 'RECORDS', which Singer does not define"
    )
    assert "Of the 1 records before it, 1 were loaded into Omnisend" in outcome.stderr
    assert GOOD["email"] in held_emails(sandbox)


def test_a_record_that_is_a_list_is_a_reject_row(sandbox: Any, tmp_path: Path) -> None:
    stdin = lines('{"type": "RECORD", "stream": "segment", "record": [1, "x@example.com"]}\n')
    outcome = run_input(sandbox, tmp_path, stdin)
    assert_clean_exit(outcome)
    rows = outcome.reject_rows()
    assert rows == [
        {
            "_record": [1, "x@example.com"],
            "_reject": {
                "code": "invalid_record",
                "message": "The RECORD message holds a list where Singer puts the record's object.",
                "api_error": None,
            },
        }
    ]
    assert GOOD["email"] in held_emails(sandbox)


def test_json_nested_3000_levels_is_loaded_or_a_reject_row(sandbox: Any, tmp_path: Path) -> None:
    deep = '{"a": ' * 3000 + "1" + "}" * 3000
    deeper = "[" * 20000 + "]" * 20000
    stdin = lines(
        raw_record(1, "deep-unmapped@example.com", f', "labels": {deep}'),
        raw_record(2, "deep-mapped@example.com", f', "attrs": {deep}'),
        raw_record(3, "deeper@example.com", f', "labels": {deeper}'),
    )
    outcome = run_input(
        sandbox, tmp_path, stdin, custom_properties={"score": "attrs"}, parallel_mapping=False
    )
    assert_clean_exit(outcome)
    from target_omnisend.reader import deep_nesting  # (a test of the reader's own change)

    with deep_nesting():  # the rejects file holds the record as it came
        rows = outcome.reject_rows()
    assert [row["_reject"]["code"] for row in rows] == [
        "invalid_custom_property_value",
        "invalid_record",
    ]
    assert rows[0]["n"] == 2
    assert rows[0]["attrs"]["a"]["a"]["a"]  # the record, intact
    assert (
        rows[1]["_reject"]["message"] == "Input line 5: the record nests deeper than 10,000 levels."
    )
    held = held_emails(sandbox)
    assert {GOOD["email"], "deep-unmapped@example.com"} <= held
    assert not {"deep-mapped@example.com", "deeper@example.com"} & held


def test_null_settings_take_their_defaults(sandbox: Any, tmp_path: Path) -> None:
    outcome = run_input(
        sandbox, tmp_path, lines(), max_requests_per_minute=None, max_batches_in_flight=None
    )
    assert_clean_exit(outcome)
    assert "Setting 'max_requests_per_minute' is null: its default applies." in outcome.stderr
    assert GOOD["email"] in held_emails(sandbox)


# -- 10. retries that run out ---------------------------------------------------------------------


def assert_ends_clearly(outcome: Any, cause: str, remedy: str) -> None:
    """One clear line naming cause and remedy, the run summary, non-zero exit, no STATE."""
    assert_clear_error(outcome, cause)
    assert remedy in outcome.stderr
    assert "target-omnisend summary: " in outcome.stderr
    assert outcome.stdout == ""
    errors = [line for line in outcome.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1, errors


def run_failing(tmp_path: Path, api_url: str, **config: Any) -> Any:
    dataset = make_dataset(30)
    settings = {"max_requests_per_minute": RPM, "request_timeout": 1, **config}
    config = base_config(None, tmp_path / "run", api_url=api_url, **settings)
    outcome = TargetRun(tmp_path, config).run(dataset.text(state_every=10))
    check_security(outcome, emails=[email_of(i) for i in range(30)])
    return outcome


def test_5xx_on_every_request_ends_clearly(sandbox_factory: Any, tmp_path: Path) -> None:
    sandbox = sandbox_factory(time_scale=TIME_SCALE, error_rate=1.0)
    outcome = run_failing(tmp_path, sandbox.api_url)
    assert_ends_clearly(outcome, "POST /batches failed after 9 attempts in ", "answered 5")
    assert "Omnisend is failing: run again later." in outcome.stderr  # fmt: skip


def test_a_429_storm_that_never_passes_ends_clearly(sandbox_factory: Any, tmp_path: Path) -> None:
    sandbox = sandbox_factory(time_scale=200.0, rate_limit_per_minute=1, second_app_rpm=1)
    outcome = run_failing(tmp_path, sandbox.api_url, max_requests_per_minute=400 * 200)
    assert_ends_clearly(
        outcome,
        "was still rate limited (429) after 21 tries",
        "lower max_requests_per_minute if other apps share the brand's limit",
    )


def test_a_2xx_body_that_is_not_json_ends_clearly(tmp_path: Path) -> None:
    def html(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "text/html"}, b"<html>captive portal</html>"

    with LocalServer(html) as server:
        outcome = run_failing(tmp_path, server.url + "/api")
    assert_ends_clearly(outcome, "POST /batches failed after 9 attempts in ", "(a proxy?)")
    assert "answered 200 with a body that is not JSON" in outcome.stderr
    assert len(server.seen) == 9


def test_a_host_that_does_not_resolve_ends_clearly(tmp_path: Path) -> None:
    outcome = run_failing(tmp_path, "https://api.omnisend.invalid/api")
    assert_ends_clearly(outcome, "the host 'api.omnisend.invalid' does not resolve (DNS)",
                        "check api_url's host and this machine's network and DNS")  # fmt: skip
