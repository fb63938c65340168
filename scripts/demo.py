"""`make demo`: run the bundled Meltano job into a local Omnisend sandbox and show the result.

Steps: start ``omnisend-sandbox --port 0`` (it prints its URL first), ``meltano install`` the
job's plugins of ``meltano.yml``, ``meltano --environment dev run --full-refresh export-segments``
into the sandbox, print the target's run summary of each task, then what the sandbox holds
(contacts per segment tag, a few sample rows with masked emails and phones), and stop the
sandbox. Exits 0 on success, non-zero when any step fails.

Nothing here talks to the real Omnisend: the API key is a sandbox key, the URL is loopback, and
the sync store lives in a temporary directory so every demo starts from an empty sandbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from target_omnisend.sandbox.process import SandboxProcess, SandboxStartError
from target_omnisend.summary import SUMMARY_PREFIX, mask_email, mask_phone

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
JOB = "export-segments"
# The file-based job's plugins (meltano.yml's tap-postgres serves export-warehouse-segments).
JOB_PLUGINS = ("tap-spreadsheets", "tap-jsonl", "target-omnisend")
SANDBOX_KEY = "sandbox-demo-key"
SEGMENT_TAG_PREFIX = "segment: "
SAMPLE_ROWS = 5
STARTUP_TIMEOUT = 20.0


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which."""


def meltano_env(api_url: str, work_dir: Path) -> dict[str, str]:
    """The environment for Meltano: dev environment, sandbox URL and key, no telemetry."""
    env = dict(os.environ)
    env.update(
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        MELTANO_ENVIRONMENT="dev",
        TARGET_OMNISEND_API_URL=f"{api_url}/api",
        TARGET_OMNISEND_API_KEY=SANDBOX_KEY,
        TARGET_OMNISEND_SYNC_STATE_PATH=str(work_dir / "sync.sqlite"),
    )
    return env


def run_step(title: str, command: list[str], env: dict[str, str]) -> str:
    """Run one command in the project; return its combined output, raise on failure."""
    shown = " ".join([Path(command[0]).name, *command[1:]])
    print(f"\n==> {title}\n    $ {shown}", flush=True)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        tail = "\n".join(_log_messages(output)[-30:])
        raise DemoError(f"{title} failed (exit {result.returncode}); last log lines:\n{tail}")
    return output


def _log_messages(output: str) -> list[str]:
    """Meltano's JSON log lines → their messages (other lines as they are)."""
    messages = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            messages.append(line)
            continue
        messages.append(str(entry.get("event", line)) if isinstance(entry, dict) else line)
    return messages


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def find_summaries(output: str) -> list[dict[str, Any]]:
    """Every run summary the target logged (one per task of the job), in order."""
    decoder = json.JSONDecoder()
    summaries = []
    for line in output.splitlines():
        try:
            texts = list(_strings(json.loads(line)))
        except ValueError:
            texts = [line]
        for text in texts:
            start = text.find(SUMMARY_PREFIX)
            if start < 0:
                continue
            try:
                summary, _ = decoder.raw_decode(text[start + len(SUMMARY_PREFIX) :])
            except ValueError:
                continue
            if isinstance(summary, dict):
                summaries.append(summary)
    return summaries


def print_summaries(summaries: list[dict[str, Any]]) -> None:
    """Print the target's summary of each task."""
    tasks = ["tap-spreadsheets -> target-omnisend", "tap-jsonl -> target-omnisend"]
    if not summaries:
        print("\n(the target logged no run summary)")
    for index, summary in enumerate(summaries):
        name = tasks[index] if index < len(tasks) else f"task {index + 1}"
        print(f"\n--- run summary: {name}")
        for key in sorted(summary):
            value = summary[key]
            shown = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
            print(f"  {key:<24} {shown}")


def _identifier(contact: dict[str, Any], kind: str) -> dict[str, Any]:
    for identifier in contact.get("identifiers") or ():
        if identifier.get("type") == kind:
            return identifier
    return {}


