"""Segments across runs, end to end: the real CLI piped the same files again and again.

Each test runs `target-omnisend` as a process against the sandbox with one sync store, and checks
what the sandbox holds (tags, statuses, batches received), never what the target says it did.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from target_omnisend.client import OmnisendClient
from target_omnisend.sandbox.handle import accepted_tag_calls
from target_omnisend.sync_store import SyncStore, brand_id
from target_omnisend.target import summary_from_log_line
from tests.helpers import EXECUTABLE, run_cli, write_config
from tests.test_cli_e2e import (
    API_KEY,
    base_config,
    contacts_by_email,
    email_status,
    state_lines,
    wait_for,
)

pytestmark = pytest.mark.e2e

STREAM = "vip"
TAG = "segment: vip"
SCHEMA = {
    "type": "SCHEMA",
    "stream": STREAM,
    "schema": {
        "type": "object",
        "properties": {
            "email": {"type": "string"},
            "first_name": {"type": ["string", "null"]},
            "segments": {"type": ["array", "null"], "items": {"type": "string"}},
            "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "key_properties": ["email"],
}
ACTIVATE = {"type": "ACTIVATE_VERSION", "stream": STREAM, "version": 1}


def people(*names: str, changed: tuple[str, ...] = ()) -> dict[str, str]:
    """{email: first name}; `changed` people get another first name."""
    return {
        f"{name}@example.com": (f"{name.title()} II" if name in changed else name.title())
        for name in names
    }


def singer_input(
    members: dict[str, str],
    *,
    snapshot: bool = True,
    truncated: bool = False,
    deleted: tuple[str, ...] = (),
    extra: dict[str, dict[str, Any]] | None = None,
    stream: str = STREAM,
) -> str:
    """A stream as a tap sends it: ACTIVATE_VERSION before and after a full snapshot."""
    activate = {**ACTIVATE, "stream": stream}
    lines: list[dict[str, Any]] = [{**SCHEMA, "stream": stream}]
    if snapshot:
        lines.append(activate)
    for email, name in members.items():
        record = {"email": email, "first_name": name, **(extra or {}).get(email, {})}
        lines.append({"type": "RECORD", "stream": stream, "record": record})
    for email in deleted:
        record = {"email": email, "_sdc_deleted_at": "2026-11-24T10:00:00Z"}
        lines.append({"type": "RECORD", "stream": stream, "record": record})
    if snapshot and not truncated:
        lines.append(activate)
    if not truncated:
        lines.append({"type": "STATE", "value": {"run": len(members)}})
    return "".join(json.dumps(line) + "\n" for line in lines)


def run(config: dict[str, Any], text: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(config, text, cwd)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def settled(sandbox: Any) -> dict[str, dict[str, Any]]:
    """Contacts by email once every accepted tags call is applied."""
    sandbox.settled_dump()
    return contacts_by_email(sandbox)


def tagged(sandbox: Any, tag: str = TAG) -> set[str]:
    return {email for email, c in settled(sandbox).items() if tag in (c.get("tags") or [])}


def items_received(sandbox: Any) -> int:
    """Contacts the sandbox received in batches so far."""
    return sum(batch["totalCount"] for batch in sandbox.dump()["batches"])


def tag_calls(sandbox: Any) -> int:
    return accepted_tag_calls(sandbox.dump())


@pytest.fixture
def config(sandbox: Any, tmp_path: Path) -> dict[str, Any]:
    sandbox.configure(tags_apply_delay=0, segment_build_seconds=0)
    return base_config(sandbox, tmp_path, sync_state_path=str(tmp_path / "sync.sqlite"))


@pytest.mark.parametrize("mode", ["keep", "remove_tag", "unsubscribe"])
def test_enter_stay_change_leave_and_reenter_across_runs(
    sandbox: Any, tmp_path: Path, config: dict[str, Any], mode: str
) -> None:
    config.update(on_segment_exit=mode, max_exit_ratio=0.5)
    everyone = ("ann", "bob", "cy", "dee", "eve")
    ok(run(config, singer_input(people(*everyone)), tmp_path))
    assert tagged(sandbox) == set(people(*everyone))
    sent_before = items_received(sandbox)

    # dee changes, eve leaves, fay enters; ann, bob and cy stay unchanged.
    second = people("ann", "bob", "cy", "dee", "fay", changed=("dee",))
    result = ok(run(config, singer_input(second), tmp_path))
    # dee (changed) and fay (new) only; and eve's unsubscribe in that mode.
    assert items_received(sandbox) - sent_before == 2 + (mode == "unsubscribe")
    contacts = settled(sandbox)
    assert contacts["dee@example.com"]["firstName"] == "Dee II"
    assert "fay@example.com" in tagged(sandbox)
    eve = contacts["eve@example.com"]
    if mode == "keep":
        assert TAG in eve["tags"]
        assert email_status(eve) == "nonSubscribed"
    else:
        assert TAG not in eve["tags"]
    assert email_status(eve) == ("unsubscribed" if mode == "unsubscribe" else "nonSubscribed")
    assert state_lines(result.stdout) == [{"run": 5}]

    # eve comes back.
    ok(run(config, singer_input({**second, **people("eve")}), tmp_path))
    assert "eve@example.com" in tagged(sandbox)
    assert tagged(sandbox) == set(second) | {"eve@example.com"}


def test_an_exit_never_unsubscribes_a_member_of_another_segment_of_the_run(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    config.update(on_segment_exit="unsubscribe", segment_field="segments", max_exit_ratio=0.6)
    both = {"segments": ["gold", "silver"]}
    gold_only = {"segments": ["gold"]}
    first = people("ann", "bob", "cy")
    extra = {email: both for email in first}
    ok(run(config, singer_input(first, extra=extra), tmp_path))
    assert tagged(sandbox, "segment: gold") == tagged(sandbox, "segment: silver") == set(first)

    # ann leaves silver but stays in gold: silver's tag goes, her email stays as it was.
    extra["ann@example.com"] = gold_only
    ok(run(config, singer_input(first, extra=extra), tmp_path))
    ann = settled(sandbox)["ann@example.com"]
    assert "segment: silver" not in ann["tags"]
    assert "segment: gold" in ann["tags"]
    assert email_status(ann) == "nonSubscribed"


def test_an_exit_never_unsubscribes_a_member_of_a_segment_loaded_by_another_run(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    config.update(on_segment_exit="unsubscribe", max_exit_ratio=0.7)
    ok(run(config, singer_input(people("ann", "bob", "cy"), stream="gold"), tmp_path))
    ok(run(config, singer_input(people("ann", "bob", "cy"), stream="vip"), tmp_path))
    # As a Meltano job does: each stream in its own run. ann leaves vip, stays in gold.
    ok(run(config, singer_input(people("bob", "cy"), stream="vip"), tmp_path))
    contacts = settled(sandbox)
    assert "segment: vip" not in contacts["ann@example.com"]["tags"]
    assert "segment: gold" in contacts["ann@example.com"]["tags"]
    assert email_status(contacts["ann@example.com"]) == "nonSubscribed"
    # bob leaves both: leaving gold (still in vip) keeps him, leaving vip unsubscribes him.
    ok(run(config, singer_input(people("cy"), stream="gold"), tmp_path))
    assert email_status(settled(sandbox)["bob@example.com"]) == "nonSubscribed"
    ok(run(config, singer_input(people("cy"), stream="vip"), tmp_path))
    assert email_status(settled(sandbox)["bob@example.com"]) == "unsubscribed"


def test_deleted_records_are_exits_even_without_a_snapshot(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    config.update(on_segment_exit="remove_tag")
    members = people("ann", "bob", "cy", "dee", "eve", "fay")
    ok(run(config, singer_input(members, snapshot=False), tmp_path))
    # An incremental run: only ann changes, bob is deleted; the absent ones stay members.
    update = people("ann", changed=("ann",))
    ok(run(config, singer_input(update, snapshot=False, deleted=("bob@example.com",)), tmp_path))
    assert tagged(sandbox) == set(members) - {"bob@example.com"}


@pytest.mark.parametrize(
    ("case", "text"),
    [
        ("empty stream", singer_input({})),
        ("truncated stream", singer_input(people("ann", "bob", "cy"), truncated=True)),
    ],
)
def test_empty_and_truncated_streams_remove_nobody(
    sandbox: Any, tmp_path: Path, config: dict[str, Any], case: str, text: str
) -> None:
    config.update(on_segment_exit="remove_tag", max_exit_ratio=1.0)
    members = people("ann", "bob", "cy", "dee", "eve")
    ok(run(config, singer_input(members), tmp_path))
    ok(run(config, text, tmp_path))
    assert tagged(sandbox) == set(members), case


def test_a_mass_exit_above_max_exit_ratio_removes_nobody_and_fails(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    config.update(on_segment_exit="unsubscribe", max_exit_ratio=0.2)
    members = people("ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal", "ivy", "jo")
    ok(run(config, singer_input(members), tmp_path))
    result = run(config, singer_input(people("ann", "bob", "cy", "dee", "eve")), tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "5 of 10 members (50.0%) would leave; max_exit_ratio is 0.2" in result.stderr
    assert result.stdout == ""  # no STATE
    contacts = settled(sandbox)
    assert tagged(sandbox) == set(members)
    assert all(email_status(contacts[email]) == "nonSubscribed" for email in members)
    # The store still knows every member: a corrected run is not a first run.
    with SyncStore(config["sync_state_path"], brand_id(config["api_url"], API_KEY)) as store:
        assert store.members(TAG) == set(members)


def test_an_unchanged_rerun_makes_no_contact_writes(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    names = tuple(f"p{n}" for n in range(60))
    ok(run(config, singer_input(people(*names)), tmp_path))
    items, tags = items_received(sandbox), tag_calls(sandbox)
    result = ok(run(config, singer_input(people(*names)), tmp_path))
    assert (items_received(sandbox), tag_calls(sandbox)) == (items, tags)
    assert state_lines(result.stdout) == [{"run": 60}]
    ok(run(config, singer_input(people(*names, changed=("p7",))), tmp_path))
    assert items_received(sandbox) == items + 1
    assert settled(sandbox)["p7@example.com"]["firstName"] == "P7 II"
    # full_resync ignores the store.
    ok(run({**config, "full_resync": True}, singer_input(people(*names)), tmp_path))
    assert items_received(sandbox) == items + 1 + 60


def contacts_requests(sandbox: Any) -> int:
    """GET /contacts requests the sandbox answered (probes and listing pages)."""
    return sum((sandbox.dump()["requests"].get("GET /api/contacts") or {}).values())


def final_summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    summaries = [summary_from_log_line(line) for line in result.stderr.splitlines()]
    found = [s for s in summaries if s is not None]
    assert found, result.stderr[-2000:]
    return dict(found[-1])


def test_a_first_run_probes_an_unknown_segment_and_lists_nobody(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    config.update(on_segment_exit="remove_tag", max_exit_ratio=0.5)
    ok(run(config, singer_input(people("ann", "bob")), tmp_path))
    assert contacts_requests(sandbox) == 1  # the probe (limit=1) found nobody: no listing
    ok(run(config, singer_input(people("ann")), tmp_path))
    assert contacts_requests(sandbox) == 1  # the store knows the segment now
    assert tagged(sandbox) == set(people("ann"))


def load_then_lose_the_store(config: dict[str, Any], tmp_path: Path) -> None:
    """ann, bob, cy and dee carry the tag; the store that knew it is gone (a new machine)."""
    config.update(on_segment_exit="remove_tag", max_exit_ratio=0.5)
    ok(run(config, singer_input(people("ann", "bob", "cy", "dee")), tmp_path))
    for path in tmp_path.glob("sync.sqlite*"):
        path.unlink()


def test_without_a_store_contacts_tagged_before_keep_the_tag_and_are_counted(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    load_then_lose_the_store(config, tmp_path)
    result = ok(run(config, singer_input(people("ann", "bob", "cy")), tmp_path))
    assert tagged(sandbox) == set(people("ann", "bob", "cy", "dee"))  # dee was never ours
    assert final_summary(result)["segments"]["tagged_absent_kept"] == 1
    assert "1 contacts carry its tag in Omnisend but are absent" in result.stderr
    assert contacts_requests(sandbox) == 2 + 1  # two probes, one page of members
    ok(run(config, singer_input(people("ann", "bob")), tmp_path))  # cy leaves; dee stays
    assert tagged(sandbox) == set(people("ann", "bob", "dee"))
    assert contacts_requests(sandbox) == 3


def test_reconcile_existing_tag_untags_contacts_tagged_before(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    load_then_lose_the_store(config, tmp_path)
    config.update(reconcile_existing_tag=True)
    ok(run(config, singer_input(people("ann", "bob", "cy")), tmp_path))
    assert tagged(sandbox) == set(people("ann", "bob", "cy"))
    config.update(max_exit_ratio=0.2)  # the backstop still holds: 1 of 3 would be a third
    refused = run(config, singer_input(people("ann", "bob")), tmp_path)
    assert refused.returncode == 1
    assert "max_exit_ratio" in refused.stderr
    assert tagged(sandbox) == set(people("ann", "bob", "cy"))


def test_create_segments_yields_a_segment_of_the_tagged_contacts(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    config.update(create_segments=True)
    members = people("ann", "bob", "cy")
    ok(run(config, singer_input(members), tmp_path))
    ok(run(config, singer_input(members), tmp_path))  # found by name, not created twice
    segments = [s for s in sandbox.dump()["segments"] if s["name"] == TAG]
    assert len(segments) == 1
    client = OmnisendClient(API_KEY, api_version="2026-03-15", api_url=config["api_url"])
    try:
        settled(sandbox)
        in_segment = client.iter_contacts(segmentID=segments[0]["segmentID"])
        emails = {i["id"] for c in in_segment for i in c["identifiers"] if i["type"] == "email"}
    finally:
        client.close()
    assert emails == set(members)


def test_v5_refuses_create_segments_with_a_clear_message(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    v5 = base_config(sandbox, tmp_path, api_version="v5", create_segments=True)
    result = run(v5, singer_input(people("ann")), tmp_path)
    assert result.returncode != 0
    assert "create_segments needs the 2026-03-15 API" in result.stderr
    assert "Traceback" not in result.stderr
    assert sandbox.dump()["contacts"] == []


def test_dry_run_reports_what_would_change_and_writes_nothing(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    config.update(on_segment_exit="remove_tag", max_exit_ratio=0.5)
    ok(run(config, singer_input(people("ann", "bob", "cy", "dee")), tmp_path))
    before = sandbox.dump()
    store_bytes = Path(config["sync_state_path"]).read_bytes()
    dry = {**config, "dry_run": True, "dry_run_path": str(tmp_path / "dry.jsonl")}
    text = singer_input(people("ann", "bob", "dee", "eve", changed=("bob",)))
    result = ok(run(dry, text, tmp_path))
    assert result.stdout == ""
    report = json.loads(result.stderr.split("Dry run report: ", 1)[1].splitlines()[0])
    assert report["would"] == {
        "created": 1,
        "updated": 1,
        "unchanged": 2,
        "tagged": 1,
        "untagged": 1,
        "unsubscribed": 0,
    }
    assert "eve@example.com" not in result.stderr  # samples are masked
    payloads = [json.loads(line) for line in (tmp_path / "dry.jsonl").read_text().splitlines()]
    assert sorted(row["key"] for row in payloads) == ["bob@example.com", "eve@example.com"]
    after = sandbox.dump()
    assert after["contacts"] == before["contacts"]
    assert after["batches"] == before["batches"]
    assert Path(config["sync_state_path"]).read_bytes() == store_bytes


def test_max_records_runs_a_trial_without_state(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    config.update(max_records=2, on_segment_exit="remove_tag", max_exit_ratio=1.0)
    result = ok(run(config, singer_input(people("ann", "bob", "cy", "dee")), tmp_path))
    assert result.stdout == ""
    assert set(settled(sandbox)) == {"ann@example.com", "bob@example.com"}


def test_a_second_run_for_the_same_brand_fails_fast(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    with SyncStore(config["sync_state_path"], brand_id(config["api_url"], API_KEY)) as store:
        store.acquire_run_lock()
        result = run(config, singer_input(people("ann")), tmp_path)
    assert result.returncode == 1
    assert "Another target-omnisend run for this brand" in result.stderr
    assert "Traceback" not in result.stderr
    assert sandbox.dump()["contacts"] == []


def start_target(config: dict[str, Any], text: str, cwd: Path) -> subprocess.Popen[str]:
    """The target reading ``text`` to its end (stdin closed), running on."""
    process = subprocess.Popen(
        [EXECUTABLE, "--config", str(write_config(config, cwd))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    assert process.stdin is not None
    process.stdin.write(text)
    process.stdin.close()
    process.stdin = None  # communicate() must not flush it
    return process


def stop_and_time(process: subprocess.Popen[str]) -> tuple[float, str, str]:
    """SIGTERM; seconds until the target exited, its stdout and stderr."""
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    return time.monotonic() - began, stdout, stderr


def test_sigterm_while_waiting_for_the_last_batches_stops_within_seconds(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    sandbox.configure(batch_processing_delay=300)  # the batch never finishes during the test
    config.update(on_segment_exit="remove_tag")
    process = start_target(config, singer_input(people("ann", "bob")), tmp_path)
    wait_for(lambda: sandbox.dump()["batches"], timeout=30)
    time.sleep(0.5)  # the input is read: the target waits for its batch
    seconds, stdout, stderr = stop_and_time(process)
    assert seconds < 10, stderr[-2000:]
    assert process.returncode == 1  # nothing was confirmed: no STATE
    assert state_lines(stdout) == []
    assert "Stopped on signal 15 while waiting for the last batches" in stderr
    assert "Traceback" not in stderr


def test_sigterm_during_the_end_of_a_run_with_a_listing_applies_no_exit(
    sandbox: Any, tmp_path: Path, config: dict[str, Any]
) -> None:
    """Contacts tagged elsewhere are listed at 6 requests a minute: the run is still ending."""
    for n in range(2000):
        body = {"identifiers": [{"type": "email", "id": f"old{n}@example.com"}], "tags": [TAG]}
        sandbox.state.store.upsert(body, "2026", sandbox.settings)
    config.update(
        on_segment_exit="remove_tag", reconcile_existing_tag=True, max_exit_ratio=1.0,
        max_requests_per_minute=6,
    )  # fmt: skip
    process = start_target(config, singer_input(people("ann")), tmp_path)
    wait_for(lambda: contacts_requests(sandbox) >= 2, timeout=30)  # the probe, then a page
    time.sleep(1.0)
    seconds, _, stderr = stop_and_time(process)
    assert seconds < 10, stderr[-2000:]
    assert "Stopped on signal 15 while" in stderr
    assert "Traceback" not in stderr
    removals = [op for op in sandbox.dump()["tag_operations"] if op["action"] == "remove"]
    assert removals == []
    assert len(tagged(sandbox)) >= 2000
