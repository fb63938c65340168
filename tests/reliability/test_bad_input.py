"""Bad input: every class ends as a clear error (no traceback) or a reject row with its reason.

Each test runs the real CLI against the sandbox and asserts the exact message a user sees (the
log line for errors, the `_reject` code and message for rejects). Every run is also checked for
the security rules: no API key in any output, emails and phones masked, owner-only files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import harness
from tests.reliability.harness import (
    API_KEY,
    Accounting,
    Dataset,
    RunOutcome,
    TargetRun,
    account,
    assert_clean_exit,
    assert_clear_error,
    base_config,
    check_security,
    held_emails,
    record_message,
    record_result,
    schema_message,
    singer_text,
)

pytestmark = pytest.mark.reliability

DATA = Path(__file__).resolve().parents[1] / "data" / "bad_input"
# The harness's schema, plus two untyped fields for tags and custom properties.
SCHEMA: dict[str, Any] = {
    **harness.SCHEMA,
    "properties": {**harness.SCHEMA["properties"], "labels": {}, "attrs": {}},
}
MAPPING = {
    "email": "email",
    "phone": "phone",
    "firstName": "first_name",
    "country": "country",
}
GOOD = {"n": 0, "email": "good.person@example.com", "first_name": "Good"}


def run_input(sandbox: Any, tmp_path: Path, stdin: str | bytes, **config: Any) -> RunOutcome:
    """Run the CLI on `stdin` and check the security rules on what it left."""
    settings = {"field_mapping": MAPPING, **config}
    outcome = TargetRun(tmp_path, base_config(sandbox, tmp_path / "run", **settings)).run(stdin)
    check_security(outcome, emails=[GOOD["email"]])
    return outcome


def run_records(
    sandbox: Any, tmp_path: Path, records: list[dict[str, Any]], **config: Any
) -> RunOutcome:
    """One good record then `records`, on the class's schema."""
    messages = [schema_message(SCHEMA), record_message(GOOD)]
    messages += [record_message(record) for record in records]
    return run_input(sandbox, tmp_path, singer_text(messages), **config)


def assert_single_reject(
    sandbox: Any,
    outcome: RunOutcome,
    name: str,
    code: str,
    message: str,
    bad: dict[str, Any],
) -> dict[str, Any]:
    """The run ended cleanly, the good record is in the sandbox and the bad one is rejected."""
    assert_clean_exit(outcome)
    rows = outcome.reject_rows()
    assert [row["_reject"]["code"] for row in rows] == [code]
    assert rows[0]["_reject"]["message"] == message
    dump = sandbox.dump()
    assert GOOD["email"] in held_emails(sandbox)
    result = account(f"bad input: {name}", Dataset([GOOD, bad], {bad["n"]}), dump, rows)
    assert result.lost == 0
    return rows[0]


def assert_no_requests(sandbox: Any) -> None:
    """The target sent nothing to the sandbox."""
    assert sandbox.dump()["requests_total"] == 0


# -- the stream itself ----------------------------------------------------------------------------


def test_malformed_json_line_is_a_clear_error(sandbox: Any, tmp_path: Path) -> None:
    stdin = (DATA / "malformed_json.singer").read_text(encoding="utf-8")
    outcome = run_input(sandbox, tmp_path, stdin)
    assert_clear_error(outcome, "Unable to parse line as JSON")
    assert outcome.stdout == ""


def test_record_before_schema_is_a_clear_error(sandbox: Any, tmp_path: Path) -> None:
    stdin = (DATA / "record_before_schema.singer").read_text(encoding="utf-8")
    outcome = run_input(sandbox, tmp_path, stdin)
    assert_clear_error(
        outcome, "A record for stream 'segment' was encountered before a corresponding schema"
    )
    assert outcome.stdout == ""


