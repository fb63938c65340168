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
    config: dict[str, Any], input_path: Path, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `target-omnisend --config` on the Singer file `input_path`; output captured as text."""
    config_path = write_config(config, cwd)
    with input_path.open(encoding="utf-8") as stdin:
        return subprocess.run(
            [EXECUTABLE, "--config", str(config_path)],
            stdin=stdin,
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
