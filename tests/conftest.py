"""Shared fixtures: the path to ../shared (skipped where absent) and the sandbox server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from target_omnisend.sandbox.server import SandboxServer
from target_omnisend.sandbox.settings import SandboxSettings

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TARGET_OMNISEND_SHARED", ROOT.parent / "shared"))
OPENAPI_DIR = SHARED / "reference" / "omnisend-openapi"
_LITTER = ROOT / ".target-omnisend"
_LITTER_BEFORE = pytest.StashKey[bool]()


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


@pytest.fixture(autouse=True)
def _in_its_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its temporary folder: default paths (.target-omnisend/) land there."""
    monkeypatch.chdir(tmp_path)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note whether the checkout had a .target-omnisend/ before the suite ran."""
    session.config.stash[_LITTER_BEFORE] = _LITTER.exists()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite leaves nothing in the checkout: a .target-omnisend/ it created fails the run."""
    if hasattr(session.config, "workerinput"):  # the controller checks, once
        return
    if _LITTER.exists() and not session.config.stash.get(_LITTER_BEFORE, True):
        shutil.rmtree(_LITTER, ignore_errors=True)
        session.config.get_terminal_writer().line(
            f"FAILED: the suite left {_LITTER} in the checkout (removed); a test wrote a "
            "default path outside its tmp_path.",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
