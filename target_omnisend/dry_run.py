"""`DryRunWriter`: a dry run's would-be payloads, one JSON line per contact, in an owner-only file.

The sink encodes each contact's line (`encode_payload_line`) right after mapping it, while its
payload is still in the CPU's caches (encoding a batch of a thousand later costs 1.5-2 times as
much); a background thread writes the batch's bytes, so the file system's time overlaps the
mapping of the next batch instead of adding to it. A write that fails (a full disk) ends the
run with `DryRunFileError` at the next batch or at the end, never silently.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec

from target_omnisend.mapping import MappedContact
from target_omnisend.rejects import dumps, open_private

__all__ = ["DryRunFileError", "DryRunWriter"]

_ENCODER = msgspec.json.Encoder()
_QUEUED_BATCHES = 16  # encoded batches waiting for the writer thread (bounds the memory held)


class DryRunFileError(Exception):
    """The dry-run file cannot be written."""


def _tolerant_line(line: Mapping[str, Any]) -> bytes:
    """A line msgspec refused, by the tolerant encoder (lone surrogates as \\udcxx)."""
    return (dumps(line) + "\n").encode("utf-8", errors="backslashreplace")


def _line(stream: str, contact: MappedContact) -> dict[str, Any]:
    return {"stream": stream, "key": contact.key, "payload": contact.payload, "tags": contact.tags}


def encode_payload_line(stream: str, contact: MappedContact) -> bytes | None:
    """A contact's dry-run line, ``{"stream", "key", "payload", "tags"}``, without its newline.

    None when msgspec cannot write it (lone surrogates): `encode_payload_lines` then writes it
    with the tolerant encoder.
    """
    try:
        return _ENCODER.encode(_line(stream, contact))
    except (TypeError, UnicodeEncodeError, msgspec.EncodeError):
        return None


def encode_payload_lines(
    stream: str,
    contacts: Sequence[MappedContact],
    encoded: Sequence[bytes | None] | None = None,
) -> bytes:
    """The dry-run lines of a batch, one per contact.

    Args:
        stream: The stream the contacts came from.
        contacts: The batch's contacts.
        encoded: Their lines from `encode_payload_line`, if the caller has them (None: encode).
    """
    if encoded is None:
        encoded = [encode_payload_line(stream, contact) for contact in contacts]
    if None not in encoded:
        return b"\n".join(encoded) + b"\n" if encoded else b""  # type: ignore[arg-type]
    return b"".join(
        line + b"\n" if line is not None else _tolerant_line(_line(stream, contact))
        for contact, line in zip(contacts, encoded, strict=True)
    )


class DryRunWriter:
    """Appends encoded batches to the dry-run file from a background thread."""

    def __init__(self, path: str | Path, logger: logging.Logger) -> None:
        """Prepare the writer; the file is created with the first batch."""
        self.path = Path(path)
        self._logger = logger
        self._lock = threading.Lock()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED_BATCHES)
        self._file: IO[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None

    def write(
        self,
        stream: str,
        contacts: Sequence[MappedContact],
        encoded: Sequence[bytes | None] | None = None,
    ) -> None:
        """Queue a batch's lines (`encode_payload_lines`) for the file.

        Blocks only while the writer is far behind.

        Raises:
            DryRunFileError: The file cannot be created, or an earlier write failed.
        """
        data = encode_payload_lines(stream, contacts, encoded)
        with self._lock:
            self._raise_if_failed()
            if self._thread is None:
                self._start()
        self._queue.put(data)

    def close(self) -> None:
        """Write what is queued and close the file.

        Raises:
            DryRunFileError: A write failed.
        """
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
                thread.join()
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as error:
                    self._error = self._error or error
                self._file = None
            self._raise_if_failed()

    def _start(self) -> None:
        try:
            self._file = open_private(self.path, binary=True)
        except OSError as error:
            self._error = error
            self._raise_if_failed()
        self._logger.info("Dry run: writing payloads to %s", self.path)
        self._thread = threading.Thread(target=self._write_queued, name="dry-run-writer")
        self._thread.daemon = True
        self._thread.start()

    def _write_queued(self) -> None:
        assert self._file is not None
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._file.write(data)
                except OSError as error:  # reported by the next write or by close
                    self._error = error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            reason = self._error.strerror or type(self._error).__name__
            raise DryRunFileError(f"Cannot write the dry-run file {self.path}: {reason}.")
