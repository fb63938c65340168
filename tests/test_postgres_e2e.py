"""A real warehouse upstream: PostgreSQL views read by tap-postgres, through the real Meltano CLI.

A throwaway PostgreSQL cluster (Debian's `postgresql`, `initdb` in a temporary folder, a free
loopback port, run as the `postgres` user where the tests run as root) holds one customer table
and two segment views over it, shaped as README "From a warehouse" shows. Meltano installs
`meltanolabs-tap-postgres` from PyPI as meltano.yml pins it and runs the project's job
`export-warehouse-segments` against a sandbox. The tests check what the sandbox holds.

Where no server can be had the tests skip with the reason; CI sets CI_REQUIRE_POSTGRES so a
missing server fails instead. TARGET_OMNISEND_PG_HOST (and _PORT, _USER, _PASSWORD) points the
tests at a server someone else runs (GitHub's PostgreSQL service container).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from target_omnisend.sandbox.server import SandboxServer
from tests.pg_server import Connection, ExternalServer, PostgresServer, find_binaries
from tests.test_meltano_e2e import MELTANO, ROOT, RUN_TIMEOUT, base_env, contacts_by_email, meltano

pytestmark = [pytest.mark.postgres, pytest.mark.meltano, pytest.mark.e2e]

JOB = "export-warehouse-segments"
VIP, LAPSED = "segment: vip_customers", "segment: lapsed_customers"
SOURCE = "source: warehouse"

# The README's views, over a customer table with a nested JSON column, numeric, timestamp and
# date columns, NULLs, a mixed-case duplicate email, an invalid email and six countries.
# `crm.checked` lets a test make the warehouse fail the query at one customer (the tap dies).
SCHEMA_SQL = """
DROP SCHEMA IF EXISTS segments CASCADE;
DROP SCHEMA IF EXISTS crm CASCADE;
CREATE SCHEMA crm;
CREATE TABLE crm.customers (
  customer_id text PRIMARY KEY,
  email text, first_name text, last_name text, phone text, country text,
  profile jsonb, lifetime_value numeric(12, 2), email_consent text, consent_at timestamptz,
  birthdate date, vip boolean NOT NULL DEFAULT false, lapsed boolean NOT NULL DEFAULT false
);
CREATE TABLE crm.export_faults (fail_at text PRIMARY KEY, action text NOT NULL);
CREATE FUNCTION crm.checked(id text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM crm.export_faults WHERE fail_at = id AND action = 'raise') THEN
    RAISE EXCEPTION 'simulated warehouse failure while reading customer %', id;
  END IF;
  IF EXISTS (SELECT 1 FROM crm.export_faults WHERE fail_at = id AND action = 'stall') THEN
    PERFORM pg_sleep(120);  -- the test kills the tap meanwhile
  END IF;
  RETURN id;
END $$;
INSERT INTO crm.customers VALUES
 ('C001', 'ann.lee@example.com', 'Ann', 'Lee', '07700 900001', 'GB',
  '{"address": {"street": "1 Elm Street", "city": "Leeds", "postal_code": "LS1 4DY"},
    "loyalty": {"tier": "gold", "since": 2019}}',
  1200.50, 'Y', '2024-03-01 10:00:00+00', '1985-04-12', true, false),
 ('C002', 'Ann.Lee@Example.COM', 'Ann', 'Lee', NULL, 'GB', NULL, 80.00, 'Y',
  '2024-03-02 10:00:00+00', NULL, true, false),
 ('C003', 'bob.ray@example.com', 'Bob', NULL, NULL, 'US',
  '{"address": {"city": "Boston"}, "loyalty": {"tier": "silver"}}', 310.00, NULL, NULL, NULL,
  true, true),
 ('C004', 'chloe.wolf@example.de', 'Chloé', 'Wolf', '+49 30 1234567', 'DE',
  '{"loyalty": {"tier": "bronze"}}', 55.10, 'N', '2023-12-24 08:30:00+00', '1990-01-31',
  false, true),
 ('C005', 'not-an-email', 'Ghost', NULL, NULL, 'FR', NULL, 0, NULL, NULL, NULL, true, false),
 ('C006', 'dan.roux@example.fr', 'Dan', 'Roux', NULL, 'FR', NULL, NULL, NULL, NULL, NULL,
  false, true);
INSERT INTO crm.customers
SELECT 'C0' || g, 'member' || g || '@example.com', 'Member' || g, 'Vip', NULL,
       (ARRAY['GB', 'US', 'DE', 'FR', 'LT', 'CA'])[1 + g % 6], '{"loyalty": {"tier": "gold"}}',
       g * 10.25, 'Y', '2024-01-01 00:00:00+00', NULL, true, g % 3 = 0
