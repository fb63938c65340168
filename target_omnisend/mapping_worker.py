"""Records mapped in a second process: decoding, validation, mapping and encoding in parallel.

On a machine with more than one CPU, the target's main process reads each RECORD line's
envelope (`type` and `stream`: a fraction of a full decode) and sends the raw lines, in chunks,
to one worker process, or maps a chunk itself when the worker already has enough to do. The
mapping does what costs most per record (decode, validate, map, encode the payload or dry-run
line, fingerprint) and gives one outcome per line, in order; the main process stages them
exactly where the serial path would have (de-duplication, batches, STATE, rejects stay there).
Lines are processed in input order: any other message first waits for every outcome before it
(a barrier), so SCHEMA, STATE and ACTIVATE_VERSION see the same records handled as they would
without the worker.

The worker only maps the common case: a valid record that becomes a contact. Every other line
(an invalid record, a reject, a deletion, `_sdc` columns, a line it cannot decode) comes back as
"not mapped" and the main process handles it as it always has, so rejects and their reasons are
written by one piece of code. If the worker dies, the lines it held are handled in the main
process and the run continues serially.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import msgspec

from target_omnisend.dry_run import encode_payload_line
from target_omnisend.mapping import MappedContact, compile_plan
from target_omnisend.pipeline import encode_payload
from target_omnisend.reader import JSON_DECODER
from target_omnisend.segments import SDC_COLUMNS
from target_omnisend.sync_store import fingerprint
from target_omnisend.validation import FastJSONSchemaValidator

__all__ = [
    "EncodedPayload",
    "MappingWorker",
    "Outcome",
    "StreamSpec",
    "WorkerMapper",
    "usable_cpus",
]

# Lines per chunk: large enough that the two pipe transfers and the wake-ups cost little per
# line, small enough that a barrier (STATE, end of input) waits briefly for the worker.
CHUNK_LINES = 500
# Chunks handed to the worker and not yet taken back: one being mapped and some waiting, so
# the worker never idles while the main process stages or maps other chunks.
CHUNKS_AHEAD = 4
# Chunks mapped and not yet delivered, at most (memory stays flat whichever side is faster).
MAX_CHUNKS_WAITING = 8
# Bytes a pipe to or from the worker holds (Linux's default limit for unprivileged processes).
PIPE_BYTES = 1 << 20
# Records of a run handled in the main process before the worker starts: short runs (tests,
# trials) never pay for starting a second interpreter.
WARMUP_RECORDS = 2000

_SPEC, _LINES, _READY = b"S", b"L", b"R"
_FRAME_HEAD = struct.Struct("<I")  # a frame's length, then its bytes
# An outcome of a mapped line: key, email, phone, tags, payload JSON (None in a dry run),
# dry-run line (None in a real run) and fingerprint (None without a sync store).
_Text = str | None
Outcome = tuple[str, _Text, _Text, tuple[str, ...], bytes | None, bytes | None, _Text]
_MSGPACK = msgspec.msgpack.Encoder()
_OUTCOMES = msgspec.msgpack.Decoder(list[Outcome | None])


def _peak_rss_kib(pid: int) -> int | None:
    """A live process's own peak RSS (`VmHWM`, Linux), None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _widen(pipe: Any) -> None:
    """Let a pipe hold a whole chunk (Linux): a thread moving a chunk through the default
    64 KiB waits for the GIL after every piece, up to the 5 ms switch interval each time."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, where the platform says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Envelope(msgspec.Struct):
    """What the main process reads of a line: the message type and its stream."""

    type: Any = None
    stream: Any = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)


@dataclass(frozen=True)
class StreamSpec:
    """Everything the worker needs to map a stream's records as its sink would."""

    stream: str
    schema: dict[str, Any]
    mapping_config: Any  # mapping.MappingConfig
    key_properties: tuple[str, ...]
    tags: tuple[str, ...]  # the stream's segment tags
    validate: bool
    validate_formats: bool
    fingerprints: bool  # a sync store compares fingerprints
    dry_run: bool


