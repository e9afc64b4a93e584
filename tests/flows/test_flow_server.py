"""Scheduled retraining against a real `prefect server start` (SQLite in tmp, offline).

The deployment is served from a subprocess, as an operator would; a run is triggered through
the API and must complete with the pipeline's artifacts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from flows_support import TINY_SOURCE

from flows.deploy import DEPLOYMENT_NAME
from flows.pipeline import SUMMARY_KEY, TABLE_KEY
from support import env_without_prefect

pytestmark = pytest.mark.slow

CRON = "17 4 * * 2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(1)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tail}")


def _stop(proc: subprocess.Popen) -> int:
    """SIGTERM to the process group we started; SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


@pytest.fixture
def prefect_api(tmp_path):
    """`prefect server start` on a free port with its own PREFECT_HOME; yields the API URL."""
    port = _free_port()
    env = env_without_prefect(
        PREFECT_HOME=str(tmp_path / "prefect_home"), PREFECT_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING"
    )
    log = tmp_path / "server.log"
    prefect = Path(sys.executable).with_name("prefect")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    try:
        _wait(healthy, 120, "prefect server start", proc, log)
        yield {"url": url, "env": env, "log": log}
    finally:
        code = _stop(proc)
    assert code is not None


def test_served_deployment_has_schedule_and_limit_and_a_triggered_run_completes(prefect_api, ws_copy, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    script = textwrap.dedent(f"""
        from flows.deploy import serve_deployment
        serve_deployment({str(ws_copy)!r}, "synthetic", {TINY_SOURCE!r}, cron={CRON!r}, allow_synthetic=True)
    """)
    env = {**prefect_api["env"], "PREFECT_API_URL": prefect_api["url"], "PREFECT_LOGGING_LEVEL": "INFO"}
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        served = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with temporary_settings({PREFECT_API_URL: prefect_api["url"]}), get_client(sync_client=True) as client:

            def deployment():
                try:
                    return client.read_deployment_by_name(f"pneumo-pipeline/{DEPLOYMENT_NAME}")
                except Exception:
                    return None

            dep = _wait(deployment, 90, "the served deployment", served, log)
            assert [s.schedule.cron for s in dep.schedules] == [CRON]
            assert all(s.active for s in dep.schedules)
            limit = dep.global_concurrency_limit.limit if dep.global_concurrency_limit else dep.concurrency_limit
            assert limit == 1
            assert dep.concurrency_options.collision_strategy.value == "ENQUEUE"
            assert dep.parameters["workdir"] == str(ws_copy)

            run = client.create_flow_run_from_deployment(dep.id)
            final = _wait(
                lambda: (r := client.read_flow_run(run.id)).state.is_final() and r,
                240,
                "the triggered flow run",
                served,
                log,
            )
            assert final.state.is_completed(), f"{final.state.message}\n{log.read_text()[-3000:]}"
            keys = {
                a.key
                for a in client.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
                )
            }
            assert {TABLE_KEY, SUMMARY_KEY} <= keys
    finally:
        code = _stop(served)
    assert code is not None
    assert (ws_copy / "runs" / "summary.md").is_file()
