"""Fixtures for pneumo.fetch: small real JPEGs, archives, a real HTTP server on 127.0.0.1 and
real git + DVC repositories in tmp folders."""

from __future__ import annotations

import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pneumo.fetch import dvc

os.environ["DVC_NO_ANALYTICS"] = "1"


class ArchiveHandler(BaseHTTPRequestHandler):
    """Serves `files`; honours Range unless told not to; can cut a body short (once or always)."""

    files: dict[str, bytes] = {}
    cut: dict[str, str] = {}  # path -> "once" | "always"
    no_range: set[str] = set()
    requests: list[tuple[str, str | None]] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        type(self).requests.append((path, rng))
        data = self.files.get(path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng and path not in self.no_range and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        if path not in self.no_range:
            self.send_header("Accept-Ranges", "bytes")
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        mode = self.cut.get(path)
        if mode == "always" or (mode == "once" and start == 0 and not any(
                p == path for p, _ in type(self).requests[:-1])):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1 (random port) in a thread; yields (base_url, handler class)."""
    handler = type("Handler", (ArchiveHandler,), {"files": {}, "cut": {}, "no_range": set(), "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def git_dvc_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run(["git", "config", "user.email", "t@example.com"], cwd=path, check=True)
    subprocess.run(["git", "config", "user.name", "t"], cwd=path, check=True)
    dvc.init(path)
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real git + DVC repository (analytics off)."""
    return git_dvc_repo(tmp_path / "repo")