FROM generate_series(10, 39) g;
"""
# The test's fault switch, evaluated as each row is sent (views may gain columns at the end).
FAULT_SQL = """
CREATE OR REPLACE VIEW segments.vip_customers AS
SELECT *, count(*) OVER () AS snapshot_size, crm.checked(customer_id) AS _read_check
FROM crm.contacts WHERE vip;
CREATE OR REPLACE VIEW segments.lapsed_customers AS
SELECT *, count(*) OVER () AS snapshot_size, crm.checked(customer_id) AS _read_check
FROM crm.contacts WHERE lapsed;
"""


def readme_views() -> str:
    """The SQL of README's "From a warehouse" section: the views these tests read."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("### From a warehouse")[1]
    return section.split("```sql\n", 1)[1].split("```", 1)[0]


# Between the runs: C011 leaves the VIP view, Bob's name changes, C040 joins.
CHANGES_SQL = """
UPDATE crm.customers SET vip = false WHERE customer_id = 'C011';
UPDATE crm.customers SET first_name = 'Robert' WHERE customer_id = 'C003';
INSERT INTO crm.customers VALUES ('C040', 'new.joiner@example.com', 'Nia', 'Joiner', NULL, 'LT',
  '{"loyalty": {"tier": "silver"}}', 42.00, 'Y', '2024-06-01 12:00:00+00', NULL, true, false);
"""
FILLERS = {f"member{n}@example.com" for n in range(10, 40)}
VIP_RUN1 = {"ann.lee@example.com", "bob.ray@example.com"} | FILLERS
LAPSED_RUN1 = {
    "bob.ray@example.com",
    "chloe.wolf@example.de",
    "dan.roux@example.fr",
} | {f"member{n}@example.com" for n in range(10, 40) if n % 3 == 0}


@pytest.fixture(scope="module")
def warehouse() -> Iterator[Connection]:
    """A PostgreSQL server for this module: an external one, or a throwaway cluster."""
    server: Connection | None = ExternalServer.from_env()
    if server is None:
        bin_dir, reason = find_binaries()
        if bin_dir is None:
            if os.environ.get("CI_REQUIRE_POSTGRES"):
                pytest.fail(f"CI_REQUIRE_POSTGRES is set but {reason}")
            pytest.skip(reason)
        server = PostgresServer(bin_dir)
    server.start()  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def warehouse_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The project's meltano.yml in a temporary project, tap-postgres and the target installed."""
    project = tmp_path_factory.mktemp("warehouse-project")
    text = (ROOT / "meltano.yml").read_text(encoding="utf-8")
    assert "pip_url: -e .\n" in text
    (project / "meltano.yml").write_text(
        text.replace("pip_url: -e .\n", f"pip_url: -e {ROOT}\n"), encoding="utf-8"
    )
    result = meltano(project, base_env(), "install", "tap-postgres", "target-omnisend")
    assert result.returncode == 0, result.stderr[-3000:]
    yield project
    shutil.rmtree(project, ignore_errors=True)


@pytest.fixture
def tables(warehouse: Connection) -> Connection:
    warehouse.sql(SCHEMA_SQL + readme_views() + FAULT_SQL)
    return warehouse


def run_env(
    warehouse: Connection, sandbox: SandboxServer, tmp_path: Path, **extra: str
) -> dict[str, str]:
    env = base_env()
    env.update(warehouse.tap_env())
    env.update(
        TARGET_OMNISEND_API_URL=sandbox.api_url,
        TARGET_OMNISEND_API_KEY="test-key-warehouse",
        TARGET_OMNISEND_SYNC_STATE_PATH=str(tmp_path / "sync.sqlite"),
        TARGET_OMNISEND_REJECTS_PATH=str(tmp_path / "rejects.jsonl"),
        TARGET_OMNISEND_ON_SEGMENT_EXIT="remove_tag",
        **extra,
    )
    return env


def run_job(project: Path, env: dict[str, str]) -> tuple[int, str, dict[str, Any]]:
    """`meltano run export-warehouse-segments`: exit code, stderr, the target's summary."""
    result = meltano(project, env, "--environment=dev", "run", JOB)
    return result.returncode, result.stderr, summary_of(result.stderr)


