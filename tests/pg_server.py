"""A throwaway PostgreSQL server for the warehouse tests: Debian's `postgresql` binaries.

`PostgresServer.start()` makes a cluster with `initdb` in a temporary folder, starts it on a
free loopback port (no Unix socket outside that folder, trust authentication for its one user)
and `stop()` shuts it down and removes the folder. PostgreSQL refuses to run as root, so where
the tests run as root the server runs as the `postgres` system user the Debian package creates.
Where no server can be had, `find_binaries` says why (the tests skip with that reason).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

USER = "omnisend"
DATABASE = "warehouse"


def find_binaries() -> tuple[Path | None, str]:
    """The folder holding initdb, pg_ctl and psql, or None and the reason there is none."""
    candidates = []
    if found := shutil.which("pg_ctl"):
        candidates.append(Path(found).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        needed = ("initdb", "pg_ctl", "postgres")
        has_psql = shutil.which("psql") or (folder / "psql").exists()
        if has_psql and all((folder / name).exists() for name in needed):
            return folder, ""
    return None, (
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres, psql): install Debian's "
        "`postgresql` package (.ci/run does) or point TARGET_OMNISEND_PG_HOST at a server"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Connection:
    """psql and tap-postgres settings for a server (`host`, `port`, `user`, `password`)."""

    host = "127.0.0.1"
    port: int
    user = USER
    password = "unused-trust-auth"
    database = DATABASE
    psql = "psql"

    def sql(self, script: str, database: str | None = None) -> str:
        """Run SQL through psql (stops at the first error); the rows as unaligned text."""
        result = subprocess.run(
            [
                *(self.psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.host),
                *("-p", str(self.port), "-U", self.user, "-d", database or self.database),
            ],
            input=script,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={**os.environ, "PGPASSWORD": self.password},
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout

    def tap_env(self) -> dict[str, str]:
        """Meltano's environment variables pointing tap-postgres at this server."""
        return {
            "TAP_POSTGRES_HOST": self.host,
            "TAP_POSTGRES_PORT": str(self.port),
            "TAP_POSTGRES_USER": self.user,
            "TAP_POSTGRES_PASSWORD": self.password,
            "TAP_POSTGRES_DATABASE": self.database,
        }


@dataclass
class ExternalServer(Connection):
    """A server someone else runs (CI's PostgreSQL service container): a database of our own.

    From TARGET_OMNISEND_PG_HOST, _PORT, _USER and _PASSWORD.
    """

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = "postgres"
    database: str = field(default_factory=lambda: f"warehouse_{os.getpid()}")

    @classmethod
    def from_env(cls) -> ExternalServer | None:
        host = os.environ.get("TARGET_OMNISEND_PG_HOST")
        if not host:
            return None
        return cls(
            host=host,
            port=int(os.environ.get("TARGET_OMNISEND_PG_PORT", "5432")),
            user=os.environ.get("TARGET_OMNISEND_PG_USER", "postgres"),
            password=os.environ.get("TARGET_OMNISEND_PG_PASSWORD", "postgres"),
        )

    def start(self) -> ExternalServer:
        self.sql(f"DROP DATABASE IF EXISTS {self.database}", database="postgres")
        self.sql(f"CREATE DATABASE {self.database}", database="postgres")
        return self

    def stop(self) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)", database="postgres")


@dataclass
class PostgresServer(Connection):
    """One throwaway cluster; `run_as` is the system user running it (None: this user)."""

    bin_dir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="omnisend-pg-")))
    port: int = field(default_factory=free_port)
    run_as: str | None = None

    def __post_init__(self) -> None:
        if os.geteuid() == 0 and self.run_as is None:
            self.run_as = "postgres"
        if self.run_as is not None:
            owner = pwd.getpwnam(self.run_as)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.root.chmod(0o700)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

        local = self.bin_dir / "psql"
        self.psql = str(local) if local.exists() else str(shutil.which("psql"))

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            cwd=self.root,
            user=self.run_as,
            env={**os.environ, "LC_ALL": "C.UTF-8", "TZ": "UTC"},
        )

    def start(self) -> PostgresServer:
        initdb = self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stdout}{initdb.stderr}")
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=20"
        )
        started = self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        if started.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}{log[-2000:]}")
        self.sql(f"CREATE DATABASE {DATABASE}", database="postgres")
        return self

    def stop(self) -> None:
        if self.data_dir.exists():
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
