"""`pneumo serve --workers N`: a socket per worker (SO_REUSEPORT), a dead worker replaced, all stopped together."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import psutil
import pytest
from serve_support import LOOPBACK, free_port, serve

from pneumo.serving.workers import balanced, port_free

pytestmark = pytest.mark.skipif(not balanced(), reason="SO_REUSEPORT balancing is Linux-only")


def _workers(server) -> list[psutil.Process]:
    """The worker processes (the supervisor's children that serve; multiprocessing's tracker left out)."""
    out = []
    for child in psutil.Process(server.process.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:  # gone, or a zombie the supervisor has not reaped yet
            pass
    return out


def _connections_per_worker(server, n: int) -> list[int]:
    """Open n keep-alive connections, send one request on each, count the connections each worker holds."""
    port = int(server.url.rsplit(":", 1)[1])
    conns = [socket.create_connection((LOOPBACK, port)) for _ in range(n)]
    try:
        for conn in conns:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        return sorted(
            sum(1 for c in w.net_connections(kind="tcp") if c.laddr.port == port and c.raddr) for w in _workers(server)
        )
    finally:
        for conn in conns:
            conn.close()


def test_a_busy_port_is_refused_with_its_address():
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"{LOOPBACK}:{port}: cannot listen there"):
            port_free(LOOPBACK, port)
        with serve("--workers", "2", "--port", str(port), ready=False) as server:  # the last --port wins
            assert server.process.wait(timeout=60) == 2
            assert f"{port}: cannot listen there" in server.output()
    port_free(LOOPBACK, free_port())  # a free port passes


def test_connections_are_spread_over_the_workers():
    with serve("--workers", "2") as server:
        counts = _connections_per_worker(server, 32)
    assert len(counts) == 2 and sum(counts) == 32
    assert counts[0] >= 6, counts  # a shared socket put all 8 of a burst on one worker; hashing spreads 32


def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all():
    with serve("--workers", "2") as server:
        first = _workers(server)
        assert len(first) == 2
        first[0].send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            now = _workers(server)
            pids = {p.pid for p in now}
            if len(now) == 2 and first[0].pid not in pids:
                ready = [httpx.get(server.url + "/readyz").status_code for _ in range(20)]
                if all(code == 200 for code in ready):
                    break
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.3)
        assert "restarting it" in server.output()
        survivors = now
    for worker in survivors:  # serve() sent SIGTERM to the supervisor on the way out
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
