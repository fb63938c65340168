"""Asynchronous batches: pending -> inProgress -> finished (or stopped)."""

from __future__ import annotations

import copy
import itertools
import threading
import zlib
from collections.abc import Callable
from typing import Any

from target_omnisend.sandbox import heap
from target_omnisend.sandbox.compact import decode as _decode
from target_omnisend.sandbox.compact import encode as _encode
from target_omnisend.sandbox.scheduler import Scheduler
from target_omnisend.sandbox.settings import SandboxSettings
from target_omnisend.sandbox.store import now_iso

ItemHandler = Callable[[Any, str], tuple[int, Any]]
SUMMARY_FIELDS = (
    "batchID", "method", "endpoint", "origin", "status", "totalCount", "finishedCount",
    "errorsCount", "createdAt", "startedAt", "endedAt",
)  # fmt: skip


class BatchManager:
    """Keeps batches and processes them on the scheduler after the configured delays."""

    def __init__(
        self, scheduler: Scheduler, settings: Callable[[], SandboxSettings], handle: ItemHandler
    ) -> None:
        self._scheduler = scheduler
        self._settings = settings
        self._handle = handle
        self._lock = threading.Lock()
        self.batches: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def create(self, body: dict[str, Any], generation: str, brand: str) -> dict[str, Any]:
        """Store a new pending batch and schedule its processing."""
        batch_id = f"b{next(self._ids):023x}"
        batch = {
            "batchID": batch_id, "method": body["method"], "endpoint": body["endpoint"],
            "origin": body.get("origin", "api"), "status": "pending",
            "totalCount": len(body["items"]), "finishedCount": 0, "errorsCount": 0,
            "createdAt": now_iso(), "items": _encode(body["items"]), "errors": [], "responses": [],
            "generation": generation, "brand": brand,
        }  # fmt: skip
        with self._lock:
            self.batches[batch_id] = batch
        settings = self._settings()
        self._scheduler.after(
            settings.scaled(settings.batch_processing_delay), lambda: self._process(batch)
        )
        return batch

    def _process(self, batch: dict[str, Any]) -> None:
        try:
            self._apply_items(batch)
        finally:
            self._compact(batch)
            heap.after_batch()

    def _compact(self, batch: dict[str, Any]) -> None:
        """Keep a processed batch's item records as one compressed MessagePack value.

        The records (each item's request and the contact it made) are read back only by
        ``GET .../items``; as dicts they took several times the memory of the contacts
        themselves (about 2 GB for 300k contacts), compressed they take some 150 bytes an item.
        """
        with self._lock:
            records = {"errors": batch["errors"], "responses": batch["responses"]}
            batch["records"] = zlib.compress(_encode(records), 1)
            batch["errors"], batch["responses"], batch["items"] = [], [], b""

    def _apply_items(self, batch: dict[str, Any]) -> None:
        settings = self._settings()
        batch["startedAt"] = now_iso()
        batch["status"] = "inProgress"
        stop_after = settings.stop_batches
        # A waiting batch keeps its items encoded: posted faster than processed, decoded ones
        # took five times the memory of the contacts they make.
        for index, item in enumerate(_decode(batch["items"])):
            code, response = self._handle(item, batch["generation"])
            record = {
                "itemID": f"{batch['batchID']}-{index}", "request": item,
                "responseCode": code, "response": response,
                "status": "finished" if code < 300 else "failed",
            }  # fmt: skip
            with self._lock:
                (batch["responses"] if code < 300 else batch["errors"]).append(record)
                batch["finishedCount"] += 1
                batch["errorsCount"] += code >= 300
            if self._should_stop(batch, settings) or (stop_after and index == 0):
                self._scheduler.after(
                    settings.scaled(settings.batch_in_progress_seconds),
                    lambda: self._end(batch, "stopped"),
                )
                return
        self._scheduler.after(
            settings.scaled(settings.batch_in_progress_seconds),
            lambda: self._end(batch, "finished"),
        )

    @staticmethod
    def _should_stop(batch: dict[str, Any], settings: SandboxSettings) -> bool:
        errors = batch["errorsCount"]
        return (
            errors >= settings.batch_stop_min_errors
            and errors / batch["finishedCount"] > settings.batch_stop_error_ratio
        )

    def _end(self, batch: dict[str, Any], status: str) -> None:
        with self._lock:
            batch["status"] = status
            batch["endedAt"] = now_iso()

    def get(self, batch_id: str) -> dict[str, Any] | None:
        """The batch's summary fields, or None."""
        with self._lock:
            batch = self.batches.get(batch_id)
            return self._summary(batch) if batch else None

    def items(self, batch_id: str) -> dict[str, Any] | None:
        """The batch with its ``errors`` and ``responses``, or None."""
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return None
            result = self._summary(batch)
            if "records" in batch:
                result.update(_decode(zlib.decompress(batch["records"])))
            else:
                result["errors"] = copy.deepcopy(batch["errors"])
                result["responses"] = copy.deepcopy(batch["responses"])
            return result

    def list(
        self, generation: str, endpoint: str | None, status: str | None
    ) -> list[dict[str, Any]]:
        """Summaries newest first, filtered."""
        with self._lock:
            found = [
                self._summary(b)
                for b in reversed(list(self.batches.values()))
                if b["generation"] == generation
                and (endpoint is None or b["endpoint"] == endpoint)
                and (status is None or b["status"] == status)
            ]
        return found

    @staticmethod
    def _summary(batch: dict[str, Any]) -> dict[str, Any]:
        return {name: batch[name] for name in SUMMARY_FIELDS if name in batch}

    def dump(self) -> list[dict[str, Any]]:
        """Short records of every batch, oldest first."""
        with self._lock:
            return [
                {name: b[name] for name in ("batchID", "status", "totalCount", "errorsCount",
                                            "finishedCount", "endpoint", "generation")}
                for b in self.batches.values()
            ]  # fmt: skip
