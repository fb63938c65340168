"""The target's settings and CLI behaviour that need no server: config errors, --about, dry run."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from singer_sdk.exceptions import ConfigValidationError

from target_omnisend.target import TargetOmnisend, check_api_url
from tests.helpers import EXECUTABLE, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
API_KEY = "brand123-SECRETKEYDONOTLEAK"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"api_version": "v3"}, "'v3' is not one of"),
        ({"api_url": "http://api.example.com/api"}, "plain http to a non-loopback host"),
        ({"api_url": "ftp://127.0.0.1/api"}, "must be an https:// URL"),
        ({"field_mapping": {"emial": "email"}}, "unknown contact field(s) 'emial'"),
        ({"field_mapping": {"firstName": "name"}}, "must map 'email' or 'phone'"),
        ({"status_values": {"Y": "yes"}}, "'yes' is not one of"),
        ({"max_requests_per_minute": 0}, "max_requests_per_minute"),
        ({"load_method": "overwrite"}, "load_method 'overwrite' is not supported"),
        ({"load_method": "append-only"}, "load_method 'append-only' is not supported"),
    ],
)
def test_config_errors_are_one_clear_line_without_traceback(
    tmp_path: Path, changes: dict, message: str
) -> None:
    result = run_cli({"api_key": API_KEY, **changes}, DATA / "contacts_basic.singer", tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert API_KEY not in result.stderr


def test_missing_api_key_is_reported(tmp_path: Path) -> None:
    result = run_cli({}, DATA / "contacts_basic.singer", tmp_path)
    assert result.returncode != 0
    assert "'api_key' is a required property" in result.stderr
    assert "Traceback" not in result.stderr


def test_loopback_http_is_allowed() -> None:
    for url in ("http://127.0.0.1:1234/api", "http://localhost/v5", "http://[::1]:80/api"):
        check_api_url(url)
    with pytest.raises(ValueError, match="non-loopback"):
        check_api_url("http://10.0.0.1/api")


def test_settings_schema_names_every_setting() -> None:
    properties = TargetOmnisend.config_jsonschema["properties"]
    expected = {
        "api_key",
        "api_version",
        "api_url",
        "field_mapping",
        "custom_properties",
        "tags",
        "status_values",
        "default_phone_region",
        "send_welcome_message",
        "lowercase_emails",
        "rejects_path",
        "max_reject_ratio",
        "max_requests_per_minute",
        "request_timeout",
        "max_batches_in_flight",
        "dry_run",
        "dry_run_path",
    }
    assert expected <= set(properties)
    assert properties["api_key"]["secret"] is True
    assert properties["api_version"]["enum"] == ["2026-03-15", "v5"]
    assert TargetOmnisend.config_jsonschema["required"] == ["api_key"]
    for name in expected:
        assert properties[name].get("description"), name


def test_load_method_is_upsert_by_default_and_says_so_in_about() -> None:
    spec = TargetOmnisend.config_jsonschema["properties"]["load_method"]
    assert spec["default"] == "upsert"
    assert spec["description"].startswith("How contacts are written: `upsert` (the only method")
    target = TargetOmnisend(config={"api_key": API_KEY, "load_method": "upsert"})
    assert target.config["load_method"] == "upsert"
    with pytest.raises(ConfigValidationError, match="would delete every Omnisend contact"):
        TargetOmnisend(config={"api_key": API_KEY, "load_method": "overwrite"})


def test_constructor_raises_config_validation_error() -> None:
    with pytest.raises(ConfigValidationError, match="non-loopback"):
        TargetOmnisend(config={"api_key": API_KEY, "api_url": "http://example.com"})


def test_about_lists_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [EXECUTABLE, "--about", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    about = json.loads(result.stdout)
    assert about["name"] == "target-omnisend"
    assert "batch_size_rows" in about["settings"]["properties"]


def test_dry_run_without_server_writes_payloads_and_no_state(tmp_path: Path) -> None:
    config = {
        "api_key": API_KEY,
        # Nothing listens here: a dry run must not even try.
        "api_url": "http://127.0.0.1:9/api",
        "dry_run": True,
        "dry_run_path": str(tmp_path / "out" / "dry.jsonl"),
        "rejects_path": str(tmp_path / "out" / "rejects.jsonl"),
        "tags": ["source: warehouse"],
    }
    result = run_cli(config, DATA / "contacts_basic.singer", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # no STATE in a dry run
    dry = [json.loads(line) for line in (tmp_path / "out" / "dry.jsonl").read_text().splitlines()]
    assert [row["key"] for row in dry] == [
        "grace@example.com",
        "ada@example.com",
        "linus@example.com",
    ]
    ada = dry[1]
    assert ada["payload"]["lastName"] == "King"  # the latest record of a duplicate wins
    assert "tags" not in ada["payload"]  # 2026: tags travel through the tags endpoint
    assert ada["tags"] == ["source: warehouse", "segment: vip"]
    assert stat.S_IMODE((tmp_path / "out" / "dry.jsonl").stat().st_mode) == 0o600
    rejects = (tmp_path / "out" / "rejects.jsonl").read_text()
    codes = [
        json.loads(line)["record"]["_reject"]["code"]
        for line in rejects.splitlines()
        if json.loads(line)["type"] == "RECORD"
    ]
    assert codes == ["missing_identifier", "invalid_email", "schema_mismatch"]
    for output in (result.stdout, result.stderr, rejects, json.dumps(dry)):
        assert API_KEY not in output
    assert "ada@example.com" not in result.stderr


def test_a_record_without_its_key_properties_is_a_reject(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "integer"}, "email": {}}}
    lines = [
        {"type": "SCHEMA", "stream": "s", "schema": schema, "key_properties": ["id"]},
        {"type": "RECORD", "stream": "s", "record": {"email": "jane@example.com"}},
    ]
    source = tmp_path / "missing_key.singer"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    rejects = tmp_path / "rejects.jsonl"
    config = {
        "api_key": API_KEY,
        "api_url": "http://127.0.0.1:9/api",
        "dry_run": True,
        "rejects_path": str(rejects),
    }
    result = run_cli(config, source, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    rows = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert rows[1]["record"]["_reject"]["code"] == "missing_key_property"
    assert rows[1]["record"]["email"] == "jane@example.com"
