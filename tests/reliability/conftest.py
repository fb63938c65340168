"""Reliability suite: prints the accounting table at the end of the session when it can.

Under xdist the controller may never load this file (it does not collect); then run
`.venv/bin/python -m tests.reliability.report` for the same table.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from tests.reliability.harness import SESSION_ENV, results_path
from tests.reliability.report import render_table


def pytest_configure(config: pytest.Config) -> None:
    """Name this session, so the table shows its rows only (xdist names its own sessions)."""
    os.environ.setdefault(SESSION_ENV, uuid.uuid4().hex)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print records in / accepted / rejected / lost per scenario (from the sandbox and rejects)."""
    if hasattr(config, "workerinput"):
        return
    table = render_table(results_path())
    if table:
        terminalreporter.write_sep("=", "reliability: records in / accepted / rejected / lost")
        terminalreporter.write_line(table)
