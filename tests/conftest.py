"""Shared fixtures: the path to ../shared (skipped where absent) and the sandbox server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from target_omnisend.sandbox.server import SandboxServer
from target_omnisend.sandbox.settings import SandboxSettings

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TARGET_OMNISEND_SHARED", ROOT.parent / "shared"))
OPENAPI_DIR = SHARED / "reference" / "omnisend-openapi"


@pytest.fixture(scope="session")
def openapi_dir() -> Path:
    """The directory of Omnisend's OpenAPI files; skips where ../shared is absent."""
    if not OPENAPI_DIR.is_dir():
        if os.environ.get("CI_REQUIRE_SHARED"):
            pytest.fail(f"{OPENAPI_DIR} is missing but CI_REQUIRE_SHARED is set")
        pytest.skip(f"../shared is absent ({OPENAPI_DIR}): Omnisend's OpenAPI files not available")
    return OPENAPI_DIR


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A started sandbox with default settings, stopped after the test."""
    server = SandboxServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., SandboxServer]]:
    """``factory(**settings) -> started SandboxServer``; all are stopped at teardown."""
    servers: list[SandboxServer] = []

    def start(**settings: Any) -> SandboxServer:
        server = SandboxServer(SandboxSettings(**settings)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
