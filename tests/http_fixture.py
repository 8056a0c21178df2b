"""A local HTTP server on 127.0.0.1 serving one directory, with routes that misbehave on purpose.

/files/<name>            the file, with Content-Length
/status/<code>/<name>    always answers <code>
/flaky/<n>/<name>        answers 503 to the first <n> requests, then serves the file
/truncate/<name>         promises the full Content-Length, sends half, then closes the connection
"""

from __future__ import annotations

import collections
import http.server
import threading
from pathlib import Path


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.requests.append(self.path)
        parts = self.path.lstrip("/").split("/")
        kind, rest = parts[0], parts[1:]
        if kind == "status":
            self._send_status(int(rest[0]))
        elif kind == "flaky":
            key = "/".join(rest)
            self.server.hits[key] += 1
            if self.server.hits[key] <= int(rest[0]):
                self._send_status(503)
            else:
                self._send_file(rest[1], truncate=False)
        elif kind == "files":
            self._send_file(rest[0], truncate=False)
        elif kind == "truncate":
            self._send_file(rest[0], truncate=True)
        else:
            self._send_status(404)

    def _send_status(self, code: int):
        body = f"status {code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, name: str, *, truncate: bool):
        path = self.server.root / name
        if not path.is_file():
            self._send_status(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if truncate else data)
        if truncate:
            self.wfile.flush()
            self.close_connection = True


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.requests: list[str] = []
        self.hits: collections.Counter = collections.Counter()


class LocalServer:
    """Start with `LocalServer(root)`, stop with `.close()`; `.url(name, route='files')` builds URLs."""

    def __init__(self, root: Path):
        self._server = _Server(Path(root))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def root(self) -> Path:
        return self._server.root

    @property
    def requests(self) -> list[str]:
        return self._server.requests

    def url(self, name: str, route: str = "files") -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{route}/{name}"

    def close(self):
        self._server.shutdown()
        self._server.server_close()
