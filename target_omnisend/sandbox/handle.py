"""What every way of holding a running sandbox offers: its URLs and a settled dump.

``SandboxServer`` (in this process) and ``SandboxProcess`` (a child process) both derive from
``SandboxHandle``; each provides ``url`` and ``dump()``.
"""

from __future__ import annotations

import time
from typing import Any


def accepted_tag_calls(dump: dict[str, Any]) -> int:
    """Tag calls (add or remove) the sandbox answered with a 2xx, from a dump's ``requests``."""
    return sum(
        int(count)
        for route, codes in (dump.get("requests") or {}).items()
        if "/contacts/tags" in route
        for status, count in codes.items()
        if str(status).startswith("2")
    )


class SandboxHandle:
    """A running sandbox: subclasses provide ``url`` and ``dump()``."""

    url: str  # ``http://host:port`` (no path)

    @property
    def api_url(self) -> str:
        """Base URL of the 2026-03-15 API."""
        return self.url + "/api"

    @property
    def v5_url(self) -> str:
        """Base URL of the v5 API."""
        return self.url + "/v5"

    def dump(self) -> dict[str, Any]:
        """Everything the sandbox holds (format in the package docstring)."""
        raise NotImplementedError

    def settled_dump(self, timeout: float = 15.0) -> dict[str, Any]:
        """The dump once every accepted tag call has been applied (tags apply asynchronously).

        After ``timeout`` seconds, the latest dump as it is.
        """
        deadline = time.monotonic() + timeout
        dump = self.dump()
        while len(dump.get("tag_operations") or ()) < accepted_tag_calls(dump):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
            dump = self.dump()
        return dump
