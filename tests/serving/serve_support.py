"""Running `pneumo serve` for real in tests: a subprocess on a free loopback port, waited on until ready."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from support import REAL_DATA, env_without_prefect

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        """What the server printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")


def wait_ready(server: Server, timeout: float) -> None:
    """Until /readyz answers 200; RuntimeError with the server's output if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"pneumo serve exited with {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"pneumo serve not ready after {timeout:.0f} s:\n{server.output()}")


@contextmanager
def serve(*args: str, env: dict[str, str] | None = None, timeout: float = 120, ready: bool = True) -> Iterator[Server]:
    """`python -m pneumo serve --port <free> *args` as a real process; stopped (and reaped) on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pneumo-serve-test-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "pneumo", "serve", "--port", str(port), *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env_without_prefect(**(env or {})),
            )
            server = Server(f"http://{LOOPBACK}:{port}", process, log)
            try:
                if ready:
                    wait_ready(server, timeout)
                yield server
            finally:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def real_xrays(n: int, split: str = "test") -> list[Path]:
    """`n` real X-rays of ../shared, alternating NORMAL and PNEUMONIA while both last, in a fixed order."""
    normal = sorted((REAL_DATA / split / "NORMAL").glob("*.jpeg"))
    pneumonia = sorted((REAL_DATA / split / "PNEUMONIA").glob("*.jpeg"))
    mixed = [p for pair in zip(normal, pneumonia, strict=False) for p in pair]
    rest = normal[len(pneumonia) :] + pneumonia[len(normal) :]
    return (mixed + rest)[:n]
