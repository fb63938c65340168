"""`SingerLineReader`: fast Singer message reading that never echoes an input line.

The SDK's readers log a line they cannot parse, with a traceback; a line may hold personal data,
so this one reports only its number. It reads stdin as bytes and decodes with msgspec (several
times faster than `json.loads` on text). Bytes that are not UTF-8 do not stop the run: they are
decoded as lone surrogates, and a contact whose mapped fields hold them is rejected with
`invalid_encoding` when its payload is encoded (unmapped fields do not matter).

`batch_records` reads the files a BATCH message names (the SDK's batch extension: local
`file://` JSON Lines, gzip-compressed or not) as records, so the target hands them to the same
record path as RECORD messages.
"""

from __future__ import annotations

import contextlib
import decimal
import gzip
import json
import re
import sys
import typing as t
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlsplit

import msgspec
from singer_sdk.singerlib.encoding.base import GenericSingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine

__all__ = [
    "JSON_DECODER",
    "UNREADABLE",
    "BatchFileError",
    "LineTooDeep",
    "SingerLineReader",
    "batch_records",
    "decode_line",
    "deep_nesting",
]

# Floats as Decimal, as the SDK's own readers do (exact numbers for the validator and mapping).
JSON_DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)


# How deep a line may nest (the standard library's parser recurses; msgspec stops at 1,000).
MAX_NESTING = 10_000


@contextlib.contextmanager
def deep_nesting(levels: int = MAX_NESTING + 200) -> t.Iterator[None]:
    """Let the standard library's JSON (which recurses) handle values nested `levels` deep."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, levels))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


class LineTooDeep(ValueError):
    """A line nests deeper than MAX_NESTING levels."""


def decode_line(line: bytes | bytearray | str) -> t.Any:
    """Decode one JSON line as the SDK's reader does (floats as Decimal).

    msgspec decodes nearly every line; what it refuses goes to the standard library, as in the
    SDK's own reader: `NaN`, `Infinity` and `-Infinity` (as floats), lone surrogate escapes
    (`\ud800`), and nesting deeper than msgspec allows. Bytes that are not UTF-8 become lone
    surrogates (a contact whose mapped fields hold them is rejected later).

    Raises:
        LineTooDeep: The line nests deeper than MAX_NESTING levels.
        ValueError: The line is not JSON.
    """
    try:
        return JSON_DECODER.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        pass
    if isinstance(line, (bytes, bytearray)):
        text = bytes(line).decode("utf-8", errors="surrogateescape")
    else:
        text = line
    try:
        with deep_nesting():
            return json.loads(text, parse_float=decimal.Decimal)
    except RecursionError:
        raise LineTooDeep(f"nests deeper than {MAX_NESTING:,} levels") from None
    except json.JSONDecodeError:
        raise ValueError("not JSON") from None


# A RECORD message whose record could not be read carries why under this key (`record` is None).
UNREADABLE = "_unreadable"
_RECORD_START = re.compile(
    rb'^\s*\{\s*"type"\s*:\s*"RECORD"\s*,\s*"stream"\s*:\s*"([^"\\]{1,1000})"'
)


def _record_stream(line: bytes | bytearray | str) -> str | None:
    """The stream of a line that starts as a RECORD message (type, then stream), else None."""
    raw = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else bytes(line)
    found = _RECORD_START.match(raw[:2000])
    return found.group(1).decode("utf-8", "replace") if found else None


def _shown(value: t.Any) -> str:
    """A message type for an error message (short: it is not personal data, but may be long)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class BatchFileError(ValueError):
    """A BATCH message or one of its files cannot be read (the message says which, not its data)."""


def batch_file_path(url: str) -> Path:
    """The local path of a manifest entry (`file://` URL or plain path).

    Raises:
        BatchFileError: The file is not on this machine (s3://, gs://, ...).
    """
    parts = urlsplit(url)
    if parts.scheme in ("", "file") and parts.netloc in ("", "localhost"):
        return Path(unquote(parts.path) if parts.scheme else url)
    raise BatchFileError(
        f"BATCH file {parts.scheme}://{parts.netloc}/... is not a local file: this target reads "
        "batch files from the local file system only (set the tap's batch_config storage root "
        "to a file:// folder)."
    )


