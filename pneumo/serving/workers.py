"""Worker processes that share the load: one listening socket each, bound with SO_REUSEPORT, so the kernel
spreads new connections over the workers.

uvicorn's own `--workers` lets every worker accept from one shared socket, and a worker that wakes first
accepts a whole burst of connections: here 8 keep-alive clients all landed on one of two workers (97% of
the load, the other idle). With a socket per worker, Linux hashes each connection to one of them. Where
SO_REUSEPORT is missing, uvicorn's supervisor runs instead. The supervisor restarts a worker that dies and
stops them all on SIGINT or SIGTERM.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import threading
from typing import Any

import uvicorn

log = logging.getLogger("pneumo.serve")

BACKLOG = 2048


def balanced() -> bool:
    """Whether this platform spreads connections over sockets sharing a port (Linux's SO_REUSEPORT)."""
    return hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_free(host: str, port: int) -> None:
    """OSError naming the address when something (another pneumo serve included) already listens there."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(f"{host}:{port}: cannot listen there ({exc.strerror or exc})") from None


def reuseport_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def _worker(options: dict[str, Any], sock: socket.socket) -> None:
    uvicorn.Server(uvicorn.Config(**options)).run(sockets=[sock])


def run(options: dict[str, Any], host: str, port: int, workers: int) -> None:
    """Serve `options` (uvicorn.Config's keyword arguments) on host:port with `workers` processes."""
    port_free(host, port)
    context = multiprocessing.get_context("spawn")
    sockets = [reuseport_socket(host, port) for _ in range(workers)]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def start(sock: socket.socket) -> multiprocessing.process.BaseProcess:
        process = context.Process(target=_worker, args=(options, sock), daemon=False)
        process.start()
        return process

    processes = [start(sock) for sock in sockets]
    log.info("%d workers on %s:%d, one socket each (SO_REUSEPORT)", workers, host, port)
    while not stop.wait(0.5):
        for i, process in enumerate(processes):
            if not process.is_alive():
                log.warning("worker %s exited with %s: restarting it", process.pid, process.exitcode)
                processes[i] = start(sockets[i])
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=15)
        if process.is_alive():
            process.kill()
            process.join()
    for sock in sockets:
        sock.close()
