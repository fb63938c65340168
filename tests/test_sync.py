"""SegmentSync in process: settings checks, change-only selection, entrant tags, snapshots."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from target_omnisend.mapping import MappedContact
from target_omnisend.sync import SegmentSync, SyncSettings
from target_omnisend.sync_store import SendReason

LOG = logging.getLogger("test-sync")


def contact(email: str, name: str = "Ann", tags: tuple[str, ...] = ()) -> MappedContact:
    payload = {"identifiers": [{"type": "email", "id": email}], "firstName": name}
    return MappedContact(email, email, None, payload, tags)


def make_sync(tmp_path: Path, **config: object) -> SegmentSync:
    api_version = str(config.pop("api_version", "2026-03-15"))
    settings = SyncSettings.from_config(
        {"sync_state_path": str(tmp_path / "sync.sqlite"), **config}, api_version
    )
    return SegmentSync(settings, "http://127.0.0.1:1/api", "key-1", dry_run=False, logger=LOG)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"api_version": "v5", "create_segments": True}, "create_segments needs the 2026-03-15"),
        ({"api_version": "v5", "on_segment_exit": "remove_tag"}, "remove_tag needs the 2026"),
        ({"create_segments": True, "segment_tag": ""}, "needs segment_tag"),
        ({"segment_tag": "seg {name}"}, "may use only {stream} and {segment}"),
        ({"max_exit_ratio": 1.5}, "between 0 and 1"),
    ],
)
def test_settings_that_cannot_work_are_refused(config: dict, message: str) -> None:
    api_version = str(config.pop("api_version", "2026-03-15"))
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        SyncSettings.from_config(config, api_version)


def test_unchanged_members_are_skipped_and_changes_sent(tmp_path: Path) -> None:
    sync = make_sync(tmp_path)
    refs = sync.segments({"email": "a@x.com"}, "vip")
    assert [(r.name, r.tag) for r in refs] == [("vip", "segment: vip")]
    first = [(contact("a@x.com", tags=("static", "segment: vip")), refs)]
    send, unchanged = sync.select("vip", first)
    assert [i.reason for i in send] == [SendReason.NEW]
    assert not unchanged
    assert send[0].entrant_tags == ("segment: vip",)
    assert sync.tags_to_add(send[0], True, refs) == ("static", "segment: vip")
    sync.confirmed(send)
    sync.memberships_confirmed(["segment: vip"], ["a@x.com"])
    assert sync.store is not None
    sync.store.merge_pending()  # the store as the next run reads it

    send, unchanged = sync.select("vip", first)
    assert not send
    assert unchanged[0].entrant_tags == ()
    assert sync.tags_to_add(unchanged[0], False, refs) == ()

    changed = [(contact("a@x.com", name="Anna", tags=("static", "segment: vip")), refs)]
    send, _ = sync.select("vip", changed)
    assert [i.reason for i in send] == [SendReason.CHANGED]
    assert sync.tags_to_add(send[0], True, refs) == ("static",)  # already a member
    sync.close()


def test_an_unchanged_entrant_is_tagged_on_2026_and_resent_on_v5(tmp_path: Path) -> None:
    for api_version, resent in (("2026-03-15", False), ("v5", True)):
        sync = make_sync(tmp_path / api_version, api_version=api_version)
        vip = sync.segments({}, "vip")
        sync.confirmed(sync.select("vip", [(contact("a@x.com"), vip)])[0])
        assert sync.store is not None
        sync.store.merge_pending()  # as a later run reads the store
        gold = sync.segments({}, "gold")  # the same, unchanged contact enters another segment
        send, unchanged = sync.select("gold", [(contact("a@x.com"), gold)])
        assert bool(send) is resent
        item = (send or unchanged)[0]
        assert item.entrant_tags == ("segment: gold",)
        sync.close()


def test_a_snapshot_is_complete_only_if_activate_version_follows_the_last_record(
    tmp_path: Path,
) -> None:
    sync = make_sync(tmp_path)
    sync.mark_snapshot("vip")
    sync.count_record("vip")
    assert not sync._is_snapshot("vip")
    sync.mark_snapshot("vip")
    assert sync._is_snapshot("vip")
    sync.close()


def test_one_run_per_brand(tmp_path: Path) -> None:
    first = make_sync(tmp_path)
    with pytest.raises(Exception, match="Another target-omnisend run for this brand"):
        make_sync(tmp_path)
    first.close()
    make_sync(tmp_path).close()


def test_fingerprints_taken_at_mapping_time_are_the_ones_select_takes(tmp_path: Path) -> None:
    sync = make_sync(tmp_path)
    refs = sync.segments({"email": "a@x.com"}, "vip")
    ann, bob = contact("a@x.com", tags=("segment: vip",)), contact("b@x.com", tags=("x",))
    early = sync.fingerprint_of(ann, ("segment: vip",))
    computed, _ = sync.select("vip", [(ann, refs), (bob, refs)])
    given, _ = sync.select("vip", [(ann, refs), (bob, refs)], {ann.key: early, bob.key: None})
    assert [item.print_ for item in given] == [item.print_ for item in computed]
    assert early == computed[0].print_
    tampered, _ = sync.select("vip", [(ann, refs)], {ann.key: "f" * 32})
    assert tampered[0].print_ == "f" * 32  # a given fingerprint is used, not recomputed
    sync.close()


# -- member listings ------------------------------------------------------------------------------


class _Pages:
    """A tag's members served in pages of ``limit``, cursors being offsets; may fail once."""

    def __init__(self, members: list[str], fail_at: str | None = None) -> None:
        self.members = members
        self.fail_at = fail_at
        self.calls: list[tuple[str | None, int]] = []

    def __call__(
        self, tag: str, cursor: str | None, limit: int
    ) -> tuple[list[str], int, str | None]:
        self.calls.append((cursor, limit))
        if cursor is not None and cursor == self.fail_at:
            self.fail_at = None
            raise RuntimeError("the run died here")
        start = int(cursor or 0)
        page = self.members[start : start + limit]
        after = start + limit
        return page, len(page), (str(after) if after < len(self.members) else None)


def test_a_listing_probes_then_lists_and_resumes_after_a_crash(tmp_path: Path) -> None:
    from target_omnisend.sync import LISTING_PAGE, MemberListing
    from target_omnisend.sync_store import SyncStore

    members = [f"Member{n}@X.io" for n in range(3 * LISTING_PAGE + 10)]
    with SyncStore(tmp_path / "s.sqlite", "brand-a") as store:
        nobody = MemberListing(store, "t", _Pages([]), lowercase=True, stop=threading.Event())
        nobody.wait()
        assert (nobody.members, nobody.requests, store.listing("t")) == (0, 1, None)
        pages = _Pages(members, fail_at=str(2 * LISTING_PAGE))
        crashed = MemberListing(store, "t", pages, lowercase=True, stop=threading.Event())
        with pytest.raises(RuntimeError, match="died"):
            crashed.wait()
        assert store.listing("t") == (str(2 * LISTING_PAGE), 2 * LISTING_PAGE, False)
        resumed = MemberListing(store, "t", pages, lowercase=True, stop=threading.Event())
        resumed.wait()
        assert pages.calls[-3:-1] == [(str(2 * LISTING_PAGE), LISTING_PAGE)] * 2  # failed, resumed
        assert resumed.members == len(members)
        assert store.listing("t") == (None, len(members), True)
        store.begin_run_members()
        store.complete_run_members()
        assert store.listed_absent("t") == len(members)
        assert store.exit_counts("t", listed=True).members_before == len(members)
        assert store.absent_members("t", listed=True)[0] == "member0@x.io"  # lower-cased
