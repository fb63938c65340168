"""Unit tests for the sync store: fingerprints, change detection, memberships, lock, privacy."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from target_omnisend.sync_store import (
    SCHEMA_VERSION,
    SendReason,
    SyncStore,
    SyncStoreError,
    SyncStoreLocked,
    brand_id,
    fingerprint,
)

DAY = 86_400.0
NOW = 1_800_000_000.0
PAYLOAD = {
    "identifiers": [{"type": "email", "id": "jane@example.com", "sendWelcomeMessage": False}],
    "firstName": "Jane",
    "customProperties": {"tier": "gold", "points": 3},
}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sync.sqlite"


@pytest.fixture
def store(db_path: Path):
    """A store that merges after every write: reads see each write at once (the pending
    tables' own rules are tested with the default merge interval below)."""
    with SyncStore(db_path, "brand-a", merge_every=0) as opened:
        yield opened


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- fingerprints ------------------------------------------------------------------------------


def test_fingerprint_is_stable_across_key_order_and_tag_order():
    reordered = {
        "customProperties": {"points": 3, "tier": "gold"},
        "firstName": "Jane",
        "identifiers": PAYLOAD["identifiers"],
    }
    first = fingerprint(PAYLOAD, ("a", "b"))
    assert first == fingerprint(reordered, ("b", "a", "a"))
    assert len(first) == 32
    assert all(char in "0123456789abcdef" for char in first)


@pytest.mark.parametrize(
    "changed",
    [
        {**PAYLOAD, "firstName": "Janet"},
        {**PAYLOAD, "lastName": "Doe"},
        {**PAYLOAD, "customProperties": {"tier": "gold", "points": 4}},
        {**PAYLOAD, "customProperties": {"tier": "gold", "points": "3"}},
        {
            **PAYLOAD,
            "identifiers": [
                {"type": "email", "id": "jane@example.com", "sendWelcomeMessage": True}
            ],
        },
    ],
)
def test_fingerprint_changes_with_any_payload_change(changed):
    assert fingerprint(changed, ("a",)) != fingerprint(PAYLOAD, ("a",))


def test_fingerprint_changes_with_tags():
    assert fingerprint(PAYLOAD, ("a",)) != fingerprint(PAYLOAD, ("a", "b"))
    assert fingerprint(PAYLOAD, ()) != fingerprint(PAYLOAD, ("a",))


def test_fingerprint_excludes_segment_tags_in_tags_and_payload():
    v5_payload = {**PAYLOAD, "tags": ["source: warehouse", "segment: vip"]}
    other_segment = {**PAYLOAD, "tags": ["source: warehouse", "segment: churned"]}
    assert fingerprint(
        v5_payload, ("source: warehouse", "segment: vip"), exclude_tags={"segment: vip"}
    ) == fingerprint(
        other_segment, ("source: warehouse", "segment: churned"), exclude_tags={"segment: churned"}
    )
    assert v5_payload["tags"] == ["source: warehouse", "segment: vip"]  # not mutated


def test_fingerprint_handles_unicode_payloads():
    assert fingerprint({"firstName": "Zoë"}) != fingerprint({"firstName": "Zoe"})


def test_brand_id_is_stable_and_does_not_contain_the_key():
    key = "6423a1b2c3d4e5f6a7b8c9d0-SECRETKEYMATERIAL"
    first = brand_id("https://api.omnisend.com/api", key)
    assert first == brand_id("https://api.omnisend.com/api/", key)
    assert first != brand_id("https://api.omnisend.com/api", key + "x")
    assert first != brand_id("https://api.omnisend.com/v5", key)
    assert "SECRET" not in first
    assert key[:8] not in first


# -- change detection --------------------------------------------------------------------------


def test_unknown_contacts_are_new_and_confirmed_ones_unchanged(store: SyncStore):
    assert store.classify([("a@x.io", "f1")], now=NOW) == {"a@x.io": SendReason.NEW}
    assert store.confirm([("a@x.io", "f1")], now=NOW) == 1
    assert store.classify([("a@x.io", "f1")], now=NOW + 60) == {"a@x.io": SendReason.UNCHANGED}
    assert not store.needs_send("a@x.io", "f1", NOW + 60)
    assert store.needs_send("a@x.io", "f2", NOW + 60)
    assert store.classify([("a@x.io", "f2")], now=NOW) == {"a@x.io": SendReason.CHANGED}


def test_filter_changed_returns_only_keys_to_send(store: SyncStore):
    store.confirm([("a@x.io", "f1"), ("b@x.io", "f2"), ("c@x.io", "f3")], now=NOW)
    items = [("a@x.io", "f1"), ("b@x.io", "changed"), ("d@x.io", "f4")]
    assert store.filter_changed(items, now=NOW + 1) == {"b@x.io", "d@x.io"}


def test_repeated_key_in_a_batch_keeps_the_last_fingerprint(store: SyncStore):
    store.confirm([("a@x.io", "f1")], now=NOW)
    assert store.filter_changed([("a@x.io", "old"), ("a@x.io", "f1")], now=NOW) == set()


def test_resync_after_days_resends_unchanged_contacts_when_due(store: SyncStore):
    store.confirm([("a@x.io", "f1")], now=NOW)
    just_before = NOW + 7 * DAY - 1
    assert store.classify([("a@x.io", "f1")], now=just_before)["a@x.io"] is SendReason.UNCHANGED
    assert store.classify([("a@x.io", "f1")], now=NOW + 7 * DAY)["a@x.io"] is SendReason.STALE
    assert store.needs_send("a@x.io", "f1", NOW + 2 * DAY, resync_after_days=1)
    assert store.needs_send("a@x.io", "f1", NOW, resync_after_days=0)
    assert not store.needs_send("a@x.io", "f1", NOW + 1000 * DAY, resync_after_days=None)


def test_confirm_refreshes_the_resync_clock(store: SyncStore):
    store.confirm([("a@x.io", "f1")], now=NOW)
    store.confirm([("a@x.io", "f1")], now=NOW + 6 * DAY)
    assert not store.needs_send("a@x.io", "f1", NOW + 8 * DAY)


def test_full_resync_ignores_the_store(store: SyncStore):
    store.confirm([("a@x.io", "f1")], now=NOW)
    reasons = store.classify([("a@x.io", "f1"), ("b@x.io", "f2")], now=NOW, full_resync=True)
    assert reasons == {"a@x.io": SendReason.FULL_RESYNC, "b@x.io": SendReason.FULL_RESYNC}
    assert store.needs_send("a@x.io", "f1", NOW, full_resync=True)


def test_nothing_is_written_until_confirmed(store: SyncStore):
    store.filter_changed([("a@x.io", "f1")], now=NOW)
    store.classify([("a@x.io", "f1")], now=NOW)
    assert store.contact_count() == 0
    assert store.confirm([], now=NOW) == 0
    assert store.contact_count() == 0


def test_forget_makes_a_contact_new_again(store: SyncStore):
    store.confirm([("a@x.io", "f1"), ("b@x.io", "f1")], now=NOW)
    store.forget(["a@x.io"])
    assert store.filter_changed([("a@x.io", "f1"), ("b@x.io", "f1")], now=NOW) == {"a@x.io"}


def test_reads_answer_as_of_the_last_merge(db_path: Path):
    with SyncStore(db_path, "brand-a") as store:
        store.confirm([("a@x.io", "f1")], now=NOW)
        store.add_members("segment: vip", ["a@x.io"], now=NOW)
        assert store.classify([("a@x.io", "f1")], now=NOW) == {"a@x.io": SendReason.NEW}
        assert store.members("segment: vip") == set()  # the store as it was before the run
        store.merge_pending()
        assert store.classify([("a@x.io", "f1")], now=NOW) == {"a@x.io": SendReason.UNCHANGED}
        assert store.members("segment: vip") == {"a@x.io"}


def test_pending_rows_merge_every_so_many_and_keep_the_rules_of_direct_writes(db_path: Path):
    with SyncStore(db_path, "brand-a", merge_every=5) as store:
        store.confirm([("a@x.io", "f1"), ("b@x.io", "f1")], now=NOW)
        store.confirm([("a@x.io", "f2")], now=NOW + 1)  # the last confirmation wins
        store.add_members("segment: vip", ["a@x.io"], now=NOW)
        assert store.members("segment: vip") == set()  # 4 rows pending
        store.add_members("segment: vip", ["a@x.io", "c@x.io"], now=NOW + DAY)  # 6: merged
        assert store.members("segment: vip") == {"a@x.io", "c@x.io"}
        assert store.classify([("a@x.io", "f2"), ("b@x.io", "f1")], now=NOW + 1) == {
            "a@x.io": SendReason.UNCHANGED,
            "b@x.io": SendReason.UNCHANGED,
        }
    with sqlite3.connect(db_path) as conn:
        since = dict(conn.execute("SELECT email_key, since FROM memberships").fetchall())
        pending = conn.execute("SELECT count(*) FROM pending_memberships").fetchone()[0]
    assert since == {"a@x.io": NOW, "c@x.io": NOW + DAY}  # a member keeps its first since
    assert pending == 0


def test_closing_merges_and_a_run_that_died_is_merged_by_the_next(db_path: Path):
    with SyncStore(db_path, "brand-a") as store:
        store.confirm([("a@x.io", "f1")], now=NOW)
    died = SyncStore(db_path, "brand-a")
    died.confirm([("b@x.io", "f1")], now=NOW)  # never closed: the rows stay pending
    dry = SyncStore.open_for_dry_run(db_path, "brand-a")
    assert dry is not None
    assert dry.classify([("b@x.io", "f1")], now=NOW) == {"b@x.io": SendReason.NEW}
    dry.close()
    with SyncStore(db_path, "brand-a") as next_run:
        assert next_run.classify([("a@x.io", "f1"), ("b@x.io", "f1")], now=NOW) == {
            "a@x.io": SendReason.UNCHANGED,
            "b@x.io": SendReason.UNCHANGED,
        }
    died._conn.close()


def test_removals_follow_the_pending_additions(db_path: Path):
    with SyncStore(db_path, "brand-a") as store:
        store.add_members("segment: vip", ["a@x.io", "b@x.io"], now=NOW)
        store.remove_members("segment: vip", ["a@x.io"])
        store.confirm([("c@x.io", "f1")], now=NOW)
        store.forget(["c@x.io"])
        store.merge_pending()
        assert store.members("segment: vip") == {"b@x.io"}
        assert store.classify([("c@x.io", "f1")], now=NOW) == {"c@x.io": SendReason.NEW}


def test_brands_do_not_see_each_other(db_path: Path):
    with (
        SyncStore(db_path, "brand-a", merge_every=0) as first,
        SyncStore(db_path, "brand-b") as second,
    ):
        first.confirm([("a@x.io", "f1")], now=NOW)
        first.add_members("segment: vip", ["a@x.io"], now=NOW)
        assert second.needs_send("a@x.io", "f1", NOW)
        assert second.members("segment: vip") == set()
        assert second.contact_count() == 0
        assert first.contact_count() == 1


def test_data_survives_reopening(db_path: Path):
    with SyncStore(db_path, "brand-a") as first:
        first.confirm([("a@x.io", "f1")], now=NOW)
        first.add_members("segment: vip", ["a@x.io"], now=NOW)
    with SyncStore(db_path, "brand-a") as again:
        assert not again.needs_send("a@x.io", "f1", NOW)
        assert again.members("segment: vip") == {"a@x.io"}


def test_large_batches_are_looked_up_in_chunks(store: SyncStore):
    keys = [f"user{index}@x.io" for index in range(12_345)]
    store.confirm([(key, "f") for key in keys], now=NOW)
    items = [(key, "f" if index % 3 else "g") for index, key in enumerate(keys)]
    changed = store.filter_changed(items, now=NOW)
    assert changed == {key for index, key in enumerate(keys) if index % 3 == 0}


def test_keys_with_quotes_and_unicode_round_trip(store: SyncStore):
    odd = ["o'brien@x.io", 'quote"d@x.io', "zoë@x.io", "+447700900123"]
    store.confirm([(key, "f") for key in odd], now=NOW)
    assert store.filter_changed([(key, "f") for key in odd], now=NOW) == set()


# -- memberships -------------------------------------------------------------------------------


def test_members_add_and_remove(store: SyncStore):
    assert not store.knows_segment("segment: vip")
    store.add_members("segment: vip", ["a@x.io", "b@x.io"], now=NOW)
    store.add_members("segment: churned", ["b@x.io"], now=NOW)
    assert store.knows_segment("segment: vip")
    assert store.members("segment: vip") == {"a@x.io", "b@x.io"}
    store.remove_members("segment: vip", ["a@x.io", "nobody@x.io"])
    assert store.members("segment: vip") == {"b@x.io"}
    assert store.members("segment: churned") == {"b@x.io"}
    assert store.segment_tags() == ["segment: churned", "segment: vip"]
    store.remove_members("segment: vip", ["b@x.io"])
    assert not store.knows_segment("segment: vip")


def test_add_members_keeps_the_original_since(store: SyncStore, db_path: Path):
    store.add_members("segment: vip", ["a@x.io"], now=NOW)
    store.add_members("segment: vip", ["a@x.io"], now=NOW + DAY)
    with sqlite3.connect(db_path) as conn:
        (since,) = conn.execute("SELECT since FROM memberships").fetchone()
    assert since == NOW


def test_replace_members_seeds_from_a_listing(store: SyncStore):
    store.add_members("segment: vip", ["a@x.io", "b@x.io"], now=NOW)
    store.replace_members("segment: vip", ["b@x.io", "c@x.io"], now=NOW)
    assert store.members("segment: vip") == {"b@x.io", "c@x.io"}
    store.replace_members("segment: vip", [], now=NOW)
    assert store.members("segment: vip") == set()


def test_non_members_are_the_entrants(store: SyncStore):
    store.add_members("segment: vip", ["a@x.io", "b@x.io"], now=NOW)
    keys = ["a@x.io", "c@x.io", "d@x.io", "c@x.io"]
    assert store.non_members("segment: vip", keys) == {"c@x.io", "d@x.io"}
    assert store.non_members("segment: other", keys) == {"a@x.io", "c@x.io", "d@x.io"}
    assert store.non_members("segment: vip", []) == set()


def test_members_elsewhere_are_members_of_other_segments_only(store: SyncStore):
    store.add_members("segment: vip", ["a@x.io", "b@x.io"], now=NOW)
    store.add_members("segment: lapsed", ["b@x.io", "c@x.io"], now=NOW)
    store.add_members("segment: new", ["c@x.io"], now=NOW)
    keys = ["a@x.io", "b@x.io", "c@x.io", "d@x.io"]
    assert store.members_elsewhere("segment: vip", keys) == {"b@x.io", "c@x.io"}
    assert store.members_elsewhere("segment: lapsed", keys) == {"a@x.io", "b@x.io", "c@x.io"}
    assert store.members_elsewhere("segment: gone", ["d@x.io"]) == set()


def _make_old_store(db_path: Path, version: int) -> None:
    """A store as an older version left it: no pending tables (and on 1, the contact index)."""
    SyncStore(db_path, "brand-a").close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO memberships (brand, segment_tag, email_key, since) "
            "VALUES ('brand-a', 'segment: vip', 'a@x.io', 1.0)"
        )
        conn.execute("DROP TABLE pending_contacts")
        conn.execute("DROP TABLE pending_memberships")
        if version == 1:
            conn.execute("CREATE INDEX memberships_by_contact ON memberships (brand, email_key)")
        conn.execute(f"PRAGMA user_version = {version}")