def test_compatible_schema_change_mid_stream_keeps_loading(sandbox: Any, tmp_path: Path) -> None:
    wider = json.loads(json.dumps(SCHEMA))
    wider["properties"]["city"] = {"type": ["string", "null"]}
    later = {"n": 1, "email": "later.person@example.com", "city": "Leeds"}
    stdin = singer_text(
        [schema_message(SCHEMA), record_message(GOOD), schema_message(wider), record_message(later)]
    )
    outcome = run_input(sandbox, tmp_path, stdin, field_mapping={**MAPPING, "city": "city"})
    assert_clean_exit(outcome)
    assert {GOOD["email"], later["email"]} <= held_emails(sandbox)
    result = account("bad input: schema change (compatible)", Dataset([GOOD, later]),
                     sandbox.dump(), [])  # fmt: skip
    assert result.lost == 0


def test_schema_change_dropping_the_identifier_is_a_clear_error(
    sandbox: Any, tmp_path: Path
) -> None:
    renamed = {"type": "object", "properties": {"n": {"type": "integer"}, "mail": {}}}
    stdin = singer_text(
        [
            schema_message(SCHEMA),
            record_message(GOOD),
            schema_message(renamed),
            record_message({"n": 1, "mail": "renamed@example.com"}),
        ]
    )
    outcome = run_input(sandbox, tmp_path, stdin)
    assert_clear_error(
        outcome,
        "field_mapping points at properties the stream does not have (email → 'email', "
        "phone → 'phone', firstName → 'first_name', country → 'country'): no record of this "
        "stream can carry an email or phone.",
    )
    assert outcome.stdout == ""


def test_empty_stream_ends_cleanly_without_state_or_requests(sandbox: Any, tmp_path: Path) -> None:
    outcome = run_input(sandbox, tmp_path, "")
    assert_clean_exit(outcome)
    assert outcome.stdout == ""
    assert outcome.reject_rows() == []
    assert_no_requests(sandbox)


def test_non_utf8_bytes_end_as_a_reject_or_a_clear_error(sandbox: Any, tmp_path: Path) -> None:
    stdin = (DATA / "non_utf8.singer").read_bytes()
    outcome = run_input(sandbox, tmp_path, stdin)
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    if outcome.returncode == 0:
        rows = outcome.reject_rows()
        assert [row["n"] for row in rows] == [1]
        assert GOOD["email"] in held_emails(sandbox)
    else:
        assert "UTF-8" in outcome.stderr, outcome.stderr[-3000:]
        assert outcome.stdout == ""


def test_a_10_mb_record_is_rejected_as_too_long(sandbox: Any, tmp_path: Path) -> None:
    huge = {"n": 1, "email": "huge@example.com", "first_name": "x" * (10 * 1024 * 1024)}
    outcome = run_records(sandbox, tmp_path, [huge])
    assert_single_reject(
        sandbox,
        outcome,
        "10 MB record",
        "value_too_long",
        "firstName is 10485760 characters long; the limit is 2048.",
        huge,
    )
    assert "huge@example.com" not in held_emails(sandbox)


def test_a_contact_over_1_mb_is_rejected_not_fatal(sandbox: Any, tmp_path: Path) -> None:
    heavy = {"n": 1, "email": "heavy@example.com", "attrs": ["z" * 2000] * 600}
    outcome = run_records(sandbox, tmp_path, [heavy], custom_properties={"history": "attrs"})
    row = assert_single_reject(
        sandbox,
        outcome,
        "contact over 1 MB",
        "api_rejected",
        "Omnisend rejected the contact.",
        heavy,
    )
    assert row["_reject"]["api_error"] == (
        "The contact's payload is larger than Omnisend's 1 MB request limit."
    )


# -- records --------------------------------------------------------------------------------------


