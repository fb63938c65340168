"""Helpers shared by the test modules that run the real `target-omnisend` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

EXECUTABLE = str(Path(sys.executable).with_name("target-omnisend"))


def write_config(config: dict[str, Any], cwd: Path) -> Path:
    """`config` as a JSON file of its own in `cwd` (a fresh name each call)."""
    config_path = cwd / f"config-{time.monotonic_ns()}.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return config_path


def run_cli(
    config: dict[str, Any],
    source: Path | str,
    cwd: Path,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `target-omnisend --config` on a Singer file (a Path) or Singer text (a str).

    `env`: the environment instead of this process's.
    """
    command = [EXECUTABLE, "--config", str(write_config(config, cwd))]
    options: dict[str, Any] = {
        "capture_output": True,
        "text": True,
        "cwd": cwd,
        "timeout": timeout,
        "check": False,
        "env": env,
    }
    if isinstance(source, str):
        return subprocess.run(command, input=source, **options)
    with source.open(encoding="utf-8") as stdin:
        return subprocess.run(command, stdin=stdin, **options)