def _indexes(db_path: Path) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
        return {name for (name,) in rows}


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_store_is_upgraded_and_keeps_its_members(db_path: Path, version: int):
    _make_old_store(db_path, version)
    dry = SyncStore.open_for_dry_run(db_path, "brand-a")  # read as it is, not upgraded
    assert dry is not None
    assert dry.members("segment: vip") == {"a@x.io"}
    assert dry.classify([("a@x.io", "f1")], now=NOW) == {"a@x.io": SendReason.NEW}
    dry.close()
    assert ("memberships_by_contact" in _indexes(db_path)) is (version == 1)
    with SyncStore(db_path, "brand-a") as upgraded:
        assert upgraded.members("segment: vip") == {"a@x.io"}
        upgraded.confirm([("a@x.io", "f1")], now=NOW)
    assert "memberships_by_contact" not in _indexes(db_path)
    with SyncStore(db_path, "brand-a") as again:
        assert again.classify([("a@x.io", "f1")], now=NOW) == {"a@x.io": SendReason.UNCHANGED}
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_segment_registry_remembers_streams(store: SyncStore):
    store.register_segments("crm", {"segment: vip": "vip", "segment: new": "new"}, now=NOW)
    store.register_segments("crm", {"segment: vip": "vip"}, now=NOW + 1)
    store.register_segments("shop", {"segment: buyers": "buyers"}, now=NOW)
    store.register_segments("shop", {}, now=NOW)
    assert store.segments_of_stream("crm") == {"segment: new": "new", "segment: vip": "vip"}
    assert store.segments_of_stream("shop") == {"segment: buyers": "buyers"}
    assert store.segments_of_stream("none") == {}


