"""The sandbox's HTTP server: routing, authentication, versions, rate limits, faults, admin.

Each API request goes through: authentication (401/403) -> version header (2026: 400/410) ->
rate limits (429) -> injected faults (dropped connection, 500/503, slow answer) -> body size
(413) and JSON parsing (400) -> route (404) -> handler.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

from target_omnisend.sandbox import api_2026, api_v5, faults
from target_omnisend.sandbox.core import Reply, Request, error_reply, problem
from target_omnisend.sandbox.handle import SandboxHandle
from target_omnisend.sandbox.settings import SandboxSettings
from target_omnisend.sandbox.state import SandboxState

KEY_SHAPE = re.compile(r"^([A-Za-z0-9]+)-(\S+)$")
Route = tuple[str, str, re.Pattern[str], Any]
_msgspec_decode = msgspec.json.Decoder().decode


def parse_json(raw: bytes) -> Any:
    """A request body's JSON value; ``ValueError`` when it is not JSON.

    msgspec decodes a body several times faster than ``json``. A body it refuses goes to
    ``json.loads``, which decides as before: NaN and Infinity, a UTF-8 BOM, UTF-16 text or a
    lone surrogate escape are still accepted, and anything else still raises ``ValueError``.
    """
    try:
        return _msgspec_decode(raw)
    except msgspec.DecodeError:
        return json.loads(raw)


def _compile(routes: list[tuple[str, str, Any]]) -> list[Route]:
    compiled = []
    for method, template, handler in routes:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        compiled.append((method, template, re.compile(f"^{pattern}$"), handler))
    return compiled


ROUTES = {"2026": _compile(api_2026.ROUTES), "v5": _compile(api_v5.ROUTES)}


def match_route(generation: str, method: str, path: str) -> tuple[str, Any, dict[str, str]]:
    """(route template, handler or None, path params) for a request."""
    allowed = False
    for route_method, template, pattern, handler in ROUTES[generation]:
        found = pattern.match(path)
        if found:
            if route_method == method:
                return f"{method} {template}", handler, found.groupdict()
            allowed = True
    prefix = "/api" if generation == "2026" else "/v5"
    return f"{method} {prefix}/<unknown>", ("405" if allowed else None), {}


class SandboxHandler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        """Disable Nagle so headers and body are not held back by delayed ACKs."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        """Forget the connection once it ends."""
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: request lines may carry emails."""

    def do_GET(self) -> None:
        """GET."""
        self._handle()

    def do_POST(self) -> None:
        """POST."""
        self._handle()

    def do_PUT(self) -> None:
        """PUT."""
        self._handle()

    def do_PATCH(self) -> None:
        """PATCH."""
        self._handle()

    def do_DELETE(self) -> None:
        """DELETE."""
        self._handle()

    @property
    def state(self) -> SandboxState:
        """The sandbox's state."""
        return self.server.state

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        url = urlsplit(self.path)
        raw = self._read_body()
        if url.path.startswith("/_sandbox/"):
            self._send(self._admin(url.path, raw))
            return
        if url.path.startswith("/api/"):
            generation = "2026"
        elif url.path.startswith("/v5/"):
            generation = "v5"
        else:
            self._send(problem(404, "Unknown path."))
            return
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        route, reply = self._api(generation, url.path, query, raw)
        if reply is None:  # dropped connection
            self.state.count(route, "dropped")
            self.close_connection = True
            return
        self.state.count(route, reply.status)
        self._send(reply)

    def _api(
        self, generation: str, path: str, query: dict[str, str], raw: bytes
    ) -> tuple[str, Reply | None]:
        route, handler, params = match_route(generation, self.command, path)
        brand, failure = self._authenticate(generation)
        if failure is not None:
            return route, failure
        failure = self._check_version(generation)
        if failure is not None:
            return route, failure
        limit_reply, headers = self._rate_limit(generation, brand, route)
        if limit_reply is not None:
            return route, limit_reply
        fault = faults.pick_fault(self.state)
        if fault is not None:
            self.state.faults_injected[fault] += 1
        if fault == "drop":
            return route, None
        if fault == "error":
            status = faults.error_status(self.state)
            return route, self._with(error_reply(generation, status, "Injected fault."), headers)
        if fault == "slow":
            time.sleep(self.state.settings.slow_seconds)
        reply = self._dispatch(generation, handler, params, query, raw, brand)
        return route, self._with(reply, headers)

    def _dispatch(
        self,
        generation: str,
        handler: Any,
        params: dict[str, str],
        query: dict[str, str],
        raw: bytes,
        brand: str,
    ) -> Reply:
        if len(raw) > self.state.settings.max_body_bytes:
            return error_reply(generation, 413, "The request body is too large.")
        if handler is None:
            return error_reply(generation, 404, "Not found.")
        if handler == "405":
            return error_reply(generation, 405, "Method not allowed.")
        body: Any = None
        if raw:
            try:
                body = parse_json(raw)
            except ValueError:
                return error_reply(generation, 400, "The body is not valid JSON.", errors=[])
        request = Request(self.command, self.path, params, query, body, brand, generation)
        return handler(self.state, request)

    @staticmethod
    def _with(reply: Reply, headers: dict[str, str]) -> Reply:
        reply.headers.update(headers)
        return reply

    def _authenticate(self, generation: str) -> tuple[str, Reply | None]:
        if generation == "2026":
            header = self.headers.get("Authorization") or ""
            scheme, _, key = header.partition(" ")
            key = key.strip() if scheme in ("Omnisend-API-Key", "Bearer") else ""
        else:
            key = (self.headers.get("X-API-KEY") or "").strip()
        settings = self.state.settings
        shaped = KEY_SHAPE.match(key)
        if not shaped or (settings.api_keys is not None and key not in settings.api_keys):
            return "", error_reply(generation, 401, "A valid API key is required.")
        if key in settings.forbidden_keys:
            return shaped.group(1), error_reply(generation, 403, "The key lacks permission.")
        return shaped.group(1), None

    def _check_version(self, generation: str) -> Reply | None:
        if generation != "2026":
            return None
        version = self.headers.get("Omnisend-Version")
        settings = self.state.settings
        if not version:
            return problem(400, "The Omnisend-Version header is required.", [
                {"field": "Omnisend-Version", "code": "required", "message": "Header required"}
            ])  # fmt: skip
        if version in settings.retired_versions:
            return problem(410, f"API version {version} is retired.")
        if version not in settings.supported_versions:
            return problem(400, f"Unknown API version {version}.", [
                {"field": "Omnisend-Version", "code": "invalid_value", "message": "Unknown"}
            ])  # fmt: skip
        return None

    def _rate_limit(
        self, generation: str, brand: str, route: str
    ) -> tuple[Reply | None, dict[str, str]]:
        settings, window = self.state.settings, self.state.window
        checks = [("all", settings.rate_limit_per_minute)]
        if route.endswith("/api/contacts/tags"):
            checks.append(("tags", settings.tags_rate_limit_per_minute))
        elif "/api/segments" in route:
            writes = route.startswith(("POST", "PUT"))
            checks.append(
                ("segments-write", settings.segments_write_per_minute)
                if writes
                else ("segments-read", settings.segments_read_per_minute)
            )
        headers: dict[str, str] = {}
        for bucket, limit in checks:
            decision = self.state.limiter.hit((brand, bucket), limit, window)
            if bucket == "all" and generation == "v5":
                headers = {
                    "X-Rate-Limit-Limit": str(limit),
                    "X-Rate-Limit-Remaining": str(decision.remaining),
                    "X-Rate-Limit-Reset": str(decision.reset),
                }
            if not decision.allowed:
                headers["Retry-After"] = str(decision.retry_after)
                detail = "Rate limit exceeded."
                if generation == "2026":
                    reply = problem(429, detail, retryAfter=decision.retry_after)
                else:
                    reply = error_reply(generation, 429, detail)
                return self._with(reply, headers), headers
        return None, headers

    def _admin(self, path: str, raw: bytes) -> Reply:
        server = self.server.owner
        if path == "/_sandbox/health" and self.command == "GET":
            return Reply(200, {"status": "ok"})
        if path == "/_sandbox/dump" and self.command == "GET":
            return Reply(200, server.dump())
        if path == "/_sandbox/reset" and self.command == "POST":
            server.reset()
            return Reply(200, {"status": "reset"})
        if path == "/_sandbox/config" and self.command in ("POST", "PUT"):
            try:
                changes = json.loads(raw or b"{}")
                server.configure(**changes)
            except (ValueError, TypeError) as exc:
                return problem(400, str(exc), [])
            return Reply(200, server.state.settings.as_dict())
        if path == "/_sandbox/config" and self.command == "GET":
            return Reply(200, server.state.settings.as_dict())
        return problem(404, "Unknown admin path.")

    def _send(self, reply: Reply) -> None:
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    state: SandboxState
    owner: SandboxServer

    def __init__(self, address: tuple[str, int], handler: type[SandboxHandler]) -> None:
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def close_connections(self) -> None:
        """Shut every open keep-alive connection, so a stopped sandbox answers nothing."""
        with self.connections_lock:
            for connection in list(self.connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class SandboxServer(SandboxHandle):
    """An Omnisend-compatible API server on loopback, for tests, demos and benchmarks."""

    def __init__(
        self, settings: SandboxSettings | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = SandboxState(settings or SandboxSettings())
        self._host, self._port = host, port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def settings(self) -> SandboxSettings:
        """The current settings."""
        return self.state.settings

    def start(self) -> SandboxServer:
        """Bind, start serving on a background thread, return self."""
        httpd = _HTTPServer((self._host, self._port), SandboxHandler)
        httpd.state, httpd.owner = self.state, self
        self._httpd = httpd
        self.state.base_url = self.url
        self.state.start()
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; write the dump to ``persist_path`` when set."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self.state.stop()
        path = self.state.settings.persist_path
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(self.dump(), handle, indent=1)
        self._httpd = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._httpd is None:
            raise RuntimeError("the sandbox is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` (no path)."""
        return f"http://{self._host}:{self.port}"

    def dump(self) -> dict[str, Any]:
        """Everything the sandbox holds (format in the package docstring)."""
        return self.state.dump()

    def configure(self, **changes: Any) -> None:
        """Change any setting (limits, switches, faults) at run time."""
        self.state.configure(**changes)

    def reset(self) -> None:
        """Forget contacts, batches, segments, counters and rate windows."""
        self.state.reset()
