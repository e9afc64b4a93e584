"""The Prefect API a command reports to: PREFECT_API_URL, or Prefect's temporary local server.

The temporary server is started here, before the flow, so that a slow start fails with one line
that says what to do, and so that a watchdog can stop it if this process is killed (SIGKILL runs
no atexit hook, and the orphaned server would keep running).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"  # its default is set in flows/__init__.py


class ServerUnavailable(RuntimeError):
    """Prefect's temporary server did not come up."""


@contextmanager
def prefect_api(echo: Callable[[str], None] = print) -> Iterator[str]:
    """Yield the API URL the flow will use; start (and watch) the temporary server when none is set."""
    # Prefect is imported when a command runs (seconds), so refusals and --help come at once.
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    timeout = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
    server = SubprocessASGIServer()  # the instance Prefect's own clients reuse
    started = time.monotonic()
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()
        raise ServerUnavailable(
            f"Prefect's temporary server did not start within {timeout} s ({str(exc).splitlines()[0][:120]}): "
            f"raise {STARTUP_TIMEOUT_ENV}, or run `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        ) from None
    assert server.server_process is not None
    pid = server.server_process.pid
    _watch(pid)
    echo(f"Prefect temporary server {server.api_url} (pid {pid}) started in {time.monotonic() - started:.1f} s")
    # Prefect's own exit hook stops the server after its log and event workers have flushed; the
    # watchdog acts only if this process dies without running it, and exits on its own after.
    yield server.api_url


def _watch(server_pid: int) -> subprocess.Popen:
    """A tiny process that kills the server once this process is gone, however it died."""
    import psutil  # a DVC dependency; only needed once a server is started

    created = psutil.Process(server_pid).create_time()
    return subprocess.Popen(
        [sys.executable, "-m", "flows.server", str(os.getpid()), str(server_pid), repr(created)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # its own session: a Ctrl-C to the terminal does not stop it


def watchdog(parent: int, server: int, created: float, poll: float = 0.5) -> None:
    """Wait for `parent` to exit, then SIGKILL `server` if it is still the process that was started."""
    import psutil  # inside: only the watchdog process needs it

    try:
        watched = psutil.Process(parent)
        while watched.is_running() and watched.status() != psutil.STATUS_ZOMBIE:
            time.sleep(poll)
    except psutil.NoSuchProcess:
        pass
    try:
        proc = psutil.Process(server)
        if abs(proc.create_time() - created) < 0.01:  # not a new process that reused the pid
            proc.kill()  # SIGKILL: the orphaned server does not stop on SIGTERM
    except psutil.NoSuchProcess:
        pass


if __name__ == "__main__":  # pragma: no cover - run by _watch
    watchdog(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