def successful_run(
    project: Path, env: dict[str, str], sandbox: SandboxServer
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Run the job, which must succeed: the target's summary and the sandbox's contacts."""
    code, log, summary = run_job(project, env)
    assert code == 0, log[-4000:]
    return summary, contacts_by_email(sandbox.settled_dump())


def summary_of(log: str) -> dict[str, Any]:
    marker = "target-omnisend summary: "
    lines = [line for line in log.splitlines() if marker in line]
    assert len(lines) == 1, log[-3000:]
    summary, _ = json.JSONDecoder().raw_decode(lines[0].split(marker, 1)[1])
    return summary


def tagged(contacts: dict[str, dict[str, Any]], tag: str) -> set[str]:
    return {email for email, contact in contacts.items() if tag in contact.get("tags", [])}


def printable(summary: dict[str, Any], contacts: dict[str, dict[str, Any]]) -> str:
    """A run's summary and the sandbox's contacts (emails masked) for the closing note."""
    from target_omnisend.summary import mask_email

    keys = ("records_read", "contacts_upserted", "unchanged_skipped", "duplicates_merged")
    rows = [json.dumps({k: summary.get(k) for k in (*keys, "rejected", "segments")})]
    for email in sorted(contacts):
        contact = contacts[email]
        rows.append(
            f"  {mask_email(email)} {contact.get('firstName')} {contact.get('country')} "
            f"{sorted(contact.get('tags', []))}"
        )
    return "\n".join(rows)


def assert_first_load(
    contacts: dict[str, dict[str, Any]], summary: dict[str, Any], rejects_path: Path
) -> None:
    """Every valid row is a contact, the mixed-case duplicate one, the invalid email a reject."""
    assert set(contacts) == VIP_RUN1 | LAPSED_RUN1
    assert tagged(contacts, VIP) == VIP_RUN1
    assert tagged(contacts, LAPSED) == LAPSED_RUN1
    assert tagged(contacts, SOURCE) == set(contacts)
    assert not any("segments-" in tag for c in contacts.values() for tag in c.get("tags", []))
    lines = [json.loads(line) for line in rejects_path.read_text().splitlines()]
    rejects = [line["record"] for line in lines if line["type"] == "RECORD"]
    assert [r["customer_id"] for r in rejects] == ["C005"]
    assert "email" in rejects[0]["_reject"]["code"]
    assert summary["rejected"] == 1
    # C002 (later) lacks C001's phone, address and birthdate: merging would drop them, so both
    # are sent, in order (issue 17): Omnisend keeps C001's fields C002 does not carry.
    assert summary["duplicates_merged"] == 0
    assert summary["records_read"] == len(VIP_RUN1) + len(LAPSED_RUN1) + 2


def test_warehouse_views_load_then_only_changes_and_exits_are_sent(
    warehouse_project: Path, tables: Connection, sandbox: SandboxServer, tmp_path: Path
) -> None:
    env = run_env(tables, sandbox, tmp_path)
    summary, contacts = successful_run(warehouse_project, env, sandbox)
    print("run 1:", printable(summary, contacts))

    assert_first_load(contacts, summary, tmp_path / "rejects.jsonl")

    # C001 and C002 (Ann.Lee@Example.COM, later in the view) are one contact: the later wins
    # where it has a value, C001's phone and city stay where it has none.
    ann = contacts["ann.lee@example.com"]
    assert (ann["firstName"], ann["lastName"]) == ("Ann", "Lee")
    assert float(ann["customProperties"]["lifetime_value"]) == 80.0
    assert ann["city"] == "Leeds"
    member = contacts["member10@example.com"]
    assert member["customProperties"]["loyalty_tier"] == "gold"  # from the nested JSON column
    assert float(member["customProperties"]["lifetime_value"]) == 102.5  # numeric(12, 2)
    bob = contacts["bob.ray@example.com"]
    assert (bob["firstName"], bob["city"]) == ("Bob", "Boston")
    assert bob["customProperties"]["loyalty_tier"] == "silver"
    assert not bob.get("lastName")  # NULL sends nothing
    chloe = contacts["chloe.wolf@example.de"]
    assert chloe["firstName"] == "Chloé"
    email_id = next(i for i in chloe["identifiers"] if i["type"] == "email")
    assert email_id["channels"]["email"]["status"] == "unsubscribed"
    countries = {c.get("countryCode") or c.get("country") for c in contacts.values()}
    assert len(countries - {None}) >= 5

    # The table changes; run 2 sends only the changed and new contacts and applies the exit.
    received_before = sum(batch["totalCount"] for batch in sandbox.dump()["batches"])
    tables.sql(CHANGES_SQL)
    summary, contacts = successful_run(warehouse_project, env, sandbox)
    print("run 2:", printable(summary, contacts))
    received = sum(batch["totalCount"] for batch in sandbox.dump()["batches"]) - received_before
    assert summary["contacts_upserted"] == received
    # Bob (in both views: one changed contact per stream) and the joiner; nothing else.
    # Plus Ann's two rows (C001, C002: one contact, the later lacking fields of the earlier, so
    # both are sent in order each run; the store holds one fingerprint per contact).
    assert received <= 5
    assert summary["unchanged_skipped"] >= len(VIP_RUN1 | LAPSED_RUN1) - 2
    assert summary["segments"]["exits_untagged"] == 1
    assert tagged(contacts, VIP) == (VIP_RUN1 - {"member11@example.com"}) | {
        "new.joiner@example.com"
    }
    assert tagged(contacts, LAPSED) == LAPSED_RUN1
    assert SOURCE in contacts["member11@example.com"]["tags"]  # left the segment, kept
    assert contacts["bob.ray@example.com"]["firstName"] == "Robert"
    assert contacts["new.joiner@example.com"]["firstName"] == "Nia"


STALLED = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
UNSTALL = "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
LEAVERS_SQL = """
UPDATE crm.customers SET lapsed = false WHERE customer_id = 'C012';
UPDATE crm.customers SET vip = false WHERE customer_id = 'C013';
"""
FAULTS = {
    "query error": "INSERT INTO crm.export_faults VALUES ('C030', 'raise');",
    "SIGKILL": "INSERT INTO crm.export_faults VALUES ('C030', 'stall');",
}


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_the_tap_while_it_stalls(
    project: Path, env: dict[str, str], warehouse: Connection
) -> tuple[int, str]:
    """Run the job; once the warehouse stalls mid-view, SIGKILL the tap (as an OOM kill would)."""
    job = subprocess.Popen(
        [MELTANO, "--environment=dev", "run", JOB],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while warehouse.sql(STALLED).strip() == "0":
        assert job.poll() is None, "the job ended before the warehouse stalled"
        assert time.monotonic() < deadline, "the tap never stalled"
        time.sleep(0.5)
    taps = [
        pid
        for pid in descendants(job.pid)
        if b"tap-postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert taps, "no tap-postgres process under meltano"
    for pid in taps:
        os.kill(pid, signal.SIGKILL)
    _, log = job.communicate(timeout=RUN_TIMEOUT)
    warehouse.sql(UNSTALL)
    return job.returncode, log


@pytest.mark.parametrize("death", ["query error", "SIGKILL"])
def test_a_tap_that_dies_half_way_through_a_view_removes_nobody(
    warehouse_project: Path, tables: Connection, sandbox: SandboxServer, tmp_path: Path, death: str
) -> None:
    env = run_env(tables, sandbox, tmp_path)
    successful_run(warehouse_project, env, sandbox)

    # Two people leave, one from each view; then, at the first view's tenth row, the warehouse
    # fails the query or the tap is killed: Meltano closes the target's input, the target ends.
    tables.sql(LEAVERS_SQL)
    tables.sql(FAULTS[death])
    if death == "query error":
        code, log, summary = run_job(warehouse_project, env)
        assert "simulated warehouse failure" in log
    else:
        code, log = kill_the_tap_while_it_stalls(warehouse_project, env, tables)
        summary = summary_of(log)
    assert code != 0
    assert "extractor failed" in log.lower(), log[-3000:]
    assert summary["records_read"] < len(LAPSED_RUN1) - 1
    contacts = contacts_by_email(sandbox.settled_dump())
    print(f"run with the tap dying ({death}):", printable(summary, contacts))
    assert tagged(contacts, LAPSED) == LAPSED_RUN1  # nobody left
    assert tagged(contacts, VIP) == VIP_RUN1
    assert "is not treated as a full snapshot" in log

    # The same change without the failure: both exits are applied.
    tables.sql("DELETE FROM crm.export_faults;")
    summary, contacts = successful_run(warehouse_project, env, sandbox)
    assert tagged(contacts, LAPSED) == LAPSED_RUN1 - {"member12@example.com"}
    assert tagged(contacts, VIP) == VIP_RUN1 - {"member13@example.com"}
    assert summary["segments"]["exits_untagged"] == 2


def test_tap_postgres_batch_files_take_the_record_path(
    warehouse_project: Path, tables: Connection, sandbox: SandboxServer, tmp_path: Path
) -> None:
    batches = tmp_path / "batches"
    batches.mkdir()
    batch_config = {
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": batches.as_uri(), "prefix": "segment-"},
    }
    env = run_env(tables, sandbox, tmp_path, TAP_POSTGRES_BATCH_CONFIG=json.dumps(batch_config))
    summary, contacts = successful_run(warehouse_project, env, sandbox)
    assert len(list(batches.glob("segment-*.json.gz"))) >= 2  # the tap really wrote batches
    print("run 1 (BATCH):", printable(summary, contacts))
    assert_first_load(contacts, summary, tmp_path / "rejects.jsonl")
    assert float(contacts["member10@example.com"]["customProperties"]["lifetime_value"]) == 102.5

    # Change-only sends and exits work from batch files too (snapshot_size is counted there).
    tables.sql(CHANGES_SQL)
    summary, contacts = successful_run(warehouse_project, env, sandbox)
    assert summary["contacts_upserted"] <= 5  # as above: Ann's two rows are sent in order
    assert summary["segments"]["exits_untagged"] == 1
    assert "member11@example.com" not in tagged(contacts, VIP)
    assert contacts["bob.ray@example.com"]["firstName"] == "Robert"