class EncodedPayload(Mapping[str, Any]):
    """A payload that arrived as JSON (or inside a dry-run line): decoded only if read.

    The pipeline sends the JSON as it is and the dry run writes its line, so nothing reads it
    on the normal path.
    """

    __slots__ = ("_decoded", "_in_line", "encoded")

    def __init__(self, encoded: bytes, *, in_line: bool = False) -> None:
        """Keep the JSON: the payload's own, or (`in_line`) the dry-run line holding it."""
        self.encoded = encoded
        self._in_line = in_line
        self._decoded: dict[str, Any] | None = None

    def _value(self) -> dict[str, Any]:
        if self._decoded is None:  # floats as floats: the mapping wrote floats, not Decimals
            decoded = msgspec.json.decode(self.encoded)
            self._decoded = decoded["payload"] if self._in_line else decoded
        return self._decoded

    def __getitem__(self, key: str) -> Any:
        return self._value()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._value())

    def __len__(self) -> int:
        return len(self._value())


# -- the worker process -----------------------------------------------------------------------


class WorkerMapper:
    """Maps lines to outcomes as the sinks would (runs in the worker; tested in-process)."""

    def __init__(self) -> None:
        """No streams yet."""
        self._streams: dict[str, tuple[StreamSpec, Any, Any]] = {}

    def add(self, spec: StreamSpec) -> None:
        """Compile (or recompile, after a new SCHEMA) one stream's validator and mapping."""
        validator = None
        if spec.validate:
            validator = FastJSONSchemaValidator(spec.schema, validate_formats=spec.validate_formats)
        plan = compile_plan(spec.schema, spec.mapping_config)
        self._streams[spec.stream] = (spec, validator, plan)

    def map_lines(self, lines: Sequence[bytes]) -> list[Outcome | None]:
        """One outcome per line; None where the main process must handle the line itself."""
        outcomes: list[Outcome | None] = []
        for line in lines:
            try:
                outcomes.append(self._map_line(line))
            except Exception:
                outcomes.append(None)
        return outcomes

    def _map_line(self, line: bytes) -> Outcome | None:
        try:
            message = JSON_DECODER.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        if type(message) is not dict:
            return None
        entry = self._streams.get(message.get("stream"))  # type: ignore[arg-type]
        record = message.get("record")
        if entry is None or message.get("type") != "RECORD" or type(record) is not dict:
            return None
        spec, validator, plan = entry
        if not record.keys().isdisjoint(SDC_COLUMNS):  # deletions and metadata columns
            return None
        if validator is not None:
            try:
                validator.validate(record)
            except Exception:
                return None
        for key in spec.key_properties:
            if key not in record:
                return None
        contact = plan.map(record, spec.tags)
        if type(contact) is not MappedContact:
            return None
        payload = line_out = None
        if spec.dry_run:
            line_out = encode_payload_line(spec.stream, contact)
            if line_out is None:
                return None
        else:
            payload = encode_payload(contact)
            if payload is None:
                return None
        print_ = None
        if spec.fingerprints:
            print_ = fingerprint(contact.payload, contact.tags, exclude_tags=spec.tags)
        return (contact.key, contact.email, contact.phone, contact.tags, payload, line_out, print_)


def read_frame(stream: BinaryIO) -> bytes | None:
    """One length-prefixed message from a pipe; None at its end."""
    head = stream.read(_FRAME_HEAD.size)
    if len(head) < _FRAME_HEAD.size:
        return None
    (size,) = _FRAME_HEAD.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: BinaryIO, message: bytes) -> None:
    """Write one length-prefixed message and flush it."""
    stream.write(_FRAME_HEAD.pack(len(message)))
    stream.write(message)
    stream.flush()


