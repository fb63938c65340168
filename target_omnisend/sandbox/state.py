"""Everything the sandbox knows: settings, contacts, batches, segments, limits, counters."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import defaultdict
from typing import Any

from target_omnisend.sandbox import api_2026, api_v5
from target_omnisend.sandbox.batches import BatchManager
from target_omnisend.sandbox.limiter import SlidingWindowLimiter
from target_omnisend.sandbox.scheduler import Scheduler
from target_omnisend.sandbox.settings import SandboxSettings
from target_omnisend.sandbox.store import ContactStore, now_iso
from target_omnisend.sandbox.validation import validate_contact


class SandboxState:
    """The mutable world behind the HTTP layer."""

    def __init__(self, settings: SandboxSettings) -> None:
        settings.check()
        self.settings = settings
        self.base_url = ""
        self.scheduler = Scheduler()
        self.limiter = SlidingWindowLimiter()
        self._lock = threading.Lock()
        self.fault_lock = threading.Lock()
        self._second_app_stop = threading.Event()
        self._second_app: threading.Thread | None = None
        self._clear()

    def _clear(self) -> None:
        self.store = ContactStore()
        self.batches = BatchManager(self.scheduler, lambda: self.settings, self.handle_item)
        self.segments: dict[str, dict[str, Any]] = {}
        self.tag_operations: list[dict[str, Any]] = []
        self.skipped_tag_emails: list[str] = []
        self.requests: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.requests_total = 0
        self.rate_limited = 0
        self.faults_injected: dict[str, int] = defaultdict(int)
        self.rng = random.Random(self.settings.seed)
        self._segment_ids = itertools.count(1)

    def start(self) -> None:
        """Start the background workers."""
        self.scheduler.start()
        self._second_app = threading.Thread(
            target=self._run_second_app, name="sandbox-second-app", daemon=True
        )
        self._second_app.start()

    def stop(self) -> None:
        """Stop the background workers."""
        self._second_app_stop.set()
        self.scheduler.stop()
        if self._second_app is not None:
            self._second_app.join(timeout=5)

    def reset(self) -> None:
        """Forget all data, counters and rate windows (settings stay)."""
        self.scheduler.clear()
        self.limiter.reset()
        with self._lock:
            self._clear()

    def configure(self, **changes: Any) -> None:
        """Change settings at run time."""
        self.settings = self.settings.changed(**changes)
        if "seed" in changes:
            self.rng = random.Random(self.settings.seed)

    @property
    def window(self) -> float:
        """The rate window in wall seconds."""
        return self.settings.scaled(60.0)

    def count(self, route: str, status: int | str) -> None:
        """Count one API request by route and status code (or ``"dropped"``)."""
        with self._lock:
            self.requests[route][str(status)] += 1
            self.requests_total += 1
            self.rate_limited += status == 429

    def handle_item(self, item: Any, generation: str) -> tuple[int, Any]:
        """Apply one batch item as POST /contacts would; (code, response)."""
        api = api_2026.API if generation == "2026" else api_v5.API
        errors = validate_contact(item, generation)
        if errors:
            return 400, api.invalid(errors).body
        forced = self._forced_item_error(item)
        if forced is not None:
            return forced
        reply = api.store_contact(self, item)
        return reply.status, reply.body

    def _forced_item_error(self, item: dict[str, Any]) -> tuple[int, Any] | None:
        for identifier in item.get("identifiers", []):
            forced = self.settings.item_errors.get(identifier.get("id"))
            if forced:
                code, message = int(forced[0]), str(forced[1] if len(forced) > 1 else "error")
                return code, {"error": message, "status": code}
        return None

    def schedule_tags(self, body: dict[str, Any], add: bool) -> None:
        """Apply a tags request after ``tags_apply_delay``."""
        delay = self.settings.scaled(self.settings.tags_apply_delay)
        self.scheduler.after(delay, lambda: self._apply_tags(body, add))

    def _apply_tags(self, body: dict[str, Any], add: bool) -> None:
        store = self.store
        targets: list[str] = []
        skipped: list[str] = []
        for email in body.get("emails", []):
            contact_id = store.owner_id("email", email)
            (targets.append(contact_id) if contact_id else skipped.append(email))
        for phone in body.get("phones", []):
            contact_id = store.owner_id("phone", phone)
            if contact_id:
                targets.append(contact_id)
        targets.extend(c for c in body.get("contactIDs", []) if store.get(c) is not None)
        segment = self.segments.get(body.get("segmentID", ""))
        if segment is not None:
            from target_omnisend.sandbox.segments import members

            targets.extend(members(segment, store))
        for contact_id in targets:
            store.change_tags(contact_id, body["tags"], add)
        with self._lock:
            self.skipped_tag_emails.extend(skipped)
            self.tag_operations.append(
                {"action": "add" if add else "remove", "tags": body["tags"],
                 "applied": len(targets), "skipped": len(skipped), "at": now_iso()}
            )  # fmt: skip

    def create_segment(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store a segment that builds for ``segment_build_seconds``."""
        stamp = now_iso()
        segment = {
            "segmentID": f"{next(self._segment_ids):024x}", "name": body["name"],
            "conditionGroups": body["conditionGroups"], "status": "building",
            "isStarred": False, "createdAt": stamp, "updatedAt": stamp, "archivedAt": None,
        }  # fmt: skip
        self.segments[segment["segmentID"]] = segment
        self._build(segment)
        return dict(segment)

    def update_segment(self, segment: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """Replace a segment's rules; it builds again."""
        segment.update(name=body["name"], conditionGroups=body["conditionGroups"])
        segment.update(status="building", updatedAt=now_iso())
        self._build(segment)
        return dict(segment)

    def delete_segment(self, segment: dict[str, Any]) -> None:
        """Forget a segment."""
        self.segments.pop(segment["segmentID"], None)

    def _build(self, segment: dict[str, Any]) -> None:
        def ready() -> None:
            segment["status"] = "ready"

        self.scheduler.after(self.settings.scaled(self.settings.segment_build_seconds), ready)

    def _run_second_app(self) -> None:
        while not self._second_app_stop.is_set():
            rpm = self.settings.second_app_rpm
            if rpm <= 0:
                self._second_app_stop.wait(0.05)
                continue
            for key in self.limiter.brands_seen():
                if key[1] == "all":
                    self.limiter.spend(key, self.settings.rate_limit_per_minute, self.window)
            self._second_app_stop.wait(self.window / rpm)

    def dump(self) -> dict[str, Any]:
        """Everything a test or demo may inspect (format: see the package docstring)."""
        with self._lock:
            requests = {route: dict(codes) for route, codes in self.requests.items()}
            totals = (self.requests_total, self.rate_limited)
            tag_ops, skipped = list(self.tag_operations), list(self.skipped_tag_emails)
            faults = dict(self.faults_injected)
        with self.store.lock:
            welcome = list(self.store.welcome_messages)
            ignored = list(self.store.ignored_identifiers)
        return {
            "contacts": self.store.snapshot(),
            "welcome_messages": welcome,
            "ignored_identifiers": ignored,
            "requests": requests,
            "requests_total": totals[0],
            "rate_limited": totals[1],
            "faults_injected": faults,
            "batches": self.batches.dump(),
            "segments": [dict(s) for s in self.segments.values()],
            "tag_operations": tag_ops,
            "skipped_tag_emails": skipped,
            "settings": self.settings.as_dict(),
            "dumped_at": time.time(),
        }
