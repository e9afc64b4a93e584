"""Fixtures for pneumo.data.fetch: small real JPEGs, archives, a real HTTP server on 127.0.0.1 and
real git + DVC repositories in tmp folders."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pneumo.data.fetch import dvc


class ArchiveHandler(BaseHTTPRequestHandler):
    """Serves `files`; honours Range unless told not to; can cut a body short (once or always),
    redirect, or stream a body without Content-Length (counting what the client took)."""

    files: dict[str, bytes] = {}
    cut: dict[str, str] = {}  # path -> "once" | "always"
    no_range: set[str] = set()
    redirects: dict[str, str] = {}  # path -> Location of a 302
    no_length: set[str] = set()  # close-delimited body, no Content-Length
    sent: dict[str, int] = {}  # path -> bytes written before the client hung up (no_length paths)
    requests: list[tuple[str, str | None]] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        type(self).requests.append((path, rng))
        if path in self.redirects:
            self.send_response(302)
            self.send_header("Location", self.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
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
        if path in self.no_length:
            self._stream(path, body)
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        mode = self.cut.get(path)
        if mode == "always" or (
            mode == "once" and start == 0 and not any(p == path for p, _ in type(self).requests[:-1])
        ):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _stream(self, path: str, body: bytes) -> None:
        """Send `body` close-delimited (HTTP/1.0, no Content-Length), as far as the client reads."""
        self.end_headers()
        sent = 0
        try:
            for i in range(0, len(body), 1 << 16):
                self.wfile.write(body[i : i + (1 << 16)])
                sent += len(body[i : i + (1 << 16)])
        except (BrokenPipeError, ConnectionResetError):
            pass
        type(self).sent[path] = sent
        self.close_connection = True


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1 (random port) in a thread; yields (base_url, handler class)."""
    yield from _serve()


@pytest.fixture
def https_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The same server over TLS, with a self-signed certificate for 127.0.0.1 that requests trusts
    through REQUESTS_CA_BUNDLE; yields (base_url, handler class)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: cannot make a certificate for the https server")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    yield from _serve(context)


def _serve(tls: ssl.SSLContext | None = None):
    handler = type(
        "Handler",
        (ArchiveHandler,),
        {"files": {}, "cut": {}, "no_range": set(), "redirects": {}, "no_length": set(), "sent": {}, "requests": []},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}", handler
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
    """A real git + DVC repository (analytics off: pneumo.core.proc and `dvc.init`)."""
    return git_dvc_repo(tmp_path / "repo")