def serve(inbox: BinaryIO, outbox: BinaryIO) -> None:
    """The worker's loop: stream specs and chunks of lines in, chunks of outcomes out.

    Signals are the main process's to handle (a Ctrl-C reaches the whole process group): the
    worker ends when the main process closes its pipe.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    mapper = WorkerMapper()
    write_frame(outbox, _READY)  # imported: the main process may send lines now
    while (message := read_frame(inbox)) is not None:
        kind, body = message[:1], message[1:]
        if kind == _SPEC:
            mapper.add(pickle.loads(body))  # noqa: S301 - from our own main process
        elif kind == _LINES:
            outcomes = mapper.map_lines(msgspec.msgpack.decode(body, type=list[bytes]))
            write_frame(outbox, _MSGPACK.encode(outcomes))


# -- the main process side --------------------------------------------------------------------


class WorkerStopped(Exception):
    """The worker process is gone (its lines are handled in the main process)."""


class _Chunk:
    """Lines waiting for their outcomes: from the worker (`remote`) or mapped here."""

    __slots__ = ("lines", "outcomes", "remote", "sinks")

    def __init__(self, lines: list[bytes], sinks: list[Any], remote: bool) -> None:
        self.lines = lines
        self.sinks = sinks
        self.remote = remote
        self.outcomes: Sequence[Outcome | None] | None = None


class MappingWorker:
    """Shares the mapping of RECORD lines between a worker process and the main process.

    `take(line)` accepts a line (True) or leaves it to the caller (False: not a RECORD of a
    registered stream, or not started yet). Lines go in chunks to the worker while it has
    fewer than `CHUNKS_AHEAD` to do; when it is busier, the main process maps the chunk itself
    (the same `WorkerMapper`) rather than wait, so both CPUs stay busy whichever is faster.
    Outcomes reach `deliver(sinks, lines, outcomes)` a chunk at a time, in input order, an
    outcome None meaning "handle this line as usual". `barrier()` delivers every outcome still
    due; the caller calls it before any line it handles itself.
    """

    def __init__(
        self,
        deliver: Callable[[Sequence[Any], Sequence[bytes], Sequence[Outcome | None]], None],
        warmup_records: int | None = None,
    ) -> None:
        """Nothing starts until `warmup_records` records of registered streams were offered."""
        self._deliver = deliver
        self._warmup = WARMUP_RECORDS if warmup_records is None else warmup_records
        self._sinks: dict[Any, Any] = {}
        self._specs: dict[Any, StreamSpec] = {}
        self._local = WorkerMapper()
        self._process: Any = None
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lines: list[bytes] = []
        self._line_sinks: list[Any] = []
        self._ahead: deque[_Chunk] = deque()
        self._remote_ahead = 0
        self._started = False
        # Set once the worker has imported what it needs (~0.4 s): until then the main process
        # maps every chunk, and never waits for a worker still starting.
        self._worker_ready = False
        self.stopped_reason: str | None = None
        self.lines_in_worker = 0
        self.lines_in_main = 0
        self.worker_peak_rss_kib = 0

    def register(self, sink: Any, spec: StreamSpec) -> None:
        """Map this stream's records here (replaces an earlier spec of the stream)."""
        self._sinks[spec.stream] = sink
        self._specs[spec.stream] = spec
        if self._started:
            self._local.add(spec)
        if self._process is not None:
            self._send(_SPEC + pickle.dumps(spec))

    def unregister(self, stream: Any) -> None:
        """The stream's records go the usual way again (e.g. after a new SCHEMA)."""
        self._sinks.pop(stream, None)
        self._specs.pop(stream, None)

    def take(self, line: bytes) -> bool:
        """Queue a RECORD line of a registered stream for mapping; False: not taken."""
        if not self._sinks or type(line) is not bytes:
            return False
        try:
            envelope = _ENVELOPE.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return False
        if envelope.type != "RECORD":
            return False
        sink = self._sinks.get(envelope.stream) if type(envelope.stream) is str else None
        if sink is None:
            return False
        if not self._started:
            if self._warmup > 0:
                self._warmup -= 1
                return False
            self._start()
        self._lines.append(line)
        self._line_sinks.append(sink)
        if len(self._lines) >= CHUNK_LINES:
            self._dispatch()
            self._deliver_ready(block=len(self._ahead) > MAX_CHUNKS_WAITING)
        return True

    def barrier(self) -> None:
        """Deliver every outcome of the lines taken so far."""
        if self._lines:
            self._dispatch()
        while self._ahead:
            self._deliver_ready(block=True)

    def close(self) -> None:
        """Stop the worker (lines not delivered yet are dropped: call `barrier` first)."""
        process = self._process
        self._ahead.clear()
        self._lines, self._line_sinks = [], []
        if process is None:
            return
        self.worker_peak_rss_kib = _peak_rss_kib(process.pid) or 0
        self._process = None
        self._outbox.put(None)  # the feeding thread closes the worker's input: it ends
        self._reap(process)

    # -- internals ----------------------------------------------------------------------------

    def _start(self) -> None:
        self._started = True
        for spec in self._specs.values():
            self._local.add(spec)
        # A fresh interpreter (not a fork: the main process has threads a fork would copy
        # mid-flight) that imports only what mapping needs; stdin and stdout are its pipes.
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
        except OSError as error:
            self.stopped_reason = f"the mapping worker could not start ({type(error).__name__})"
            return
        self._process = process
        for pipe in (process.stdin, process.stdout):
            _widen(pipe)
        # Threads move the bytes (the pipes' writes and reads release the GIL): a chunk is
        # larger than a pipe's buffer, and the main process must not wait while the worker
        # finishes the chunk before; nor may the two block each other on full pipes.
        threading.Thread(
            target=self._feed, args=(process.stdin,), name="mapper-lines", daemon=True
        ).start()
        threading.Thread(
            target=self._collect, args=(process.stdout,), name="mapper-results", daemon=True
        ).start()
        for spec in self._specs.values():
            self._send(_SPEC + pickle.dumps(spec))

    def _feed(self, lines: BinaryIO) -> None:
        try:
            while (message := self._outbox.get()) is not None:
                write_frame(lines, message)
        except (OSError, ValueError):
            pass  # the worker is gone: its chunks are mapped here
        finally:
            with contextlib.suppress(OSError, ValueError):
                lines.close()

    def _collect(self, results: BinaryIO) -> None:
        try:
            if read_frame(results) == _READY:
                self._worker_ready = True
                while (frame := read_frame(results)) is not None:
                    self._results.put(frame)
        except (OSError, ValueError):
            pass
        finally:
            self._results.put(None)

    def _send(self, message: bytes) -> None:
        self._outbox.put(message)

    def _dispatch(self) -> None:
        """The worker maps the chunk if it has room for it; the main process otherwise."""
        lines, sinks = self._lines, self._line_sinks
        self._lines, self._line_sinks = [], []
        # Chunks the worker holds: sent, and their outcomes not yet back
        holds = self._remote_ahead - self._results.qsize()
        remote = self._worker_ready and self._process is not None and holds < CHUNKS_AHEAD
        chunk = _Chunk(lines, sinks, remote)
        if remote:
            self._remote_ahead += 1
            self._send(_LINES + _MSGPACK.encode(lines))
        else:
            chunk.outcomes = self._local.map_lines(lines)
            self.lines_in_main += len(lines)
        self._ahead.append(chunk)

    def _deliver_ready(self, block: bool) -> None:
        """Deliver the chunks at the front whose outcomes are in (`block`: wait for one)."""
        while self._ahead:
            chunk = self._ahead[0]
            if chunk.remote:
                if not block and self._results.empty():
                    return
                self._receive(chunk)
            self._ahead.popleft()
            block = False
            self._deliver(chunk.sinks, chunk.lines, chunk.outcomes)

    def _receive(self, chunk: _Chunk) -> None:
        """The worker's outcomes for the oldest chunk it holds."""
        self._remote_ahead -= 1
        data = self._results.get() if self._process is not None else None
        outcomes = _OUTCOMES.decode(data) if data is not None else ()
        if len(outcomes) == len(chunk.lines):
            self.lines_in_worker += len(chunk.lines)
            chunk.outcomes = outcomes
            return
        if self._process is not None:
            self._worker_stopped()
        chunk.outcomes = self._local.map_lines(chunk.lines)  # the worker is gone: map here
        self.lines_in_main += len(chunk.lines)

    def _worker_stopped(self) -> None:
        process, self._process = self._process, None
        self._outbox.put(None)
        code = self._reap(process)
        self.stopped_reason = f"the mapping worker stopped (exit code {code})"

    def _reap(self, process: subprocess.Popen[bytes]) -> int | None:
        """Wait for the worker to end (kill it after 5 s: it ignores SIGTERM); its exit code.

        Reaped with `os.wait4` where there is one, to read the worker's own peak memory.
        """
        deadline = time.monotonic() + 5
        while hasattr(os, "wait4"):
            try:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                # ru_maxrss may carry the parent's high-water mark: /proc's own figure first
                self.worker_peak_rss_kib = self.worker_peak_rss_kib or usage.ru_maxrss
                process.returncode = os.waitstatus_to_exitcode(status)
                return process.returncode
            if time.monotonic() > deadline:
                process.kill()
            time.sleep(0.01)
        try:
            return process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(timeout=5)


if __name__ == "__main__":  # started by MappingWorker
    serve(sys.stdin.buffer, sys.stdout.buffer)
