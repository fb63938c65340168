"""The sandbox as a child process (``omnisend-sandbox --port 0``), driven over its admin endpoints.

For scripts that want the sandbox in its own process: the benchmarks and ``make demo``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import requests

from target_omnisend.sandbox.handle import SandboxHandle

START_TIMEOUT_SECONDS = 30.0


class SandboxStartError(RuntimeError):
    """The sandbox process did not print its URL in time."""


def sandbox_command() -> list[str]:
    """The ``omnisend-sandbox`` console script of this environment (or ``python -m`` its CLI)."""
    script = Path(sys.executable).parent / "omnisend-sandbox"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "target_omnisend.sandbox.cli"]


class SandboxProcess(SandboxHandle):
    """``omnisend-sandbox --port 0 [args]`` in a child process; a context manager.

    Attributes:
        url: Base URL without a version path (``http://127.0.0.1:PORT``), once started.
    """

    def __init__(
        self,
        args: list[str] | None = None,
        log_path: Path | None = None,
        start_timeout: float = START_TIMEOUT_SECONDS,
    ) -> None:
        """Prepare (not start) the sandbox with extra CLI ``args``.

        Its stderr goes to ``log_path``, or to this process's stderr when None.
        """
        self.args = list(args or [])
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self._session = requests.Session()

    def start(self) -> SandboxProcess:
        """Start the server and wait for the URL it prints first on stdout.

        Raises:
            SandboxStartError: no URL within ``start_timeout`` seconds (the process is stopped).
        """
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("w", encoding="utf-8")
        self._process = subprocess.Popen(
            [*sandbox_command(), "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        first_line: list[str] = []
        reader = threading.Thread(
            target=lambda: first_line.append(self._process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(self.start_timeout)
        url = first_line[0].strip() if first_line else ""
        if not url.startswith("http"):
            self.stop()
            message = f"omnisend-sandbox did not print its URL (got {url!r})"
            if self.log_path is not None:
                log = self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
                message += f":\n{log}"
            raise SandboxStartError(message)
        self.url = url.rstrip("/")
        # Keep draining stdout so the server never blocks on a full pipe.
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        return self

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs."""
        return None if self._process is None else self._process.pid

    def _drain_stdout(self) -> None:
        if self._process and self._process.stdout:
            for _ in self._process.stdout:
                pass

    def configure(self, **changes: Any) -> dict[str, Any]:
        """``POST /_sandbox/config`` with ``changes``; returns the answer."""
        response = self._session.post(f"{self.url}/_sandbox/config", json=changes, timeout=30)
        response.raise_for_status()
        return response.json() if response.content else {}

    def dump(self) -> dict[str, Any]:
        """``GET /_sandbox/dump``."""
        response = self._session.get(f"{self.url}/_sandbox/dump", timeout=120)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        """Terminate the server (the process this object started, by its own handle)."""
        self._session.close()
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(10)
            if self._process.stdout:
                self._process.stdout.close()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> SandboxProcess:
        return self if self._process is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