def test_a_failed_transaction_writes_nothing(store: SyncStore):
    store.confirm([("a@x.io", "f1")], now=NOW)
    with pytest.raises(sqlite3.IntegrityError):
        store.confirm([("a@x.io", "f2"), ("b@x.io", None)], now=NOW)  # type: ignore[list-item]
    assert store.contact_count() == 1
    assert not store.needs_send("a@x.io", "f1", NOW)
    store.confirm([("c@x.io", "f3")], now=NOW)  # the store is usable afterwards
    assert store.contact_count() == 2


def test_store_is_safe_across_threads(store: SyncStore):
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for batch in range(20):
                keys = [f"w{worker}-b{batch}-{index}@x.io" for index in range(50)]
                store.filter_changed([(key, "f") for key in keys], now=NOW)
                store.confirm([(key, "f") for key in keys], now=NOW)
                store.add_members(f"segment: {worker}", keys, now=NOW)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.contact_count() == 4 * 20 * 50
    assert len(store.members("segment: 2")) == 20 * 50


# -- files and permissions ---------------------------------------------------------------------


def test_files_are_private(db_path: Path):
    with SyncStore(db_path, "brand-a") as opened:
        opened.confirm([("a@x.io", "f1")], now=NOW)
        opened.acquire_run_lock()
        assert _mode(db_path.parent) == 0o700
        assert _mode(db_path) == 0o600
        assert _mode(opened.lock_path) == 0o600
        for suffix in ("-wal", "-shm"):
            sidecar = db_path.with_name(db_path.name + suffix)
            assert sidecar.exists()
            assert _mode(sidecar) == 0o600


