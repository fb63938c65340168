"""The rejects file: every record that did not become a contact, as Singer messages.

Each stream's SCHEMA is written once (with a `_reject` property added), then one RECORD per
rejected record carrying `_reject: {code, message, api_error}`. Fix the rows and pipe the file
back into the target: the `_reject` column is ignored by the mapping. A stream whose records have
a `_reject` column of their own keeps it intact: the reason goes in `_reject_1` (the first free
name), declared in that stream's SCHEMA. Values are written as the reader reads them back (NaN
and Infinity as such, lone surrogates as JSON escapes), however deeply nested.

The file is owner-only (0600, parent directory created 0700) and created lazily on the first
reject, so a clean run leaves no file behind. Rows are buffered and flushed before every STATE the
target emits, so a STATE never covers a reject that is not on disk.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from target_omnisend.reader import deep_nesting

__all__ = ["REJECT_PROPERTY", "RejectWriter", "free_name", "json_default"]

REJECT_PROPERTY = "_reject"

_REJECT_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "api_error": {"type": ["string", "null"]},
    },
}


def json_default(value: Any) -> Any:
    """Encode what `json.dumps` cannot: Decimal, dates and times, bytes, sets.

    Decimals become ints when integral, else floats when exact enough, else strings.
    """
    if isinstance(value, Decimal):
        if value.is_nan() or value.is_infinite():
            return str(value)
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dumps(message: Mapping[str, Any]) -> str:
    """One JSON line, safely encoded (non-ASCII kept; NaN and Infinity as the Singer readers,
    the SDK's and this target's, accept them)."""
    with deep_nesting():
        return json.dumps(message, default=json_default, ensure_ascii=False)


def open_private(path: Path, *, binary: bool = False) -> IO[Any]:
    """Open `path` for appending, owner-only (0600), creating its parent (0700) if needed."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.chmod(path, 0o600)  # an existing file keeps its mode otherwise
    if binary:
        return os.fdopen(descriptor, "ab")
    # Undecodable input bytes reach us as lone surrogates: write them as JSON escapes (\udcxx).
    return os.fdopen(descriptor, "a", encoding="utf-8", errors="backslashreplace")


def free_name(record: Mapping[str, Any], schema: Mapping[str, Any] | None) -> str:
    """`_reject`, or `_reject_1`, `_reject_2`...: the first name neither uses."""
    taken = set(record) | set((schema or {}).get("properties") or {})
    name, number = REJECT_PROPERTY, 0
    while name in taken:
        number += 1
        name = f"{REJECT_PROPERTY}_{number}"
    return name


class RejectWriter:
    """Thread-safe writer of rejected records as Singer lines; counts rejects by code."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Prepare the writer; nothing touches the disk before the first reject."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._schemas_written: dict[str, Mapping[str, Any]] = {}
        self._names: dict[str, str] = {}  # stream → the property holding the reason
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        """How many records were rejected."""
        with self._lock:
            return sum(self.counts.values())

    def counts_by_code(self) -> dict[str, int]:
        """A snapshot of {reason code: rejected records}."""
        with self._lock:
            return dict(self.counts)

    def write(
        self,
        stream: str,
        schema: Mapping[str, Any] | None,
        record: Mapping[str, Any],
        code: str,
        message: str,
        api_error: str | None = None,
    ) -> None:
        """Append one rejected record (and the stream's SCHEMA before its first record)."""
        reject = {"code": code, "message": message, "api_error": api_error}
        with self._lock:
            name = self._names.get(stream, REJECT_PROPERTY)
            if self._is_source_column(name, record, schema):
                name = free_name(record, schema)  # the record's own column stays as it is
            row = dict(record)
            row[name] = reject
            record_line = dumps({"type": "RECORD", "stream": stream, "record": row})
            handle = self._open()
            written = self._schemas_written.get(stream)
            if schema is not None and (written is not schema or self._names.get(stream) != name):
                if written != schema or self._names.get(stream) != name:
                    handle.write(self._schema_line(stream, schema, name) + "\n")
                self._schemas_written[stream] = schema
            self._names[stream] = name
            handle.write(record_line + "\n")
            self.counts[code] += 1

    @staticmethod
    def _is_source_column(
        name: str, record: Mapping[str, Any], schema: Mapping[str, Any] | None
    ) -> bool:
        """Whether `name` is a column of the source (not a reason this writer wrote earlier, in
        a rejects file fed back: that one is replaced)."""
        declared = ((schema or {}).get("properties") or {}).get(name)
        if declared is not None and declared != _REJECT_SCHEMA:
            return True
        if name not in record:
            return False
        value = record[name]
        return not (isinstance(value, Mapping) and set(value) == set(_REJECT_SCHEMA["properties"]))

    def flush(self) -> None:
        """Push written rejects to the file (before a STATE that covers them is emitted)."""
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        """Close the file if it was opened."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _open(self) -> IO[str]:
        if self._file is None:
            self._file = open_private(self.path)
        return self._file

    @staticmethod
    def _schema_line(stream: str, schema: Mapping[str, Any], name: str = REJECT_PROPERTY) -> str:
        with_reject = dict(schema)
        properties = dict(with_reject.get("properties") or {})
        properties[name] = _REJECT_SCHEMA
        with_reject["properties"] = properties
        return dumps(
            {"type": "SCHEMA", "stream": stream, "schema": with_reject, "key_properties": []}
        )
