"""A loopback HTTP server that speaks the parts of the Hugging Face Hub's file protocol that
``hf_hub_download`` uses, plus plain file URLs and a PEP 503 "simple" index for pip.

Routes:

- ``HEAD|GET /{repo_id}/resolve/{revision}/{filename}`` (and ``/{type}s/{repo_id}/...`` for
  datasets and spaces), answering with ``X-Repo-Commit``, ``ETag``, ``Content-Length`` and
  ``Accept-Ranges``, and honouring ``Range``;
- ``GET /files/{name}``: plain downloads with ``Range`` support;
- ``GET /simple/{project}/`` and ``/packages/{wheel}``: a PEP 503 index serving wheels.

Faults can be injected per path: drop the connection after N bytes (once), or count requests.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Fault:
    """Drop the connection after ``after_bytes`` of the body, ``times`` times."""

    after_bytes: int
    times: int = 1


@dataclass
class HubState:
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, method: str, path_part: str) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and path_part in p)

    def ranges(self, path_part: str) -> list[str]:
        with self.lock:
            return [r for m, p, r in self.requests if m == "GET" and path_part in p and r]


_RESOLVE = re.compile(r"^/(?:(?:datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class _Handler(BaseHTTPRequestHandler):
    server: Any
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # silence test output
        return

    @property
    def state(self) -> HubState:
        return self.server.state

    def _key(self) -> str | None:
        path = self.path.split("?", 1)[0]
        match = _RESOLVE.match(path)
        if match:
            prefix = path.split("/resolve/")[0]
            return f"{prefix}/{match.group('rev')}/{match.group('file')}"
        if path.startswith(("/files/", "/packages/")):
            return path
        return None

    def _record(self, method: str) -> None:
        with self.state.lock:
            self.state.requests.append((method, self.path, self.headers.get("Range")))

    def _simple_index(self) -> bool:
        match = re.match(r"^/simple/(?P<project>[^/]+)/?$", self.path)
        if not match:
            return False
        project = match.group("project").lower().replace("_", "-")
        links = []
        for key, data in self.state.files.items():
            if key.startswith("/packages/"):
                wheel = key.rsplit("/", 1)[1]
                if wheel.split("-")[0].lower().replace("_", "-") == project:
                    digest = hashlib.sha256(data).hexdigest()
                    links.append(f'<a href="/packages/{wheel}#sha256={digest}">{wheel}</a>')
        body = ("<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>").encode()
        self.send_response(200 if links else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return True

    def _headers_for(self, key: str, data: bytes, status: int, start: int, end: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()

    def _serve(self, head: bool) -> None:
        self._record("HEAD" if head else "GET")
        if not head and self._simple_index():
            return
        key = self._key()
        data = self.state.files.get(key) if key else None
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        start, end, status = 0, len(data), 200
        range_header = self.headers.get("Range")
        if range_header and not head:
            match = re.match(r"bytes=(\d+)-(\d*)", range_header)
            if match:
                start = int(match.group(1))
                end = int(match.group(2)) + 1 if match.group(2) else len(data)
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        self._headers_for(key, data, status, start, end)
        if head:
            return
        body = data[start:end]
        fault = self.state.faults.get(key)
        if fault is not None and fault.times > 0:
            with self.state.lock:
                fault.times -= 1
            self.wfile.write(body[: fault.after_bytes])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)


class HubServer:
    """Start with ``with HubServer() as hub:``; ``hub.url`` is the endpoint."""

    def __init__(self) -> None:
        self.state = HubState()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.state = self.state  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_hub_file(self, repo_id: str, filename: str, data: bytes, *, revision: str = "main", repo_type: str | None = None) -> str:
        prefix = f"/{repo_type}s/{repo_id}" if repo_type else f"/{repo_id}"
        self.state.files[f"{prefix}/{revision}/{filename}"] = data
        return f"{prefix}/{revision}/{filename}"

    def add_file(self, name: str, data: bytes) -> str:
        self.state.files[f"/files/{name}"] = data
        return f"{self.url}/files/{name}"

    def add_wheel(self, filename: str, data: bytes) -> None:
        self.state.files[f"/packages/{filename}"] = data

    def fail_after(self, key_or_url: str, after_bytes: int, times: int = 1) -> None:
        key = key_or_url.replace(self.url, "")
        self.state.faults[key] = Fault(after_bytes, times)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