REJECTED_RECORDS = [
    pytest.param(
        {"n": 1, "email": None, "phone": None, "first_name": "Nobody"},
        {},
        "missing_identifier",
        "The record has neither an email nor a phone.",
        id="missing email",
    ),
    pytest.param(
        {"n": 1, "email": "no-at-sign.example.com"},
        {},
        "invalid_email",
        "email is not a valid email address.",
        id="invalid email",
    ),
    pytest.param(
        {"n": 1, "email": None, "phone": "+1 23"},
        {"default_phone_region": "GB"},
        "invalid_phone",
        "phone is not a valid phone number (E.164: + then 7 to 15 digits).",
        id="invalid phone",
    ),
    pytest.param(
        {"n": 1, "email": None, "phone": "07700 900123"},
        {},
        "phone_without_region",
        "phone has no country calling code and default_phone_region is not set.",
        id="national phone without region",
    ),
    pytest.param(
        {"n": 1, "email": "atlantis@example.com", "country": "Atlantis"},
        {},
        "invalid_country",
        "country 'Atlantis' is not recognised.",
        id="unknown country",
    ),
    pytest.param(
        {"n": "one", "email": "typed@example.com"},
        {},
        "schema_mismatch",
        "'one' is not of type 'integer'",
        id="wrong types",
    ),
    pytest.param(
        {"n": 1, "email": "long@example.com", "first_name": "y" * 2049},
        {},
        "value_too_long",
        "firstName is 2049 characters long; the limit is 2048.",
        id="string over 2048",
    ),
    pytest.param(
        {"n": 1, "email": "tagged@example.com", "labels": [f"tag{i}" for i in range(101)]},
        {"field_mapping": {**MAPPING, "tags": "labels"}},
        "too_many_tags",
        "102 tags; the limit is 100.",  # 101 from the record, plus its segment tag
        id="more than 100 tags",
    ),
    pytest.param(
        {"n": 1, "email": "nested@example.com", "attrs": {"tier": {"level": 3}}},
        {"custom_properties": {"attrs": "attrs"}},
        "invalid_custom_property_value",
        "customProperties.attrs is a dict; custom properties hold strings, numbers, booleans "
        "or lists of strings.",
        id="nested custom properties",
    ),
    pytest.param(
        {"n": 1, "email": "named@example.com", "attrs": {"bad name!": 1}},
        {"custom_properties": {"*": "attrs"}},
        "invalid_custom_property_name",
        "custom property name 'bad name!' is not 1 to 128 letters, digits or underscores.",
        id="bad custom property name in a record",
    ),
]


@pytest.mark.parametrize(("record", "config", "code", "message"), REJECTED_RECORDS)
def test_bad_record_becomes_a_reject_row(
    sandbox: Any,
    tmp_path: Path,
    record: dict[str, Any],
    config: dict[str, Any],
    code: str,
    message: str,
) -> None:
    outcome = run_records(sandbox, tmp_path, [record], **config)
    row = assert_single_reject(sandbox, outcome, code, code, message, record)
    assert row["n"] == record["n"]
    assert len(held_emails(sandbox)) == 1


def test_mixed_case_duplicate_emails_merge_into_one_contact(sandbox: Any, tmp_path: Path) -> None:
    first = {"n": 1, "email": "Dup.Person@Example.COM", "first_name": "First"}
    second = {"n": 2, "email": "dup.person@example.com", "first_name": "Second"}
    outcome = run_records(sandbox, tmp_path, [first, second])
    assert_clean_exit(outcome)
    assert outcome.reject_rows() == []
    contacts = sandbox.dump()["contacts"]
    dups = [c for c in contacts if any(i["id"] == "dup.person@example.com"
                                       for i in c["identifiers"])]  # fmt: skip
    assert len(dups) == 1
    assert dups[0]["firstName"] == "Second"  # the latest record wins
    assert not any(i["id"] == first["email"] for c in contacts for i in c["identifiers"])
    assert len(contacts) == 2  # records in 3 = 2 contacts + 0 rejects + 1 merged
    record_result(Accounting("bad input: mixed-case duplicate emails", 3, 2, 0, 1, 0))
    check_security(outcome, emails=[first["email"], second["email"]])


def test_national_phone_with_region_is_accepted_in_e164(sandbox: Any, tmp_path: Path) -> None:
    record = {"n": 1, "email": None, "phone": "07700 900123"}
    outcome = run_records(sandbox, tmp_path, [record], default_phone_region="GB")
    assert_clean_exit(outcome)
    assert outcome.reject_rows() == []
    phones = {i["id"] for c in sandbox.dump()["contacts"] for i in c["identifiers"]}
    assert "+447700900123" in phones
    check_security(outcome, phones=["+447700900123", "07700 900123", "7700900123"])


