"""The local sync store: what Omnisend confirmed, per brand, so re-runs send only changes.

A small SQLite database (``sync_state_path``, default ``.target-omnisend/sync.sqlite``) with two
tables, both keyed by brand so one file can serve several Omnisend accounts:

- ``contacts(brand, email_key, fingerprint, confirmed_at)``: the fingerprint of the payload that
  Omnisend last confirmed for a contact (``email_key`` is the mapping's de-duplication key: the
  normalised email, else the E.164 phone), and when (epoch seconds, UTC).
- ``memberships(brand, segment_tag, email_key, since)``: who carries which segment tag
  (``segment_tag`` is the segment's membership key: its tag, see ``segments.membership_key``).
- ``segments(brand, segment_tag, stream, segment, registered_at)``: which stream each segment came
  from, so a segment that vanished from its stream is still checked for exits.
- ``run_seen(brand, segment_tag, email_key, deleted)`` and ``run_latest``: who this run saw in
  each segment (appended in record order; at a clean end of input each contact's latest row is
  kept, keyed). A million members cost the run no memory; the set counts only once complete.
  Dry runs keep these two tables in a temporary database attached to the read-only store.
- ``listings(brand, segment_tag, cursor, members, done, started_at)`` and ``listed_members``: the
  contacts Omnisend reports carrying the tag of a segment the store did not know, listed page by
  page; a run that stopped resumes from ``cursor``.

Rules the callers rely on:

- Rows are written only once Omnisend confirmed them (the batch-finished callback calls
  :meth:`SyncStore.confirm`); a failed or unaccounted batch leaves the store as it was, so the next
  run re-sends.
- Confirmations are committed as they come, to the ``pending_contacts`` and
  ``pending_memberships`` tables (appends: cheap commits), and merged into the keyed tables in
  bulk: every ``merge_every`` rows (100,000), when the store is opened for writing (a run that
  died left its rows pending) and when it is closed. Reads answer as of the last merge, so a run
  decides mostly from the store as it was before the run; a contact new in two streams of one run
  may be sent twice.
- One run per brand at a time: :meth:`SyncStore.acquire_run_lock` takes an ``flock`` on a lock file
  next to the database and raises :class:`SyncStoreLocked` at once when another run holds it. The
  kernel releases an ``flock`` when its process dies, even after SIGKILL, so a stale lock file
  never blocks the next run; the holder removes the file when it releases the lock.
- The store never holds the API key; :func:`brand_id` derives a stable, non-reversible brand id.
- Files are private: the directory is created 0700, the database (and SQLite's -wal/-shm files,
  which inherit the database's mode) 0600.
- Thread-safe: one connection guarded by a lock.
"""

# ruff: noqa: S608  (SQL built from this module's own schema and table names; values are bound)
from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

__all__ = [
    "DEFAULT_SYNC_STATE_PATH",
    "SCHEMA_VERSION",
    "ExitCounts",
    "Listing",
    "SendReason",
    "SyncStore",
    "SyncStoreError",
    "SyncStoreLocked",
    "brand_id",
    "fingerprint",
]

