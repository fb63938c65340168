"""The sandbox's indexed listings agree with a plain scan of its contacts, at any depth."""

from __future__ import annotations

import random
from typing import Any

import pytest

from target_omnisend.sandbox import index
from target_omnisend.sandbox import segments as segment_rules
from target_omnisend.sandbox.api_2026 import list_contacts
from target_omnisend.sandbox.batches import BatchManager
from target_omnisend.sandbox.core import Request
from target_omnisend.sandbox.settings import SandboxSettings
from target_omnisend.sandbox.state import SandboxState
from target_omnisend.sandbox.store import ContactStore, channel_status

TAGS = ("a", "b", "c")
STATUSES = ("subscribed", "unsubscribed", "nonSubscribed")


def body(n: int, tags: list[str], status: str) -> dict[str, Any]:
    return {
        "identifiers": [
            {"type": "email", "id": f"p{n}@x.com", "channels": {"email": {"status": status}}},
            {"type": "phone", "id": f"+3706{n:07d}", "channels": {}},
        ],
        "tags": tags,
        "city": "Vilnius" if n % 3 else "Kaunas",
    }


@pytest.fixture(scope="module")
def state() -> SandboxState:
    """A sandbox world of 20,000 contacts (three windows), then changed at random."""
    world = SandboxState(SandboxSettings(older_status_date="override"))
    draw = random.Random(21)
    settings = world.settings
    for n in range(20_000):
        tags = [t for t in TAGS if draw.random() < 0.3]
        world.store.upsert(body(n, tags, draw.choice(STATUSES)), "2026", settings)
    for n in draw.sample(range(20_000), 3000):  # re-upserts move tags and statuses
        tags = [t for t in TAGS if draw.random() < 0.5]
        world.store.upsert(body(n, tags, draw.choice(STATUSES)), "2026", settings)
    for n in draw.sample(range(20_000), 500):
        contact_id = world.store.owner_id("email", f"p{n}@x.com")
        assert contact_id is not None
        world.store.change_tags(contact_id, ["a"], add=n % 2 == 0)
    return world


def listing(state: SandboxState, limit: int = 250, **query: str) -> list[str]:
    """Every email a paged GET /contacts lists, following the cursors."""
    emails: list[str] = []
    params = {"limit": str(limit), **query}
    while True:
        request = Request("GET", "/api/contacts", {}, params, None, "brand", "2026")
        reply = list_contacts(state, request)
        assert reply.status == 200, reply.body
        emails += [c["email"] for c in reply.body["contacts"]]
        paging = reply.body["paging"]
        if not paging["hasMore"]:
            return emails
        params = {**params, "after": paging["cursors"]["after"]}


def scan(state: SandboxState, keep: Any, descending: bool = True) -> list[str]:
    """The emails of every contact ``keep`` accepts, as a full scan orders them."""
    contacts = sorted(state.store.snapshot(), key=lambda c: c["id"], reverse=descending)
    return [c["identifiers"][0]["id"] for c in contacts if keep(c)]


@pytest.mark.parametrize("tag", TAGS)
def test_tag_listing_is_the_scan(state: SandboxState, tag: str) -> None:
    assert listing(state, tag=tag) == scan(state, lambda c: tag in c["tags"])


@pytest.mark.parametrize("status", STATUSES)
def test_status_listing_is_the_scan(state: SandboxState, status: str) -> None:
    expected = scan(state, lambda c: channel_status(c) == status, descending=False)
    assert listing(state, limit=97, status=status, direction="asc") == expected


def test_unfiltered_identifier_and_unknown_listings(state: SandboxState) -> None:
    assert listing(state) == scan(state, lambda c: True)
    assert listing(state, email="p123@x.com") == ["p123@x.com"]
    assert listing(state, phone="+37060000456") == ["p456@x.com"]
    assert listing(state, email="p123@x.com", tag="nobody") == []
    assert listing(state, tag="nobody") == []


