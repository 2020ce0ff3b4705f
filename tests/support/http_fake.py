"""A tiny JSON HTTP server on 127.0.0.1 (ephemeral port) for speaking real protocols in tests."""

from __future__ import annotations

import json
import threading
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JSONServer:
    """Subclasses implement `respond(path, headers, body) -> (status, json_body)`."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = None
                headers = {name.lower(): value for name, value in self.headers.items()}
                with server._lock:
                    server.requests.append(
                        # `client` is the caller's (host, port): which process sent it can be found.
                        {
                            "path": self.path,
                            "headers": headers,
                            "body": body,
                            "raw": raw,
                            "client": self.client_address,
                        }
                    )
                status, answer = server.respond(self.path, headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                # The caller may have given up (a client timeout, a killed worker).
                with suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def log_message(self, format: str, *args) -> None:  # keep test output quiet
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def respond(self, path: str, headers: dict, body: dict | None) -> tuple[int, dict]:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