def test_missing_parents_are_created_private_and_existing_dirs_left_alone(tmp_path: Path):
    tmp_path.chmod(0o755)
    nested = tmp_path / "a" / "b" / "sync.sqlite"
    with SyncStore(nested, "brand-a"):
        pass
    assert _mode(tmp_path / "a") == 0o700
    assert _mode(tmp_path / "a" / "b") == 0o700
    assert _mode(tmp_path) == 0o755


def test_an_existing_database_readable_by_others_is_made_private(db_path: Path):
    SyncStore(db_path, "brand-a").close()
    db_path.chmod(0o644)
    with SyncStore(db_path, "brand-a"):
        assert _mode(db_path) == 0o600


def test_database_uses_wal_and_the_current_schema(store: SyncStore, db_path: Path):
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_newer_schema_is_refused(db_path: Path):
    SyncStore(db_path, "brand-a").close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SyncStoreError, match="newer"):
        SyncStore(db_path, "brand-a")


def test_a_file_that_is_not_a_database_is_refused_clearly(db_path: Path):
    db_path.parent.mkdir(mode=0o700)
    db_path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SyncStoreError, match="not a usable target-omnisend sync store"):
        SyncStore(db_path, "brand-a")


def test_dry_run_treats_an_empty_database_as_no_store(db_path: Path):
    db_path.parent.mkdir(mode=0o700)
    sqlite3.connect(db_path).close()
    db_path.touch()
    assert SyncStore.open_for_dry_run(db_path, "brand-a") is None