def batch_records(message: t.Mapping[str, t.Any]) -> t.Iterator[t.Any]:
    """Every record of the files a BATCH message lists, in manifest order, as decoded dicts.

    Raises:
        BatchFileError: Unsupported format or compression, a missing file, a line that is not
            JSON (named by file and line number, its content not shown).
    """
    encoding = message.get("encoding") or {}
    file_format, compression = encoding.get("format"), encoding.get("compression")
    if file_format != "jsonl":
        raise BatchFileError(
            f"BATCH encoding format {file_format!r} is not supported: use the tap's batch_config "
            "encoding format jsonl (with compression gzip or none)."
        )
    if compression not in (None, "none", "gzip"):
        raise BatchFileError(f"BATCH compression {compression!r} is not supported: gzip or none.")
    for url in message.get("manifest") or ():
        path = batch_file_path(str(url))
        try:
            raw = path.open("rb")
        except OSError as error:
            raise BatchFileError(f"BATCH file {path} cannot be read: {error.strerror}") from None
        with raw, gzip.GzipFile(fileobj=raw) if compression == "gzip" else raw as handle:
            try:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        yield decode_line(line)
                    except ValueError:
                        raise BatchFileError(
                            f"BATCH file {path} line {number} is not valid JSON (its content is "
                            "not shown: it may hold personal data)."
                        ) from None
            except (OSError, EOFError) as error:  # a truncated or corrupt gzip file
                raise BatchFileError(f"BATCH file {path} is damaged: {error}") from None


class SingerLineReader(GenericSingerReader[t.Any]):
    """Reads Singer messages from bytes (stdin) or text lines; counts lines for error messages."""

    def __init__(self) -> None:
        """Start counting at line 0."""
        super().__init__()
        self.line_number = 0
        # Takes RECORD lines off the loop to map them in a second process (`MappingWorker`)
        self.router: t.Any = None

    @property
    def default_input(self) -> t.IO[t.Any]:
        """Standard input as bytes: msgspec decodes UTF-8 itself."""
        return sys.stdin.buffer

    def process_lines(
        self,
        file_input: t.IO[t.Any] | None,
        callbacks: dict[str, t.Callable[[dict], None]],
    ) -> t.Counter[str]:
        """The SDK's loop (decode, check, dispatch, count) with RECORD lines on the short path.

        Records are nearly every line, so their dispatch skips the generic lookups; any other
        line goes through `deserialize_json` and the callbacks exactly as in the SDK. With a
        `router`, the RECORD lines it takes are mapped in its worker, and every line it does not
        take waits until the lines before it were handled (`barrier`).
        """
        stats: Counter[str] = Counter()
        records = 0
        on_record = callbacks.get("RECORD")
        decode = JSON_DECODER.decode
        router = self.router
        for line in file_input or self.default_input:
            if router is not None:
                if router.take(line):
                    self.line_number += 1
                    records += 1
                    continue
                router.barrier()
            try:
                message = decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                message = None
            if type(message) is dict and message.get("type") == "RECORD" and on_record:
                self.line_number += 1
                on_record(message)
                records += 1
                continue
            message = self.deserialize_json(line)
            self.assert_line_requires(message, requires={"type"})
            record_type = message["type"]
            if callback := callbacks.get(record_type):
                callback(message)
            else:
                raise InvalidInputLine(
                    f"Input line {self.line_number} is a message of type {_shown(record_type)}, "
                    "which Singer does not define (RECORD, SCHEMA, STATE, ACTIVATE_VERSION, "
                    "BATCH). Nothing from it on was loaded."
                )
            stats[record_type] += 1
        if router is not None:
            router.barrier()
        if records:
            stats["RECORD"] += records
        return stats

    def deserialize_json(self, line: t.Any) -> dict:
        """Decode one line into a message dict.

        Raises:
            InvalidInputLine: The line is not a JSON object (its content is not repeated).
        """
        self.line_number += 1
        try:
            message = decode_line(line)
        except LineTooDeep as deep:
            stream = _record_stream(line)
            if stream is None:
                raise InvalidInputLine(self._describe(str(deep))) from None
            # one record is at fault: the target rejects it, the run goes on
            return {
                "type": "RECORD",
                "stream": stream,
                "record": None,
                UNREADABLE: f"Input line {self.line_number}: the record {deep}.",
            }
        except ValueError:  # json's JSONDecodeError too
            raise InvalidInputLine(self._describe("is not valid JSON")) from None
        if not isinstance(message, dict):
            raise InvalidInputLine(self._describe("is not a JSON object"))
        return message

    def _describe(self, problem: str) -> str:
        return (
            f"Unable to parse line as JSON: input line {self.line_number} {problem} "
            "(its content is not shown: it may hold personal data). Nothing from it on was "
            "loaded."
        )

    def assert_line_requires(self, line_dict: dict, requires: set[str]) -> None:
        """Like the SDK's check, without repeating the line's content."""
        missing = requires - set(line_dict)
        if missing:
            raise InvalidInputLine(
                f"Input line {self.line_number} is missing the {', '.join(sorted(missing))} "
                "key(s) every Singer message has."
            )