# -- configuration --------------------------------------------------------------------------------


def test_unmapped_required_field_is_a_clear_config_error(sandbox: Any, tmp_path: Path) -> None:
    stdin = singer_text([schema_message(SCHEMA), record_message(GOOD)])
    outcome = run_input(sandbox, tmp_path, stdin, field_mapping={"firstName": "first_name"})
    assert_clear_error(outcome, "field_mapping must map 'email' or 'phone' (or both).")
    assert_no_requests(sandbox)


def test_bad_custom_property_name_in_config_is_a_clear_error(sandbox: Any, tmp_path: Path) -> None:
    stdin = singer_text([schema_message(SCHEMA), record_message(GOOD)])
    outcome = run_input(sandbox, tmp_path, stdin, custom_properties={"bad name": "attrs"})
    assert_clear_error(
        outcome,
        "custom_properties name 'bad name' must be 1 to 128 letters, digits or underscores.",
    )
    assert_no_requests(sandbox)


def test_missing_api_key_is_a_clear_config_error(sandbox: Any, tmp_path: Path) -> None:
    config = base_config(sandbox, tmp_path / "run", field_mapping=MAPPING)
    del config["api_key"]
    stdin = singer_text([schema_message(SCHEMA), record_message(GOOD)])
    outcome = TargetRun(tmp_path, config).run(stdin)
    assert_clear_error(outcome, "'api_key' is a required property")
    assert_no_requests(sandbox)


def test_unknown_api_version_is_a_clear_config_error(sandbox: Any, tmp_path: Path) -> None:
    stdin = singer_text([schema_message(SCHEMA), record_message(GOOD)])
    outcome = run_input(sandbox, tmp_path, stdin, api_version="2030-01-01")
    assert_clear_error(outcome, "'2030-01-01' is not one of ['2026-03-15', 'v5']")
    assert_no_requests(sandbox)


@pytest.mark.parametrize(
    "api_url", ["http://api.omnisend.com/api", "http://10.1.2.3:8080/api", "ftp://127.0.0.1/api"]
)
def test_plain_http_to_a_remote_host_is_refused(sandbox: Any, tmp_path: Path, api_url: str) -> None:
    stdin = singer_text([schema_message(SCHEMA), record_message(GOOD)])
    outcome = run_input(sandbox, tmp_path, stdin, api_url=api_url)
    assert "Traceback" not in outcome.stderr
    assert outcome.returncode != 0
    assert f"api_url {api_url!r}" in outcome.stderr
    assert "Config validation failed" in outcome.stderr


# -- the API refuses ------------------------------------------------------------------------------


API_REFUSALS = [
    pytest.param(
        {"api_keys": ["brandx-ANOTHERKEY999"]},
        "Omnisend refused the API key (POST /batches answered 401 Unauthorized): check the "
        "'api_key' setting",
        id="wrong key 401",
    ),
    pytest.param(
        {"forbidden_keys": [API_KEY]},
        "The key in 'api_key' lacks a permission (POST /batches answered 403 Forbidden)",
        id="key without permission 403",
    ),
    pytest.param(
        {"retired_versions": ["2026-03-15"]},
        "API version 2026-03-15 is retired (POST /batches answered 410 Gone): set "
        "'api_version' to a supported version.",
        id="retired version 410",
    ),
]


@pytest.mark.parametrize(("settings", "message"), API_REFUSALS)
def test_api_refusal_stops_the_run_naming_the_setting(
    sandbox: Any, tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    sandbox.configure(**settings)
    stdin = singer_text([schema_message(SCHEMA), record_message(GOOD)])
    outcome = run_input(sandbox, tmp_path, stdin)
    assert_clear_error(outcome, message)
    assert outcome.stdout == ""  # no STATE: the next run replays everything
    assert sandbox.dump()["contacts"] == []