def test_api_key_is_never_stored(tmp_path: Path):
    key = "KEY-THAT-MUST-NOT-LEAK-0123456789"
    path = tmp_path / "sync.sqlite"
    with SyncStore(path, brand_id("https://api.omnisend.com/api", key)) as opened:
        opened.confirm([("a@x.io", "f1")], now=NOW)
        opened.acquire_run_lock()
        assert key not in repr(opened)
    for file in tmp_path.iterdir():
        assert key.encode() not in file.read_bytes()


def test_empty_brand_is_refused(db_path: Path):
    with pytest.raises(ValueError, match="brand"):
        SyncStore(db_path, "")


# -- read-only (dry run) -----------------------------------------------------------------------


def test_dry_run_never_creates_a_store(db_path: Path):
    assert SyncStore.open_for_dry_run(db_path, "brand-a") is None
    assert not db_path.exists()
    assert not db_path.parent.exists()


def test_dry_run_reads_but_never_writes(db_path: Path):
    with SyncStore(db_path, "brand-a") as writer:
        writer.confirm([("a@x.io", "f1")], now=NOW)
        writer.add_members("segment: vip", ["a@x.io"], now=NOW)
    reader = SyncStore.open_for_dry_run(db_path, "brand-a")
    assert reader is not None
    with reader:
        assert reader.filter_changed([("a@x.io", "f1"), ("b@x.io", "f")], now=NOW) == {"b@x.io"}
        assert reader.members("segment: vip") == {"a@x.io"}
        with pytest.raises(SyncStoreError, match="read-only"):
            reader.confirm([("b@x.io", "f")], now=NOW)
        with pytest.raises(SyncStoreError, match="read-only"):
            reader.add_members("segment: vip", ["b@x.io"], now=NOW)
    with SyncStore(db_path, "brand-a") as again:
        assert again.contact_count() == 1