DEFAULT_SYNC_STATE_PATH = ".target-omnisend/sync.sqlite"
# 2: memberships without the (brand, email_key) index, which doubled the cost of every insert;
# 3: the pending tables; 4: this run's members on disk, and member listings (_MIGRATIONS). An older
# store is upgraded when a run opens it for writing; dry runs read it as it is (reads never touch
# the pending tables, and a dry run keeps its run tables in a temporary database).
SCHEMA_VERSION = 4
_READABLE_VERSIONS = (1, 2, 3, 4)
SECONDS_PER_DAY = 86_400.0
# Keys per lookup query (passed as one JSON array).
_QUERY_CHUNK = 5000
_WRITER_CACHE_KIB = 32 * 1024  # the writing run's page cache (SQLite's default is 2 MiB)
_SORT_CACHE_KIB = 4 * 1024  # while sorting a run's members (see SyncStore._small_sorts)
_WAL_CHECKPOINT_PAGES = 10_000  # about 40 MB of WAL between checkpoints (default 1000 pages)
# Confirmations are appended to the pending tables (a commit writes a page or two) and merged into
# the keyed tables in bulk, in key order: a batch's random keys would each dirty a page of large
# B-trees, where a merge of this many rows writes each page once for many of them.
DEFAULT_MERGE_EVERY = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (
    brand TEXT NOT NULL,
    email_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    confirmed_at REAL NOT NULL,
    PRIMARY KEY (brand, email_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memberships (
    brand TEXT NOT NULL,
    segment_tag TEXT NOT NULL,
    email_key TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (brand, segment_tag, email_key)
) WITHOUT ROWID;
DROP INDEX IF EXISTS memberships_by_contact;
CREATE TABLE IF NOT EXISTS pending_contacts (
    brand TEXT NOT NULL,
    email_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    confirmed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_memberships (
    brand TEXT NOT NULL,
    segment_tag TEXT NOT NULL,
    email_key TEXT NOT NULL,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS segments (
    brand TEXT NOT NULL,
    segment_tag TEXT NOT NULL,
    stream TEXT NOT NULL,
    segment TEXT NOT NULL,
    registered_at REAL NOT NULL,
    PRIMARY KEY (brand, segment_tag)
) WITHOUT ROWID;
"""

# What each version adds to the one before, applied in order (a store at version 3 gets 4, ...).
# Nothing here rewrites a table an older version wrote: contacts and memberships stay as they were.
_RUN_TABLES = """
CREATE TABLE IF NOT EXISTS {schema}.run_seen (
    brand TEXT NOT NULL,
    segment_tag TEXT NOT NULL,
    email_key TEXT NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.run_latest (
    brand TEXT NOT NULL,
    segment_tag TEXT NOT NULL,
    email_key TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (brand, segment_tag, email_key)
) WITHOUT ROWID;
"""
_MIGRATIONS = {
    4: _RUN_TABLES.format(schema="main")
    + """
CREATE TABLE IF NOT EXISTS listings (
    brand TEXT NOT NULL,
    segment_tag TEXT NOT NULL,
    cursor TEXT,
    members INTEGER NOT NULL,
    done INTEGER NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (brand, segment_tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS listed_members (
    brand TEXT NOT NULL,
    segment_tag TEXT NOT NULL,
    email_key TEXT NOT NULL,
    PRIMARY KEY (brand, segment_tag, email_key)
) WITHOUT ROWID;
""",
}
# Rows per append of this run's members (one transaction).
_SEEN_FLUSH_ROWS = 20_000


class Listing(NamedTuple):
    """A member listing of one segment tag: where it stands."""

    cursor: str | None  # where the next page starts (None: at the first page)
    members: int  # members listed so far
    done: bool


class ExitCounts(NamedTuple):
    """A segment's members before the run and those this run did not see live."""

    members_before: int
    absent: int  # previous members not seen live this run
    explicit: int  # previous members this run deleted (``_sdc_deleted_at``), not seen live after


# The last confirmation of a key wins (SQLite takes bare columns from the max(rowid) row); a
# membership keeps its first `since` (and a stored one keeps its own).
_MERGE_PENDING = (
    "INSERT OR REPLACE INTO contacts (brand, email_key, fingerprint, confirmed_at) "
    "SELECT brand, email_key, fingerprint, confirmed_at FROM (SELECT brand, email_key, "
    "fingerprint, confirmed_at, max(rowid) FROM pending_contacts GROUP BY brand, email_key) "
    "ORDER BY brand, email_key",
    "INSERT OR IGNORE INTO memberships (brand, segment_tag, email_key, since) "
    "SELECT brand, segment_tag, email_key, min(since) FROM pending_memberships "
    "GROUP BY brand, segment_tag, email_key ORDER BY brand, segment_tag, email_key",
    "DELETE FROM pending_contacts",
    "DELETE FROM pending_memberships",
)


class SyncStoreError(Exception):
    """The sync store cannot be used (wrong schema version, read-only misuse, …)."""


class SyncStoreLocked(SyncStoreError):
    """Another run of the same brand holds the store's run lock."""


class _NotInitialised(SyncStoreError):
    """A read-only open found an empty database (no run ever completed its set-up)."""


class SendReason(str, Enum):
    """Why a contact is (or is not) sent, as classified against the store."""

    NEW = "new"  # the store has never confirmed this contact
    CHANGED = "changed"  # the fingerprint differs from the confirmed one
    STALE = "stale"  # unchanged, but confirmed longer than resync_after_days ago
    FULL_RESYNC = "full_resync"  # full_resync is on: everything is sent
    UNCHANGED = "unchanged"  # same fingerprint, recently confirmed: skip

    @property
    def needs_send(self) -> bool:
        """True unless the contact is unchanged."""
        return self is not SendReason.UNCHANGED


def fingerprint(
    payload: Mapping[str, Any], tags: Iterable[str] = (), exclude_tags: Collection[str] = ()
) -> str:
    """A stable hash of what would be sent for a contact.

    Canonical JSON (sorted keys, no whitespace) of the mapped payload and its tags (sorted and
    de-duplicated, so their order does not matter). Any change to the mapping output, a tag
    included, changes the fingerprint, so a mapping change re-sends.

    Args:
        payload: The JSON-ready contact payload (as ``MappedContact.payload``).
        tags: The contact's tags (as ``MappedContact.tags``).
        exclude_tags: Tags to leave out of the hash, in ``tags`` and in ``payload["tags"]`` alike.
            Pass the segment tag here: membership is tracked in the memberships table, so a
            contact present in two segments keeps one fingerprint.

    Returns:
        32 hex characters (128 bits of SHA-256).
    """
    body: Mapping[str, Any] = payload
    if exclude_tags and isinstance(payload.get("tags"), list):
        body = {**payload, "tags": [tag for tag in payload["tags"] if tag not in exclude_tags]}
    kept = sorted({tag for tag in tags if tag not in exclude_tags})
    try:  # msgspec sorts keys in C: several times faster than json.dumps(sort_keys=True)
        text = _CANONICAL.encode({"payload": body, "tags": kept})
    except (TypeError, UnicodeEncodeError, msgspec.EncodeError):  # surrogates, odd types
        canonical = {"payload": body, "tags": kept}
        dumped = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        text = dumped.encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()[:32]


_CANONICAL = msgspec.json.Encoder(order="sorted")


def brand_id(api_url: str, api_key: str) -> str:
    """A stable id for the Omnisend account behind a key, without storing the key.

    SHA-256 of the API base URL and the key, truncated: API keys are long random secrets, so the
    id cannot be turned back into the key, yet the same key always maps to the same store rows.
    """
    digest = hashlib.sha256(f"target-omnisend\0{api_url.rstrip('/')}\0{api_key}".encode())
    return "brand-" + digest.hexdigest()[:20]


def _chunks(items: Sequence[Any], size: int = _QUERY_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _make_private_dir(directory: Path) -> None:
    """Create missing directories 0700; leave existing ones (e.g. /tmp or ".") alone."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        os.chmod(path, 0o700)


def _create_private_file(path: Path) -> None:
    """Create the file 0600 if missing (before SQLite does, with the process umask).

    An existing database readable by others (and its -wal/-shm files) is made owner-only.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(OSError):
                if file.stat().st_mode & 0o077:
                    os.chmod(file, 0o600)
        return
    os.close(fd)
    os.chmod(path, 0o600)


class SyncStore:
    """Fingerprints and segment memberships for one brand, in a SQLite file.

    Args:
        path: The database file; missing directories are created 0700, the file 0600.
        brand: The brand id (see :func:`brand_id`); every row is scoped by it.
        read_only: Open an existing database without writing to it (dry runs). Raises
            ``FileNotFoundError`` if the file does not exist; write methods raise
            :class:`SyncStoreError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        brand: str,
        *,
        read_only: bool = False,
        merge_every: int = DEFAULT_MERGE_EVERY,
    ):
        if not brand:
            raise ValueError("SyncStore needs a brand id.")
        self.path = Path(path)
        self.brand = brand
        self.read_only = read_only
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._merge_every = merge_every
        self._pending_rows = 0  # confirmations appended since the last merge
        self._run = "run" if read_only else "main"  # the schema of this run's member tables
        self._cache_kib = 2 * 1024 if read_only else _WRITER_CACHE_KIB
        self._seen: list[tuple[str, str, str, int]] = []  # members seen, not yet appended
        self._run_complete = False
        if read_only:
            if not self.path.is_file():
                raise FileNotFoundError(f"No sync store at {self.path}.")
            uri = self.path.resolve().as_uri() + "?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:
            _make_private_dir(self.path.parent)
            _create_private_file(self.path)
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
        self._conn.isolation_level = None  # explicit BEGIN/COMMIT
        try:
            self._prepare()
        except sqlite3.DatabaseError as error:
            self._conn.close()
            raise SyncStoreError(
                f"{self.path} is not a usable target-omnisend sync store ({error}); move it "
                "away or point sync_state_path elsewhere."
            ) from None
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def open_for_dry_run(cls, path: str | os.PathLike[str], brand: str) -> SyncStore | None:
        """The store read-only, or None when there is none yet (a dry run never creates one)."""
        try:
            return cls(path, brand, read_only=True)
        except (FileNotFoundError, _NotInitialised):
            return None

    # -- setup -----------------------------------------------------------------------------

    def _prepare(self) -> None:
        conn = self._conn
        conn.execute("PRAGMA busy_timeout = 10000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SyncStoreError(
                f"The sync store {self.path} has schema version {version}, newer than this "
                f"target-omnisend understands ({SCHEMA_VERSION}); upgrade the target or point "
                "sync_state_path elsewhere."
            )
        if self.read_only:
            if version not in _READABLE_VERSIONS:
                raise _NotInitialised(f"The sync store {self.path} is not initialised.")
            conn.execute("ATTACH DATABASE '' AS run")  # a private temporary file
            for statement in _statements(_RUN_TABLES.format(schema="run")):
                conn.execute(statement)
            return
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        # Merges and lookups walk large B-trees: a bigger page cache and rarer checkpoints write
        # each hot page back less often (600k confirmations written per batch: 22% less CPU).
        conn.execute(f"PRAGMA cache_size = -{self._cache_kib}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_CHECKPOINT_PAGES}")
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            if version < 3:
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
            for step in range(max(version, 3) + 1, SCHEMA_VERSION + 1):
                for statement in _statements(_MIGRATIONS[step]):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        # A run that died before closing the store left confirmations pending: merge them now.
        (self._pending_rows,) = conn.execute(
            "SELECT (SELECT count(*) FROM pending_contacts) "
            "+ (SELECT count(*) FROM pending_memberships)"
        ).fetchone()
        self.merge_pending()

    def merge_pending(self) -> None:
        """Merge the confirmations appended since the last merge into the tables reads see.

        Reads answer for the store as of the last merge: merges happen every ``merge_every``
        appended rows, when the store is opened for writing or closed, and before a write that
        must follow the pending rows (``forget``, ``remove_members``, ``replace_members``).
        """
        with self._lock:
            if not self._pending_rows:
                return
            with self._transaction() as conn:
                for statement in _MERGE_PENDING:
                    conn.execute(statement)
            self._pending_rows = 0

    def _appended(self, rows: int) -> None:
        with self._lock:
            self._pending_rows += rows
            if self._pending_rows >= self._merge_every:
                self.merge_pending()

    @contextlib.contextmanager
    def _transaction(self, *, run_tables: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction (``run_tables``: only this run's tables, allowed in dry runs)."""
        if self.read_only and not run_tables:
            raise SyncStoreError("The sync store is open read-only (dry run): no writes.")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- run lock --------------------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        """The lock file next to the database, one per brand."""
        tag = hashlib.sha256(self.brand.encode()).hexdigest()[:16]
        return self.path.with_name(f"{self.path.name}.{tag}.lock")

    def acquire_run_lock(self) -> None:
        """Take the brand's run lock, or raise :class:`SyncStoreLocked` at once.

        The lock is an ``flock`` on :attr:`lock_path`: released by :meth:`release_run_lock`,
        :meth:`close`, or the kernel when the process ends in any way (SIGKILL included).
        Calling it again while holding the lock does nothing.
        """
        with self._lock:
            if self._lock_fd is not None:
                return
            while True:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise SyncStoreLocked(
                        f"Another target-omnisend run for this brand is using the sync store "
                        f"{self.path}{holder}; only one run per brand may run at a time. Wait "
                        "for it to finish, or give this run another sync_state_path."
                    ) from None
                except BaseException:
                    os.close(fd)
                    raise
                if _same_file(fd, self.lock_path):
                    break
                os.close(fd)  # the holder removed the file as we locked it: lock the new one
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._lock_fd = fd
            atexit.register(self.release_run_lock)  # a run that fails still removes the file

    def release_run_lock(self) -> None:
        """Release the run lock if this store holds it."""
        with self._lock:
            if self._lock_fd is None:
                return
            fd, self._lock_fd = self._lock_fd, None
            # Removed while still locked: a run that opened it meanwhile sees, once it has the
            # lock, that the path is gone or another file, and locks the path anew.
            with contextlib.suppress(OSError):
                os.unlink(self.lock_path)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            atexit.unregister(self.release_run_lock)

    @property
    def holds_run_lock(self) -> bool:
        """True while this store holds the brand's run lock."""
        return self._lock_fd is not None

    # -- contacts --------------------------------------------------------------------------

    def _confirmed(self, keys: Sequence[str]) -> dict[str, tuple[str, float]]:
        """{key: (fingerprint, confirmed_at)} for the keys the store knows."""
        found: dict[str, tuple[str, float]] = {}
        with self._lock:
            for chunk in _chunks(keys):
                rows = self._conn.execute(
                    "SELECT email_key, fingerprint, confirmed_at FROM contacts WHERE brand = ? "
                    "AND email_key IN (SELECT value FROM json_each(?))",
                    (self.brand, json.dumps(list(chunk))),
                )
                for key, print_, confirmed_at in rows:
                    found[key] = (print_, confirmed_at)
        return found

    def classify(
        self,
        items: Iterable[tuple[str, str]],
        *,
        now: float | None = None,
        resync_after_days: float | None = 7,
        full_resync: bool = False,
    ) -> dict[str, SendReason]:
        """Classify a batch of ``(key, fingerprint)`` pairs against what Omnisend confirmed.

        Args:
            items: ``(key, fingerprint)`` pairs; a repeated key keeps its last fingerprint.
            now: Epoch seconds (default: the current time).
            resync_after_days: Re-send unchanged contacts confirmed at least this many days ago
                (repairs drift from edits made in Omnisend); None disables, 0 re-sends always.
            full_resync: Ignore the store: everything is sent.

        Returns:
            {key: SendReason}, one entry per distinct key.
        """
        wanted = dict(items)
        if full_resync:
            return dict.fromkeys(wanted, SendReason.FULL_RESYNC)
        now = time.time() if now is None else now
        horizon = None if resync_after_days is None else now - resync_after_days * SECONDS_PER_DAY
        confirmed = self._confirmed(list(wanted))
        reasons: dict[str, SendReason] = {}
        for key, print_ in wanted.items():
            known = confirmed.get(key)
            if known is None:
                reasons[key] = SendReason.NEW
            elif known[0] != print_:
                reasons[key] = SendReason.CHANGED
            elif horizon is not None and known[1] <= horizon:
                reasons[key] = SendReason.STALE
            else:
                reasons[key] = SendReason.UNCHANGED
        return reasons

    def filter_changed(
        self,
        items: Iterable[tuple[str, str]],
        *,
        now: float | None = None,
        resync_after_days: float | None = 7,
        full_resync: bool = False,
    ) -> set[str]:
        """The keys among ``(key, fingerprint)`` pairs that must be sent (see :meth:`classify`)."""
        reasons = self.classify(
            items, now=now, resync_after_days=resync_after_days, full_resync=full_resync
        )
        return {key for key, reason in reasons.items() if reason.needs_send}

    def needs_send(
        self,
        key: str,
        fingerprint: str,
        now: float | None = None,
        resync_after_days: float | None = 7,
        full_resync: bool = False,
    ) -> bool:
        """True if this one contact must be sent (see :meth:`classify`)."""
        reasons = self.classify(
            [(key, fingerprint)],
            now=now,
            resync_after_days=resync_after_days,
            full_resync=full_resync,
        )
        return reasons[key].needs_send

    def confirm(self, entries: Iterable[tuple[str, str]], *, now: float | None = None) -> int:
        """Record ``(key, fingerprint)`` pairs Omnisend confirmed, in one transaction.

        Call only from the batch-finished callback, for the items Omnisend accepted.

        Returns:
            The number of rows written.
        """
        confirmed_at = time.time() if now is None else now
        rows = [(self.brand, key, print_, confirmed_at) for key, print_ in entries]
        if not rows:
            return 0
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO pending_contacts (brand, email_key, fingerprint, confirmed_at) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
        self._appended(len(rows))
        return len(rows)

    def forget(self, keys: Iterable[str]) -> None:
        """Drop contacts' fingerprints so their next run re-sends them (e.g. after a reject)."""
        rows = [(self.brand, key) for key in keys]
        if not rows:
            return
        self.merge_pending()
        with self._transaction() as conn:
            conn.executemany("DELETE FROM contacts WHERE brand = ? AND email_key = ?", rows)

    def contact_count(self) -> int:
        """How many contacts the store knows for this brand."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM contacts WHERE brand = ?", (self.brand,)
            ).fetchone()
        return int(row[0])

    # -- memberships -----------------------------------------------------------------------

    def members(self, segment_tag: str) -> set[str]:
        """The keys the store knows carry ``segment_tag``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT email_key FROM memberships WHERE brand = ? AND segment_tag = ?",
                (self.brand, segment_tag),
            )
            return {key for (key,) in rows}

    def knows_segment(self, segment_tag: str) -> bool:
        """True if the store holds any member of the segment.

        False means the store cannot tell (a new machine, or a segment that was emptied):
        rebuild the previous members from ``GET /contacts?tag=`` instead.
        """
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM memberships WHERE brand = ? AND segment_tag = ? LIMIT 1",
                (self.brand, segment_tag),
            ).fetchone()
        return row is not None

    def segment_tags(self) -> list[str]:
        """Every segment tag the store has members for, sorted."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT segment_tag FROM memberships WHERE brand = ? ORDER BY 1",
                (self.brand,),
            )
            return [tag for (tag,) in rows]

    def non_members(self, segment_tag: str, keys: Iterable[str]) -> set[str]:
        """The ``keys`` the store does not know as members of the segment: its entrants."""
        wanted = list(dict.fromkeys(keys))
        return set(wanted) - self._members_among(segment_tag, wanted)

    def members_elsewhere(self, segment_tag: str, keys: Iterable[str]) -> set[str]:
        """The ``keys`` the store knows as members of any segment other than ``segment_tag``."""
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        with self._lock:  # a few segments: primary-key lookups per segment, no contact index
            for other in self.segment_tags():
                if other != segment_tag:
                    found |= self._members_among(other, wanted)
        return found

    def _members_among(self, segment_tag: str, keys: list[str]) -> set[str]:
        """Which of ``keys`` (without repeats) the store knows as members of the segment."""
        found: set[str] = set()
        with self._lock:
            for chunk in _chunks(keys):
                rows = self._conn.execute(
                    "SELECT email_key FROM memberships WHERE brand = ? AND segment_tag = ? "
                    "AND email_key IN (SELECT value FROM json_each(?))",
                    (self.brand, segment_tag, json.dumps(list(chunk))),
                )
                found.update(key for (key,) in rows)
        return found

    def add_members(
        self, segment_tag: str, keys: Iterable[str], *, now: float | None = None
    ) -> None:
        """Record that ``keys`` carry ``segment_tag`` (after the tag was confirmed).

        A key already a member keeps its original ``since``.
        """
        since = time.time() if now is None else now
        rows = [(self.brand, segment_tag, key, since) for key in keys]
        if not rows:
            return
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO pending_memberships (brand, segment_tag, email_key, since) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
        self._appended(len(rows))

    def remove_members(self, segment_tag: str, keys: Iterable[str]) -> None:
        """Record that ``keys`` no longer carry ``segment_tag`` (after the exit was applied)."""
        rows = [(self.brand, segment_tag, key) for key in keys]
        if not rows:
            return
        self.merge_pending()
        with self._transaction() as conn:
            conn.executemany(
                "DELETE FROM memberships WHERE brand = ? AND segment_tag = ? AND email_key = ?",
                rows,
            )

    def replace_members(
        self, segment_tag: str, keys: Iterable[str], *, now: float | None = None
    ) -> None:
        """Make the segment's members exactly ``keys`` (e.g. seeded from ``GET /contacts?tag=``).

        Members that stay keep their ``since``.
        """
        since = time.time() if now is None else now
        wanted = set(keys)
        self.merge_pending()
        with self._transaction() as conn:
            current = {
                key
                for (key,) in conn.execute(
                    "SELECT email_key FROM memberships WHERE brand = ? AND segment_tag = ?",
                    (self.brand, segment_tag),
                )
            }
            conn.executemany(
                "DELETE FROM memberships WHERE brand = ? AND segment_tag = ? AND email_key = ?",
                [(self.brand, segment_tag, key) for key in current - wanted],
            )
            conn.executemany(
                "INSERT INTO memberships (brand, segment_tag, email_key, since) "
                "VALUES (?, ?, ?, ?)",
                [(self.brand, segment_tag, key, since) for key in wanted - current],
            )

    # -- this run's members ----------------------------------------------------------------

    def begin_run_members(self) -> None:
        """Forget the members an earlier run saw: its set was used, or never complete."""
        with self._lock:
            self._seen.clear()
            self._run_complete = False
            with self._transaction(run_tables=True) as conn:
                conn.execute(f"DELETE FROM {self._run}.run_seen WHERE brand = ?", (self.brand,))
                conn.execute(f"DELETE FROM {self._run}.run_latest WHERE brand = ?", (self.brand,))

    def saw(self, segment_tag: str, key: str, deleted: bool) -> None:
        """This run saw ``key`` live in (or, ``deleted``, deleted from) the segment."""
        with self._lock:
            self._seen.append((self.brand, segment_tag, key, int(deleted)))
            if len(self._seen) >= _SEEN_FLUSH_ROWS:
                self._flush_seen()

    def _flush_seen(self) -> None:
        with self._lock:
            rows, self._seen = self._seen, []
            if not rows:
                return
            with self._transaction(run_tables=True) as conn:
                conn.executemany(
                    f"INSERT INTO {self._run}.run_seen (brand, segment_tag, email_key, deleted) "
                    "VALUES (?, ?, ?, ?)",
                    rows,
                )

    def complete_run_members(self) -> None:
        """The input ended cleanly: the set is complete; keep each contact's latest row."""
        with self._lock, self._small_sorts():
            self._flush_seen()
            self.merge_pending()  # exits compare with every membership confirmed so far
            with self._transaction(run_tables=True) as conn:
                run = self._run
                conn.execute(f"DELETE FROM {run}.run_latest WHERE brand = ?", (self.brand,))
                conn.execute(
                    f"INSERT INTO {run}.run_latest (brand, segment_tag, email_key, deleted) "
                    "SELECT brand, segment_tag, email_key, deleted FROM (SELECT brand, "
                    f"segment_tag, email_key, deleted, max(rowid) FROM {run}.run_seen "
                    "WHERE brand = ? GROUP BY segment_tag, email_key) "
                    "ORDER BY segment_tag, email_key",
                    (self.brand,),
                )
                conn.execute(f"DELETE FROM {run}.run_seen WHERE brand = ?", (self.brand,))
            self._run_complete = True

    @contextlib.contextmanager
    def _small_sorts(self) -> Iterator[None]:
        """Sort with a small page cache: each SQLite sorter may hold as much as the cache.

        Keeping a million members' latest rows sorts them (GROUP BY, then the keyed insert); with
        the writer's 32 MiB cache that raised the run's peak memory by 65 MB at 1M. With 4 MiB the
        sorter spills to a temporary file instead.
        """
        self._conn.execute(f"PRAGMA cache_size = -{_SORT_CACHE_KIB}")
        try:
            yield
        finally:
            self._conn.execute(f"PRAGMA cache_size = -{self._cache_kib}")

    @property
    def run_members_complete(self) -> bool:
        """True once :meth:`complete_run_members` ran (a clean end of input)."""
        return self._run_complete

    def _previous(self, listed: bool) -> str:
        """The members before the run: the store's, and with ``listed`` the listing's too."""
        if not listed:
            return "SELECT email_key FROM memberships WHERE brand = :brand AND segment_tag = :tag"
        return (
            "SELECT email_key FROM memberships WHERE brand = :brand AND segment_tag = :tag "
            "UNION SELECT email_key FROM listed_members WHERE brand = :brand AND segment_tag = :tag"
        )

    def _absent_sql(self, what: str, listed: bool) -> str:
        return (
            f"SELECT {what} FROM ({self._previous(listed)}) AS p WHERE NOT EXISTS (SELECT 1 FROM "
            f"{self._run}.run_latest AS r WHERE r.brand = :brand AND r.segment_tag = :tag "
            "AND r.email_key = p.email_key AND r.deleted = 0)"
        )

    def _explicit_sql(self, what: str, listed: bool) -> str:
        return (
            f"SELECT {what} FROM {self._run}.run_latest AS r WHERE r.brand = :brand "
            "AND r.segment_tag = :tag AND r.deleted = 1 AND r.email_key IN "
            f"({self._previous(listed)})"
        )

    def exit_counts(self, segment_tag: str, *, listed: bool = False) -> ExitCounts:
        """How many members the segment had, and how many of them this run did not see live.

        ``listed``: count the members a listing found (``reconcile_existing_tag``) as members.
        """
        self._require_complete()
        names = {"brand": self.brand, "tag": segment_tag}
        with self._lock, self._small_sorts():
            conn = self._conn
            (before,) = conn.execute(
                f"SELECT count(*) FROM ({self._previous(listed)})", names
            ).fetchone()
            (absent,) = conn.execute(self._absent_sql("count(*)", listed), names).fetchone()
            (explicit,) = conn.execute(self._explicit_sql("count(*)", listed), names).fetchone()
        return ExitCounts(int(before), int(absent), int(explicit))

    def members_before(self, segment_tag: str, *, listed: bool = False) -> int:
        """How many members the segment had before the run (see :meth:`exit_counts`)."""
        with self._lock:
            (before,) = self._conn.execute(
                f"SELECT count(*) FROM ({self._previous(listed)})",
                {"brand": self.brand, "tag": segment_tag},
            ).fetchone()
        return int(before)

    def absent_members(
        self, segment_tag: str, *, listed: bool = False, at_most: int | None = None
    ) -> list[str]:
        """The segment's previous members this run did not see live (sorted).

        ``at_most``: read no more than this many plus one (one more says "too many").
        """
        return self._keys(self._absent_sql("p.email_key", listed), segment_tag, at_most)

    def deleted_members(
        self, segment_tag: str, *, listed: bool = False, at_most: int | None = None
    ) -> list[str]:
        """The segment's previous members this run deleted and did not see live after (sorted)."""
        return self._keys(self._explicit_sql("r.email_key", listed), segment_tag, at_most)

    def _keys(self, query: str, segment_tag: str, at_most: int | None) -> list[str]:
        self._require_complete()
        limit = "" if at_most is None else f" LIMIT {int(at_most) + 1}"
        with self._lock, self._small_sorts():
            rows = self._conn.execute(
                query + " ORDER BY 1" + limit, {"brand": self.brand, "tag": segment_tag}
            )
            return [key for (key,) in rows]

    def live_elsewhere(self, segment_tag: str, keys: Iterable[str]) -> set[str]:
        """The ``keys`` this run saw live in a segment other than ``segment_tag``."""
        self._require_complete()
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        with self._lock:
            others = [
                tag
                for (tag,) in self._conn.execute(
                    f"SELECT DISTINCT segment_tag FROM {self._run}.run_latest WHERE brand = ?",
                    (self.brand,),
                )
                if tag != segment_tag
            ]
            for other in others:
                for chunk in _chunks(wanted):
                    rows = self._conn.execute(
                        f"SELECT email_key FROM {self._run}.run_latest WHERE brand = ? "
                        "AND segment_tag = ? AND deleted = 0 "
                        "AND email_key IN (SELECT value FROM json_each(?))",
                        (self.brand, other, json.dumps(list(chunk))),
                    )
                    found.update(key for (key,) in rows)
        return found

    def _require_complete(self) -> None:
        if not self._run_complete:
            raise SyncStoreError(
                "This run's members are complete only after a clean end of input; no exit is "
                "computed from a partial set."
            )

    # -- member listings -------------------------------------------------------------------

    def listing(self, segment_tag: str) -> Listing | None:
        """Where the listing of the segment's tag stands, or None when none was started."""
        with self._lock:
            row = self._conn.execute(
                "SELECT cursor, members, done FROM listings WHERE brand = ? AND segment_tag = ?",
                (self.brand, segment_tag),
            ).fetchone()
        return None if row is None else Listing(row[0], int(row[1]), bool(row[2]))

    def start_listing(self, segment_tag: str, *, now: float | None = None) -> None:
        """Begin (or begin again) listing the tag's members from the first page."""
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM listed_members WHERE brand = ? AND segment_tag = ?",
                (self.brand, segment_tag),
            )
            conn.execute(
                "INSERT OR REPLACE INTO listings (brand, segment_tag, cursor, members, done, "
                "started_at) VALUES (?, ?, NULL, 0, 0, ?)",
                (self.brand, segment_tag, time.time() if now is None else now),
            )

    def add_listed(
        self, segment_tag: str, keys: Iterable[str], cursor: str | None, *, done: bool
    ) -> Listing:
        """Record one listed page and where the next starts, in one transaction."""
        rows = [(self.brand, segment_tag, key) for key in keys]
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO listed_members (brand, segment_tag, email_key) "
                "VALUES (?, ?, ?)",
                rows,
            )
            (members,) = conn.execute(
                "SELECT count(*) FROM listed_members WHERE brand = ? AND segment_tag = ?",
                (self.brand, segment_tag),
            ).fetchone()
            conn.execute(
                "UPDATE listings SET cursor = ?, members = ?, done = ? "
                "WHERE brand = ? AND segment_tag = ?",
                (cursor, members, int(done), self.brand, segment_tag),
            )
        return Listing(cursor, int(members), done)

    def drop_listing(self, segment_tag: str) -> None:
        """Forget a listing once its segment's exits are done (the store knows the segment)."""
        with self._transaction() as conn:
            for table in ("listings", "listed_members"):
                conn.execute(
                    f"DELETE FROM {table} WHERE brand = ? AND segment_tag = ?",
                    (self.brand, segment_tag),
                )

    def listed_absent(self, segment_tag: str) -> int:
        """Listed contacts this run did not see live and the store never knew as members."""
        self._require_complete()
        names = {"brand": self.brand, "tag": segment_tag}
        with self._lock:
            (count,) = self._conn.execute(
                "SELECT count(*) FROM listed_members AS p WHERE p.brand = :brand "
                "AND p.segment_tag = :tag AND NOT EXISTS (SELECT 1 FROM memberships AS m "
                "WHERE m.brand = :brand AND m.segment_tag = :tag AND m.email_key = p.email_key) "
                f"AND NOT EXISTS (SELECT 1 FROM {self._run}.run_latest AS r WHERE r.brand = "
                ":brand AND r.segment_tag = :tag AND r.email_key = p.email_key AND r.deleted = 0)",
                names,
            ).fetchone()
        return int(count)

    # -- segment registry ------------------------------------------------------------------

    def register_segments(
        self, stream: str, segments: Mapping[str, str], *, now: float | None = None
    ) -> None:
        """Remember that ``stream`` names these segments ({membership key: segment name})."""
        at = time.time() if now is None else now
        rows = [(self.brand, tag, stream, name, at) for tag, name in segments.items()]
        if not rows:
            return
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO segments "
                "(brand, segment_tag, stream, segment, registered_at) VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    def segments_of_stream(self, stream: str) -> dict[str, str]:
        """{membership key: segment name} the store has seen ``stream`` name."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT segment_tag, segment FROM segments WHERE brand = ? AND stream = ? "
                "ORDER BY segment_tag",
                (self.brand, stream),
            )
            return dict(rows.fetchall())

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Merge what is pending, release the run lock, close the database. Safe to call twice.

        Raises:
            sqlite3.Error: The merge failed (the next run that opens the store merges the rows).
        """
        with self._lock:
            try:
                if self._conn is not None:
                    self.merge_pending()
            finally:
                self.release_run_lock()
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> SyncStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"SyncStore(path={str(self.path)!r}, brand={self.brand!r}, {mode})"


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the file at `path`."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (here.st_dev, here.st_ino)


def _read_holder(fd: int) -> str:
    """' (pid N)' from the lock file, if it names the holder."""
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        pid = int(os.read(fd, 32).decode().strip())
        return f" (pid {pid})"
    return ""
