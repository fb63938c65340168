"""Shared fixtures: the path to ../shared and a skip for where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