# -- run lock ----------------------------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from target_omnisend.sync_store import SyncStore
    store = SyncStore(sys.argv[1], sys.argv[2])
    store.acquire_run_lock()
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until stdin closes (or the process is killed)
    """
)


def _start_holder(db_path: Path, brand: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(db_path), brand],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_second_store_in_the_same_process_fails_fast(db_path: Path):
    with SyncStore(db_path, "brand-a") as first, SyncStore(db_path, "brand-a") as second:
        first.acquire_run_lock()
        first.acquire_run_lock()  # re-entrant for its holder
        with pytest.raises(SyncStoreLocked, match="Another target-omnisend run for this brand"):
            second.acquire_run_lock()
        assert not second.holds_run_lock
        first.release_run_lock()
        second.acquire_run_lock()
        assert second.holds_run_lock


def test_other_brands_are_not_blocked(db_path: Path):
    with SyncStore(db_path, "brand-a") as first, SyncStore(db_path, "brand-b") as second:
        first.acquire_run_lock()
        second.acquire_run_lock()
        assert first.lock_path != second.lock_path


def test_close_releases_the_lock(db_path: Path):
    first = SyncStore(db_path, "brand-a")
    first.acquire_run_lock()
    first.close()
    first.close()
    with SyncStore(db_path, "brand-a") as second:
        second.acquire_run_lock()


def test_lock_held_by_another_process_fails_fast_and_names_its_pid(db_path: Path):
    holder = _start_holder(db_path, "brand-a")
    try:
        with SyncStore(db_path, "brand-a") as second:
            with pytest.raises(SyncStoreLocked, match=f"pid {holder.pid}"):
                second.acquire_run_lock()
            with SyncStore(db_path, "brand-b") as other_brand:
                other_brand.acquire_run_lock()
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    with SyncStore(db_path, "brand-a") as third:
        third.acquire_run_lock()


def test_sigkill_releases_the_lock(db_path: Path):
    holder = _start_holder(db_path, "brand-a")
    with SyncStore(db_path, "brand-a") as second:
        with pytest.raises(SyncStoreLocked):
            second.acquire_run_lock()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        assert holder.returncode == -signal.SIGKILL
        second.acquire_run_lock()
        assert second.holds_run_lock
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.stdout is not None
    holder.stdout.close()


# -- schema 4: this run's members on disk, member listings ---------------------------------------

# The schema-3 store exactly as the landed code (86debcb) created it, and rows as it wrote them.
SCHEMA_3 = """
CREATE TABLE contacts (brand TEXT NOT NULL, email_key TEXT NOT NULL, fingerprint TEXT NOT NULL,
    confirmed_at REAL NOT NULL, PRIMARY KEY (brand, email_key)) WITHOUT ROWID;
