"""A tiny HTTP server on 127.0.0.1 for download tests: byte ranges, dropped connections, a request log.

Bounded: it answers at most ``max_requests`` requests (then 503), each socket
times out after a few seconds, and the ``serve`` context manager shuts it down.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator


@dataclass
class Files:
    """What the server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)  # "/name" -> content
    drop: dict[str, list[int]] = field(default_factory=dict)  # "/name" -> bytes to send before cutting, per request
    ignore_range: bool = False
    max_requests: int = 200
    requests: list[tuple[str, str, dict]] = field(default_factory=list)  # (method, path, headers)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_folder(self, folder: Path) -> None:
        for p in sorted(Path(folder).iterdir()):
            if p.is_file():
                self.files["/" + p.name] = p.read_bytes()

    def gets(self, path: str | None = None) -> list[dict]:
        return [h for m, p, h in self.requests if m == "GET" and (path is None or p == path)]


class _Handler(BaseHTTPRequestHandler):
    timeout = 5
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        st: Files = self.server.state  # type: ignore[attr-defined]
        with st.lock:
            st.requests.append(("GET", self.path, dict(self.headers)))
            n = len(st.requests)
            drops = st.drop.get(self.path)
            cut = drops.pop(0) if drops else None
        if n > st.max_requests:
            self._plain(503, b"too many requests for this test server")
            return
        body = st.files.get(self.path)
        if body is None:
            self._plain(404, b"not found")
            return
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "") or "")
        if m and not st.ignore_range:
            start = int(m.group(1))
            end = int(m.group(2)) + 1 if m.group(2) else len(body)
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
            chunk = body[start:end]
        else:
            chunk = body
        self.send_response(status)
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + len(chunk) - 1}/{len(body)}")
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if cut is None:
            self.wfile.write(chunk)
            return
        self.wfile.write(chunk[:cut])  # then drop the connection part-way
        self.wfile.flush()
        self.close_connection = True

    def _plain(self, code: int, text: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)


@contextlib.contextmanager
def serve(state: Files | None = None) -> Iterator[tuple[str, Files]]:
    """Run the server in a thread; yield its base URL (``http://127.0.0.1:PORT``) and its state."""
    state = state or Files()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
