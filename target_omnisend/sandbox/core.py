"""Request and reply types shared by the API modules, and problem bodies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

PROBLEM_BASE = "https://problems.omnisend.com/"
TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 413: "Payload Too Large",
    429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
}  # fmt: skip
TYPES = {
    400: "validation", 401: "unauthorized", 403: "forbidden", 404: "not-found",
    405: "method-not-allowed", 409: "conflict", 410: "version-retired", 413: "payload-too-large",
    429: "rate-limit", 500: "internal", 503: "unavailable",
}  # fmt: skip


@dataclass
class Request:
    """One parsed API request."""

    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    brand: str
    generation: str  # "2026" or "v5"


@dataclass
class Reply:
    """What the handler sends back; ``body`` None means no body."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def trace_id() -> str:
    """A fresh request trace id."""
    return f"urn:omnisend:request:{uuid.uuid4()}"


def problem(
    status: int, detail: str, errors: list[dict[str, str]] | None = None, **extra: Any
) -> Reply:
    """An RFC 9457 problem reply (2026 generation)."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + TYPES.get(status, "problem"),
        "title": TITLES.get(status, "Problem"),
        "status": status,
        "detail": detail,
        "instance": trace_id(),
    }
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    return Reply(status, body, {"Content-Type": "application/problem+json"})


def v5_error(status: int, message: str, errors: list[dict[str, str]] | None = None) -> Reply:
    """A v5 error body ``{error, fields}``."""
    body: dict[str, Any] = {"error": message}
    if errors is not None:
        body["fields"] = {e["field"]: e["message"] for e in errors}
    return Reply(status, body)


def error_reply(generation: str, status: int, detail: str, **extra: Any) -> Reply:
    """A problem (2026) or ``{error}`` (v5) reply."""
    if generation == "2026":
        return problem(status, detail, **extra)
    return v5_error(status, detail, extra.get("errors"))