CREATE TABLE memberships (brand TEXT NOT NULL, segment_tag TEXT NOT NULL, email_key TEXT NOT NULL,
    since REAL NOT NULL, PRIMARY KEY (brand, segment_tag, email_key)) WITHOUT ROWID;
CREATE TABLE pending_contacts (brand TEXT NOT NULL, email_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL, confirmed_at REAL NOT NULL);
CREATE TABLE pending_memberships (brand TEXT NOT NULL, segment_tag TEXT NOT NULL,
    email_key TEXT NOT NULL, since REAL NOT NULL);
CREATE TABLE segments (brand TEXT NOT NULL, segment_tag TEXT NOT NULL, stream TEXT NOT NULL,
    segment TEXT NOT NULL, registered_at REAL NOT NULL, PRIMARY KEY (brand, segment_tag))
    WITHOUT ROWID;
INSERT INTO contacts VALUES ('brand-a', 'a@x.io', 'fa', 1799990000.0),
    ('brand-a', 'b@x.io', 'fb', 1799990000.0);
INSERT INTO memberships VALUES ('brand-a', 'segment: vip', 'a@x.io', 1.0),
    ('brand-a', 'segment: vip', 'b@x.io', 1.0);
INSERT INTO pending_contacts VALUES ('brand-a', 'c@x.io', 'fc', 1799990000.0);
INSERT INTO pending_memberships VALUES ('brand-a', 'segment: vip', 'c@x.io', 2.0);
INSERT INTO segments VALUES ('brand-a', 'segment: vip', 'crm', 'vip', 1.0);
PRAGMA user_version = 3;
"""


def test_a_schema_3_store_upgrades_without_resends_lost_members_or_listings(db_path: Path):
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.executescript(SCHEMA_3)
    dry = SyncStore.open_for_dry_run(db_path, "brand-a")  # a dry run reads it as it is
    assert dry is not None
    assert dry.members("segment: vip") == {"a@x.io", "b@x.io"}
    dry.close()
    with SyncStore(db_path, "brand-a") as upgraded:
        reasons = upgraded.classify([("a@x.io", "fa"), ("b@x.io", "fb"), ("c@x.io", "fc")], now=NOW)
        assert set(reasons.values()) == {SendReason.UNCHANGED}  # no mass re-send
        assert upgraded.members("segment: vip") == {"a@x.io", "b@x.io", "c@x.io"}
        assert upgraded.knows_segment("segment: vip")
        assert upgraded.listing("segment: vip") is None  # so no member listing is started
        assert upgraded.segments_of_stream("crm") == {"segment: vip": "vip"}
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


def _seen(store: SyncStore, segment: str, *keys: str, deleted: bool = False) -> None:
    for key in keys:
        store.saw(segment, key, deleted)


def test_run_members_on_disk_decide_absent_and_deleted_members(store: SyncStore):
    store.add_members("segment: vip", ["a@x.io", "b@x.io", "c@x.io", "d@x.io"], now=NOW)
    store.add_members("segment: new", ["d@x.io"], now=NOW)
    store.begin_run_members()
    _seen(store, "segment: vip", "a@x.io", "b@x.io", "e@x.io")
    _seen(store, "segment: vip", "b@x.io", deleted=True)  # the latest row of a contact wins
    _seen(store, "segment: vip", "c@x.io", deleted=True)
    _seen(store, "segment: vip", "c@x.io")  # deleted, then live again: stays
    _seen(store, "segment: new", "d@x.io", "b@x.io")
    with pytest.raises(SyncStoreError, match="clean end of input"):
        store.exit_counts("segment: vip")
    store.complete_run_members()
    assert store.exit_counts("segment: vip") == (4, 2, 1)  # before, absent (b, d), explicit (b)
    assert store.absent_members("segment: vip") == ["b@x.io", "d@x.io"]
    assert store.deleted_members("segment: vip") == ["b@x.io"]
    assert store.live_elsewhere("segment: vip", ["b@x.io", "d@x.io", "a@x.io"]) == {
        "b@x.io",
        "d@x.io",
    }
    store.begin_run_members()  # the next run starts from nothing
    assert not store.run_members_complete
    store.complete_run_members()
    assert store.exit_counts("segment: vip") == (4, 4, 0)


def test_run_members_flush_in_appends_and_a_dry_run_keeps_them_apart(db_path: Path):
    keys = [f"m{n}@x.io" for n in range(45_000)]  # more than two appends
    with SyncStore(db_path, "brand-a") as store:
        store.add_members("segment: vip", keys[:44_000], now=NOW)
    dry = SyncStore.open_for_dry_run(db_path, "brand-a")
    assert dry is not None
    dry.begin_run_members()
    for key in keys[1000:]:
        dry.saw("segment: vip", key, False)
    dry.complete_run_members()
    assert dry.exit_counts("segment: vip") == (44_000, 1000, 0)
    assert dry.absent_members("segment: vip") == sorted(keys[:1000])
    dry.close()
    with sqlite3.connect(db_path) as conn:  # nothing of the dry run reached the store's file
        assert conn.execute("SELECT count(*) FROM run_seen").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM run_latest").fetchone()[0] == 0


def test_a_listing_resumes_where_it_stopped_and_counts_the_untagged_absent(store: SyncStore):
    assert store.listing("segment: vip") is None
    store.start_listing("segment: vip", now=NOW)
    store.add_listed("segment: vip", ["a@x.io", "b@x.io"], "cursor-2", done=False)
    assert store.listing("segment: vip") == ("cursor-2", 2, False)
    store.add_listed("segment: vip", ["b@x.io", "c@x.io"], None, done=True)
    assert store.listing("segment: vip") == (None, 3, True)
    store.add_members("segment: vip", ["c@x.io"], now=NOW)  # tagged by this target
    store.begin_run_members()
    store.saw("segment: vip", "a@x.io", False)
    store.complete_run_members()
    assert store.listed_absent("segment: vip") == 1  # b: tagged elsewhere, absent; c is ours
    assert store.exit_counts("segment: vip") == (1, 1, 0)
    assert store.exit_counts("segment: vip", listed=True) == (3, 2, 0)
    store.drop_listing("segment: vip")
    assert store.listing("segment: vip") is None
