"""Every `bash` block of the README's Quick start and Meltano sections runs as written
(but the warehouse subsection's, which needs a PostgreSQL server: see WAREHOUSE).

The blocks run in order, in one bash script, in a copy of the project (its `.venv` the suite's
own, so `make venv` has nothing to do) with the real Meltano installing the taps from PyPI. Only
the sandbox port is changed (8765 → a free port, in meltano.yml too); before each `kill` of the
README's sandbox the test saves the sandbox's dump, and the production block runs against a
sandbox of the test (`TARGET_OMNISEND_API_URL`, and a key for the `...` placeholder), since
there is no real Omnisend here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from target_omnisend.sandbox.server import SandboxServer

pytestmark = [pytest.mark.meltano, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parents[1]
README_PORT = "8765"
SKIPPED_IN_COPY = {".venv", ".meltano", ".git", ".target-omnisend", ".pytest_cache", "plugins"}
KILL = 'kill "$SANDBOX_PID"'
KEY_PLACEHOLDER = "TARGET_OMNISEND_API_KEY=..."
PROD_KEY = "brand42-readmeprodkey"


# Needs a PostgreSQL warehouse (its own host and credentials): tests/test_postgres_e2e.py runs
# that job against a throwaway server, with the views this subsection defines.
WAREHOUSE = "\n### From a warehouse"


def section(text: str, title: str) -> str:
    """The text of a `## title` section, up to the next `## ` heading (and the warehouse)."""
    start = text.index(f"\n## {title}\n")
    end = min(
        (i for i in (text.find("\n## ", start + 1), text.find(WAREHOUSE, start)) if i >= 0),
        default=len(text),
    )
    return text[start:end]


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```$", text, flags=re.S | re.M)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def copy_project(destination: Path, port: str) -> Path:
    """The project without its build and run litter; `.venv` links to the suite's."""
    project = destination / "project"
    shutil.copytree(ROOT, project, ignore=lambda _d, names: SKIPPED_IN_COPY & set(names))
    (project / ".venv").symlink_to(VENV)
    stamp = VENV / ".installed"
    if stamp.exists():  # make venv must find the environment up to date
        older = stamp.stat().st_mtime - 60
        os.utime(project / "pyproject.toml", (older, older))
    meltano_yml = project / "meltano.yml"
    meltano_yml.write_text(
        meltano_yml.read_text(encoding="utf-8").replace(README_PORT, port), encoding="utf-8"
    )
    return project


def readme_script(port: str, prod_url: str) -> tuple[str, int]:
    """The blocks as one script; returns it and how many dumps it saves."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = bash_blocks(section(text, "Quick start"))
    meltano = bash_blocks(section(text, "Meltano"))
    assert len(quick_start) >= 2, "the README's Quick start blocks moved"
    assert len(meltano) >= 2, "the README's Meltano blocks moved"
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    dumps = 0
    for block in [*quick_start, *meltano]:
        if "--environment prod" in block:  # rehearsed against the test's sandbox
            lines.append(f"export TARGET_OMNISEND_API_URL={prod_url}")
        block = block.replace(KEY_PLACEHOLDER, f"TARGET_OMNISEND_API_KEY={PROD_KEY}")
        for line in block.replace(README_PORT, port).splitlines():
            if line.strip().startswith(KILL):
                dumps += 1
                lines.append(
                    f"curl -sf http://127.0.0.1:{port}/_sandbox/dump > readme-dump-{dumps}.json"
                )
            lines.append(line)
    return "\n".join(lines) + "\n", dumps


def email_statuses(dump: dict[str, Any]) -> dict[str, str | None]:
    statuses = {}
    for contact in dump["contacts"]:
        for identifier in contact["identifiers"]:
            if identifier["type"] == "email":
                channel = (identifier.get("channels") or {}).get("email") or {}
                statuses[identifier["id"]] = channel.get("status")
    return statuses


def consenting_emails(name: str) -> set[str]:
    """Emails of the bundled JSONL rows whose email_consent is Y."""
    path = ROOT / "data" / "segments" / name
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return {str(r["email"]).strip().lower() for r in rows if r.get("email_consent") == "Y"}


def test_readme_quick_start_and_meltano_blocks_run_as_written(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    port = str(free_port())
    project = copy_project(tmp_path, port)
    script, dumps = readme_script(port, sandbox.api_url)
    (tmp_path / "readme.sh").write_text(script, encoding="utf-8")
    prefixes = ("TARGET_OMNISEND_", "MELTANO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    result = subprocess.run(
        ["bash", str(tmp_path / "readme.sh")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert dumps == 2  # the Quick start's sandbox and the Meltano section's

    # Quick start: the JSONL segment landed, consent translated by status_values (not all
    # nonSubscribed), STATE written, the Meltano tap's output only Singer messages.
    quick = json.loads((project / "readme-dump-1.json").read_text(encoding="utf-8"))
    statuses = email_statuses(quick)
    consenting = consenting_emails("lapsed_customers.jsonl") & set(statuses)
    assert len(statuses) > 100
    assert consenting
    assert all(statuses[email] == "subscribed" for email in consenting)
    assert (project / "state.json").read_text(encoding="utf-8").strip()
    assert "Traceback" not in result.stderr

    # Meltano: the dev job loaded both segments into the README's sandbox, prod into ours.
    dev = json.loads((project / "readme-dump-2.json").read_text(encoding="utf-8"))
    tags = {tag for contact in dev["contacts"] for tag in contact.get("tags") or ()}
    assert {"segment: vip_customers", "segment: lapsed_customers"} <= tags
    assert len(sandbox.dump()["contacts"]) >= len(dev["contacts"]) > 0
    assert "requires_meltano" in (project / "meltano.yml").read_text(encoding="utf-8")
    assert "version field in meltano.yml is deprecated" not in result.stderr

    # `make demo` as a dry run, in the same project (plugins installed): no empty status line
    # or sample table, and where the payloads went.
    demo = subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "scripts/demo.py"],
        cwd=project,
        env={**env, "TARGET_OMNISEND_DRY_RUN": "true"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "the sandbox holds 0 contacts" in demo.stdout
    assert "email status:" not in demo.stdout
    assert "sample contacts" not in demo.stdout
    assert "nothing was sent; the would-be payloads are in" in demo.stdout
    payload_files = sorted((project / ".target-omnisend").glob("dry-run-*.jsonl"))
    assert len(payload_files) == 2  # one per task of the job
    for path in payload_files:
        assert str(path) in demo.stdout
        assert path.read_text(encoding="utf-8").count("\n") > 100