def print_sandbox(dump: dict[str, Any]) -> None:
    """Contacts per segment tag, all tags, and a few masked sample rows."""
    contacts = dump.get("contacts") or []
    tags = Counter(tag for contact in contacts for tag in contact.get("tags") or ())
    print(f"\n--- the sandbox holds {len(contacts)} contacts")
    print(f"  requests: {dump.get('requests_total', 0)} (429s: {dump.get('rate_limited', 0)})")
    if not contacts:  # a dry run sends nothing: no statuses, no sample rows to show
        return
    segment_tags = {tag: n for tag, n in tags.items() if tag.startswith(SEGMENT_TAG_PREFIX)}
    print("  contacts per segment tag:")
    for tag, count in sorted(segment_tags.items()) or [("(no segment tags)", 0)]:
        print(f"    {tag:<34} {count}")
    members = [set(contact.get("tags") or ()) & set(segment_tags) for contact in contacts]
    print(f"    {'in more than one segment':<34} {sum(len(m) > 1 for m in members)}")
    other = {tag: n for tag, n in tags.items() if tag not in segment_tags}
    if other:
        print("  other tags: " + ", ".join(f"{tag} ({n})" for tag, n in sorted(other.items())))
    statuses = Counter(
        (_identifier(c, "email").get("channels") or {}).get("email", {}).get("status", "-")
        for c in contacts
    )
    print("  email status: " + ", ".join(f"{s} {n}" for s, n in sorted(statuses.items())))
    print(f"\n  sample contacts (first {SAMPLE_ROWS}, masked):")
    header = f"    {'email':<22} {'phone':<16} {'name':<18} {'country':<8} {'tier':<9} tags"
    print(header)
    for contact in contacts[:SAMPLE_ROWS]:
        email = mask_email(_identifier(contact, "email").get("id"))
        phone = mask_phone(_identifier(contact, "phone").get("id")) or "-"
        name = f"{contact.get('firstName', '')} {(contact.get('lastName') or '')[:1]}."
        country = contact.get("countryCode") or contact.get("country") or "-"
        tier = (contact.get("customProperties") or {}).get("loyalty_tier", "-")
        shown_tags = ", ".join(sorted(contact.get("tags") or ()))
        print(f"    {email:<22} {phone:<16} {name:<18} {country:<8} {tier:<9} {shown_tags}")


def print_outputs(summaries: list[dict[str, Any]]) -> None:
    """Where the runs' files went: dry-run payloads, rejected records."""
    dry_run_files = [s["dry_run_file"] for s in summaries if s.get("dry_run_file")]
    if dry_run_files:
        print("\nDry run: nothing was sent; the would-be payloads are in")
        for path in dry_run_files:
            print(f"  {_shown_path(path)}")
    if any(summary.get("rejected") for summary in summaries):
        print(f"\nRejected records are in {ROOT / '.target-omnisend'} (Singer messages, 0600).")


def _shown_path(path: str) -> str:
    """A path the target logged (relative to the project, where Meltano runs it)."""
    return str(ROOT / path) if not Path(path).is_absolute() else path


def _dry_run() -> bool:
    return os.environ.get("TARGET_OMNISEND_DRY_RUN", "").strip().lower() in {"1", "true"}


def run_demo() -> None:
    """The whole demo; raises DemoError on the first failing step."""
    meltano = str(BIN / "meltano")
    try:
        sandbox = SandboxProcess(start_timeout=STARTUP_TIMEOUT).start()
    except SandboxStartError as error:
        raise DemoError(str(error)) from error
    url = sandbox.url
    print(f"==> sandbox running at {url} (a local stand-in for Omnisend's API)", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="target-omnisend-demo-") as work_dir:
            env = meltano_env(url, Path(work_dir))
            run_step(
                "install the job's Meltano plugins (taps from PyPI)",
                [meltano, "install", *JOB_PLUGINS],
                env,
            )
            output = run_step(
                f"run the job {JOB} through Meltano into the sandbox",
                [meltano, "--log-format=json", "--environment=dev", "run", "--full-refresh", JOB],
                env,
            )
        summaries = find_summaries(output)
        print_summaries(summaries)
        dump = sandbox.settled_dump()
        print_sandbox(dump)
        if not dump.get("contacts") and not _dry_run():
            raise DemoError("the job finished but the sandbox holds no contacts")
        print_outputs(summaries)
    finally:
        sandbox.stop()
        print("==> sandbox stopped")


def main() -> int:
    """Run the demo; 0 on success, 1 on failure."""
    try:
        run_demo()
    except DemoError as error:
        print(f"\ndemo failed: {error}", file=sys.stderr)
        return 1
    print("\ndemo finished: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