def test_segment_masks_agree_with_the_rules(state: SandboxState) -> None:
    def segment(*groups: list[dict[str, Any]]) -> dict[str, Any]:
        return {"conditionGroups": [
            {"conditions": [{"entity": "contact", "junction": junction, "filters": filters}
                            for junction, filters in group]} for group in groups
        ]}  # fmt: skip

    def rule(prop: str, operator: str, value: Any) -> dict[str, Any]:
        return {"property": prop, "operator": operator, "value": value}

    cases = [
        segment([("and", [rule("tags", "anyOf", ["a", "b"])])]),
        segment([("and", [rule("tags", "allOf", ["a", "b"])])]),
        segment([("and", [rule("tags", "noneOf", ["a"])]),
                 ("and", [rule("subscriptionStatus", "anyOf", ["unsubscribed"])])]),
        segment([("or", [rule("tags", "anyOf", ["c"]), rule("city", "anyOf", ["Kaunas"])])]),
        segment([("and", [rule("city", "anyOf", ["Kaunas"]), rule("tags", "anyOf", ["b"])])]),
    ]  # fmt: skip
    store = state.store
    for case in cases:
        expected = [c["id"] for c in store.snapshot() if segment_rules.matches(case, c)]
        assert segment_rules.members(case, store) == expected
        keep = (
            None if segment_rules.indexed(case) else (lambda c, s=case: segment_rules.matches(s, c))
        )
        assert store.count(segment_rules.mask(case, store), keep) == len(expected)


def test_cursor_stays_put_while_contacts_arrive() -> None:
    """A listing overlapping an upload neither repeats nor skips the contacts it started with."""
    world = SandboxState(SandboxSettings())
    for n in range(600):
        world.store.upsert(body(n, ["a"], "subscribed"), "2026", world.settings)
    first = list_contacts(
        world, Request("GET", "", {}, {"tag": "a", "limit": "250"}, None, "b", "2026")
    )
    for n in range(600, 900):
        world.store.upsert(body(n, ["a"], "subscribed"), "2026", world.settings)
    rest = listing(world, tag="a", after=first.body["paging"]["cursors"]["after"])
    emails = [c["email"] for c in first.body["contacts"]] + rest
    assert emails == [f"p{n}@x.com" for n in range(599, -1, -1)]


def test_bitmap_positions_across_windows() -> None:
    bitmap = index.Bitmap()
    chosen = sorted(random.Random(5).sample(range(1, 3 * index.WINDOW_BITS), 700))
    for position in chosen:
        bitmap.add(position)
    bitmap.discard(chosen[10])
    kept = [p for p in chosen if p != chosen[10]]
    last = 3 * index.WINDOW_BITS
    assert list(index.positions(bitmap.window, last, after=None, descending=False)) == kept
    assert list(index.positions(bitmap.window, last, after=None, descending=True)) == kept[::-1]
    middle = kept[300]
    assert (
        list(index.positions(bitmap.window, last, after=middle, descending=True))
        == kept[:300][::-1]
    )
    assert list(index.positions(bitmap.window, last, after=middle, descending=False)) == kept[301:]
    assert index.count(bitmap.window, last) == bitmap.count() == len(kept)


def test_processed_batches_keep_their_records_and_odd_values() -> None:
    """Compacted batch records read back the same, integers beyond 64 bits included."""
    store = ContactStore()
    settings = SandboxSettings(batch_processing_delay=0)

    def handle(item: Any, generation: str) -> tuple[int, Any]:
        code, contact = store.upsert(item, generation, settings)
        return code, {"id": contact["id"]} if contact else {}

    manager = BatchManager.__new__(BatchManager)
    BatchManager.__init__(manager, _NoScheduler(), lambda: settings, handle)
    items = [{**body(n, ["a"], "subscribed"), "customProperties": {"big": 2**70}} for n in range(3)]
    batch = manager.create({"method": "POST", "endpoint": "contacts", "items": items}, "2026", "b")
    manager._process(batch)
    read = manager.items(batch["batchID"])
    assert read is not None
    assert [r["request"] for r in read["responses"]] == items
    assert store.find("email", "p1@x.com")["customProperties"] == {"big": 2**70}


class _NoScheduler:
    def after(self, delay: float, action: Any) -> None:
        """Nothing runs later in this test."""
