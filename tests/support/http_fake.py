"""A tiny JSON HTTP server on 127.0.0.1 (ephemeral port) for speaking real protocols in tests.

A subclass answers `respond(path, headers, body)` with `(status, json_body)`, or
with `(status, Streamed(...))` for a body written piece by piece as it is
produced (Server-Sent Events). Every POST is recorded in `requests`, with the
times its response started, sent its first body bytes and ended, so a test or a
benchmark can see the latency at the server. Threads, one per connection, serve
hundreds of concurrent callers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# What a caller that went away looks like to the writing thread.
DISCONNECTED = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class DropConnection(Exception):
    """Raised by a `Streamed` body: close the socket now, mid-body, as a crashed provider would."""


class Streamed:
    """A body sent as it is produced: chunked on HTTP/1.1, closed-delimited on HTTP/1.0."""

    def __init__(self, pieces: Iterable[bytes], *, content_type: str = "text/event-stream") -> None:
        self.pieces = pieces
        self.content_type = content_type


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog: hundreds of callers may connect in the same millisecond.
    request_queue_size = 1024


class JSONServer:
    """Subclasses implement `respond(path, headers, body) -> (status, json_body | Streamed)`."""

    # HTTP/1.1 keeps connections open between requests (and sends streams chunked).
    protocol_version = "HTTP/1.0"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._current = threading.local()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = server.protocol_version
            # An idle keep-alive connection is closed after this long.
            timeout = 300
            # TCP_NODELAY, as a real API server sets: the status line and headers go out in one
            # write and the body in the next; with Nagle's algorithm the body waited for the
            # client's delayed ACK of the headers, 40 ms on Linux, after the server had recorded
            # the response as sent (a delay no provider has, and invisible in the server's timings).
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                headers = {name.lower(): value for name, value in self.headers.items()}
                url = urlsplit(self.path)
                status, answer = server.respond_get(url.path, parse_qs(url.query), headers)
                self._send_json(status, answer)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = None
                headers = {name.lower(): value for name, value in self.headers.items()}
                record = {
                    "path": self.path,
                    "headers": headers,
                    "body": body,
                    "raw": raw,
                    # The caller's (host, port): which process sent it can be found.
                    "client": self.client_address,
                    # Wall-clock seconds (time.time()), comparable with another process's clock.
                    "received_at": time.time(),
                    "status": None,
                    "first_chunk_at": None,
                    "done_at": None,
                    "chunks": 0,
                    "disconnected": False,
                }
                # Every key exists from the start: readers copy the dict while it is being filled.
                record.update(server.record_fields())
                with server._lock:
                    server.requests.append(record)
                server._current.record = record
                try:
                    status, answer = server.respond(self.path, headers, body)
                finally:
                    server._current.record = None
                record["status"] = status
                if isinstance(answer, Streamed):
                    self._send_stream(record, status, answer)
                else:
                    self._send_json(status, answer, record)

            def _send_json(self, status: int, answer: object, record: dict | None = None) -> None:
                data = json.dumps(answer).encode()
                # The caller may have given up (a client timeout, a killed worker).
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except DISCONNECTED:
                    self.close_connection = True
                    if record is not None:
                        record["disconnected"] = True
                if record is not None:
                    record["first_chunk_at"] = record["done_at"] = time.time()
                    record["chunks"] = 1

            def _send_stream(self, record: dict, status: int, answer: Streamed) -> None:
                chunked = self.protocol_version == "HTTP/1.1"
                pieces: Iterator[bytes] = iter(answer.pieces)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", answer.content_type)
                    self.send_header("Cache-Control", "no-cache")
                    if chunked:
                        self.send_header("Transfer-Encoding", "chunked")
                    else:
                        self.close_connection = True
                    self.end_headers()
                    for piece in pieces:
                        if not piece:
                            continue
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                        if record["first_chunk_at"] is None:
                            record["first_chunk_at"] = time.time()
                        record["chunks"] += 1
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except DropConnection:
                    self.close_connection = True
                except DISCONNECTED:
                    self.close_connection = True
                    record["disconnected"] = True
                finally:
                    with suppress(Exception):
                        pieces.close()  # type: ignore[attr-defined]
                    record["done_at"] = time.time()

            def log_message(self, format: str, *args) -> None:  # keep test output quiet
                pass

        self._httpd = _Server((host, port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def current_request(self) -> dict:
        """The record of the POST this thread is answering (inside `respond`)."""
        return self._current.record

    def record_fields(self) -> dict:
        """Extra keys (with their initial values) every request record carries."""
        return {}

    def respond(self, path: str, headers: dict, body: dict | None) -> tuple[int, object]:
        raise NotImplementedError

    def respond_get(self, path: str, query: dict[str, list[str]], headers: dict) -> tuple[int, object]:
        return 404, {"error": "not found"}

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
