"""Settings of the Omnisend-compatible sandbox (every field has a default)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SandboxSettings:
    """Everything the sandbox enforces or simulates; change at run time with ``configure``.

    Durations are sandbox seconds: each is divided by ``time_scale`` before it is waited
    for, while every time the sandbox reports (``retryAfter``, rate-limit reset) is in wall
    seconds.
    """

    rate_limit_per_minute: int = 400
    tags_rate_limit_per_minute: int = 60
    segments_write_per_minute: int = 15
    segments_read_per_minute: int = 100
    batch_processing_delay: float = 0.5
    batch_in_progress_seconds: float = 0.0
    batch_stop_error_ratio: float = 0.5
    batch_stop_min_errors: int = 10
    max_body_bytes: int = 1_000_000
    time_scale: float = 1.0
    tags_on_upsert: str = "replace"
    older_status_date: str = "ignore"
    v5_missing_status: str = "subscribed"
    tags_apply_delay: float = 0.5
    segment_build_seconds: float = 0.5
    retired_versions: list[str] = field(default_factory=list)
    supported_versions: list[str] = field(default_factory=lambda: ["2026-03-15"])
    forbidden_keys: list[str] = field(default_factory=list)
    api_keys: list[str] | None = None
    error_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 0.0
    drop_rate: float = 0.0
    stop_batches: bool = False
    item_errors: dict[str, list[Any]] = field(default_factory=dict)
    second_app_rpm: int = 0
    seed: int | None = None
    persist_path: str | None = None

    def scaled(self, sandbox_seconds: float) -> float:
        """Wall seconds for a duration given in sandbox seconds."""
        return sandbox_seconds / self.time_scale if self.time_scale > 0 else sandbox_seconds

    def changed(self, **changes: Any) -> SandboxSettings:
        """A copy with ``changes`` applied; unknown names raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown sandbox settings: {', '.join(unknown)}")
        new = dataclasses.replace(self, **changes)
        new.check()
        return new

    def check(self) -> None:
        """Raise ``ValueError`` for values the sandbox cannot honour."""
        if self.tags_on_upsert not in ("replace", "merge"):
            raise ValueError("tags_on_upsert must be 'replace' or 'merge'")
        if self.older_status_date not in ("ignore", "override"):
            raise ValueError("older_status_date must be 'ignore' or 'override'")
        if self.v5_missing_status not in ("subscribed", "nonSubscribed"):
            raise ValueError("v5_missing_status must be 'subscribed' or 'nonSubscribed'")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data."""
        return dataclasses.asdict(self)
