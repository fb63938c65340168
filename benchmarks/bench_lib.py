"""Helpers shared by the benchmarks: timed child processes, the target's summary, machine info."""

from __future__ import annotations

import compileall
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
BIN_DIR = Path(sys.executable).parent
SUMMARY_MARKER = "target-omnisend summary: "
FAKE_API_KEY = "benchbrand-0123456789abcdef"


@dataclass
class ProcessRun:
    """What one child process did: exit code, wall and CPU seconds, peak RSS, output files."""

    returncode: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    stdout_path: Path
    stderr_path: Path

    def stderr_tail(self, lines: int = 30) -> str:
        """The last lines of the child's stderr (for error messages)."""
        text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def compile_bytecode() -> None:
    """Compile the project's modules (and the no-op target) to bytecode before timing.

    Installed packages come with bytecode; the project itself is installed editable, and a machine
    with PYTHONDONTWRITEBYTECODE would recompile it at every start of every measured process.
    """
    for folder in ("target_omnisend", "benchmarks"):
        compileall.compile_dir(str(ROOT / folder), quiet=1)


def target_command() -> list[str]:
    """The `target-omnisend` console script of this environment."""
    script = BIN_DIR / "target-omnisend"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from target_omnisend.target import TargetOmnisend as T; T.cli()"]


def noop_command() -> list[str]:
    """The no-op singer-sdk target."""
    return [sys.executable, str(BENCH_DIR / "noop_target.py")]


def run_timed(
    command: list[str],
    stdin_path: Path,
    workdir: Path,
    name: str,
    env: dict[str, str] | None = None,
) -> ProcessRun:
    """Run ``command`` with ``stdin_path`` as input; measure wall time, CPU time and peak RSS.

    The child is reaped with ``os.wait4`` so its own CPU time (not every child's) is read. Its
    ``ru_maxrss`` is its own peak only when it is above this process's: Linux carries the
    parent's high-water mark over the exec (a benchmark process that had loaded a sandbox dump
    made every later child look 1 GB big). Below that, for a child that ran at least a second,
    the peak is its own ``VmHWM``, read every 0.1 s while it ran.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    stdout_path = workdir / f"{name}.stdout"
    stderr_path = workdir / f"{name}.stderr"
    with (
        stdin_path.open("rb") as stdin,
        stdout_path.open("wb") as stdout,
        stderr_path.open("wb") as stderr,
    ):
        started = time.perf_counter()
        process = subprocess.Popen(  # returns once the child has exec'd the command
            command, stdin=stdin, stdout=stdout, stderr=stderr, cwd=workdir, env=env
        )
        watcher = _PeakWatcher(process.pid)
        inherited_kib = _own_peak_kib()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        watcher.stop()
    process.returncode = os.waitstatus_to_exitcode(status)
    own_peak_kib = usage.ru_maxrss  # Linux reports KiB
    if own_peak_kib <= inherited_kib and watcher.peak_kib and wall >= 1.0:
        own_peak_kib = watcher.peak_kib
    return ProcessRun(
        returncode=process.returncode,
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=own_peak_kib / 1024.0,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )


def _vm_hwm_kib(status_path: Path) -> int | None:
    """``VmHWM`` from a /proc status file (None when unreadable or the process has exited)."""
    try:
        text = status_path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    return int(match[1]) if match else None


def _own_peak_kib() -> int:
    """This process's peak RSS: what a child's ru_maxrss may carry over."""
    return _vm_hwm_kib(Path("/proc/self/status")) or 0


class _PeakWatcher:
    """Reads a running process's own peak RSS (``VmHWM``) from /proc every 0.1 s."""

    def __init__(self, pid: int) -> None:
        self.peak_kib = 0
        self._path = Path(f"/proc/{pid}/status")
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            peak = _vm_hwm_kib(self._path)
            if peak is None:  # exited (a zombie has no memory left)
                return
            self.peak_kib = max(self.peak_kib, peak)
            if self._stopped.wait(0.1):
                return

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def read_summary(stderr_path: Path) -> dict[str, Any] | None:
    """The target's one-line JSON run summary from its log, if it wrote one."""
    summary = None
    with stderr_path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            position = line.find(SUMMARY_MARKER)
            if position >= 0:
                try:
                    summary = json.loads(line[position + len(SUMMARY_MARKER) :])
                except json.JSONDecodeError:
                    continue
    return summary


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_total_mb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            match = re.search(r"MemTotal:\s+(\d+) kB", meminfo.read())
    except OSError:
        return None
    return round(int(match.group(1)) / 1024, 0) if match else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, OS, Python and package versions of this run."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_mb": _memory_total_mb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            package: _version(package)
            for package in ("target-omnisend", "singer-sdk", "fastjsonschema", "msgspec")
        },
        "git_commit": _git_commit(),
    }
