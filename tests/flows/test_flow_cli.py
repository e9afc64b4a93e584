"""`python -m flows run|serve`: what they refuse before any stage or server, the workspace lock,
and Prefect's temporary server (slow to start, or orphaned by a SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from flows.__main__ import SourceChoice, _options, app, schedule_source
from pneumo.core.config import ScheduleParams
from support import REPO, env_without_prefect


def _flows(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _params(folder: Path, section: str, changes: dict) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw[section].update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


# ---------------------------------------------------------------- serve: the schedule names its data


def test_serve_without_a_source_refuses_to_start(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--workdir", str(tmp_path / "ws")])
    assert result.exit_code == 2
    assert "needs a data source" in result.output and "schedule.source" in result.output


def test_serve_refuses_synthetic_unless_allowed(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--workdir", str(tmp_path / "ws"), "--source", "synthetic"])
    assert result.exit_code == 2 and "--allow-synthetic" in result.output
    ws = _params(tmp_path / "ws2", "schedule", {"source": "synthetic"})  # from params.yaml alike
    result = CliRunner().invoke(app, ["serve", "--workdir", str(ws)])
    assert result.exit_code == 2 and "--allow-synthetic" in result.output
    assert schedule_source(ScheduleParams(), SourceChoice.synthetic, None, None, None, True) == ("synthetic", {})


def test_serve_refuses_a_bad_cron_or_time_zone_from_the_command(tmp_path):
    for option, value, key in (
        ("--cron", "0 25 * * *", "schedule.cron"),
        ("--timezone", "Mars/Base", "schedule.timezone"),
    ):
        result = CliRunner().invoke(app, ["serve", "--workdir", str(tmp_path), "--source", "none", option, value])
        assert result.exit_code == 2 and key in result.output and value in result.output


def test_schedule_source_comes_from_params_yaml_and_the_command_overrides_it():
    configured = ScheduleParams(source="url", url="https://example.org/x.zip", sha256="ab" * 32)
    assert schedule_source(configured, None, None, None, None, False) == (
        "url",
        {"url": "https://example.org/x.zip", "sha256": "ab" * 32},
    )
    assert schedule_source(configured, SourceChoice.local, Path("/data/xray"), None, None, False) == (
        "local",
        {"path": "/data/xray"},
    )
    with pytest.raises(ValueError, match="needs a data source"):
        schedule_source(ScheduleParams(), None, None, None, None, True)


def test_build_deployment_refuses_synthetic_unless_allowed(tmp_path):
    from flows.deploy import build_deployment

    with pytest.raises(ValueError, match="allow_synthetic"):
        build_deployment(tmp_path, "synthetic")
    deployment = build_deployment(tmp_path, "local", {"path": "/data"}, cron="0 4 * * 2", timezone="Europe/Berlin")
    assert deployment.parameters["source"] == "local"


# ---------------------------------------------------------------- run: refusals before anything runs


def test_url_source_passes_its_sha256_and_only_a_url_takes_one():
    assert _options(SourceChoice.url, None, "https://example.org/x.zip", 0, "ab" * 32) == {
        "url": "https://example.org/x.zip",
        "sha256": "ab" * 32,
    }
    from flows.pipeline import make_source

    assert make_source("url", {"url": "https://example.org/x.zip", "sha256": "ab" * 32}).sha256 == "ab" * 32
    result = CliRunner().invoke(app, ["run", "--source", "local", "--path", ".", "--sha256", "ab" * 32])
    assert result.exit_code == 2 and "--sha256" in result.output


def test_run_with_bad_params_fails_in_one_line_before_any_stage_or_server(tmp_path):
    ws = _params(tmp_path / "ws", "train", {"dropout": 1.5})
    (ws / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    started = time.monotonic()
    done = _flows("run", "--workdir", str(ws), "--source", "none", "--no-create", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "train.dropout" in done.stderr and "1.5" in done.stderr and str(ws / "params.yaml") in done.stderr
    assert time.monotonic() - started < 60  # no Prefect server was started
    bad_metric = _flows(
        "run", "--workdir", str(tmp_path / "ws2"), "--no-create", "--metric", "val.roc_acu", cwd=tmp_path
    )
    assert bad_metric.returncode == 2 and "val.roc_acu" in bad_metric.stderr and "--metric" in bad_metric.stderr


# ---------------------------------------------------------------- the temporary server and the lock (slow)


def test_the_flows_give_the_temporary_server_a_generous_start_up_time():
    env = env_without_prefect()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import flows.__main__\n"
            "from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as t\n"
            "print(t.value())",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=REPO,
    )
    assert done.stdout.strip() == "120", done.stderr  # Prefect's own default: 20 s


@pytest.mark.slow
def test_a_temporary_server_that_does_not_start_in_time_fails_in_one_line(tmp_path):
    env = env_without_prefect(
        PREFECT_HOME=str(tmp_path / "prefect_home"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1"
    )
    done = subprocess.run(
        [sys.executable, "-m", "flows", "run", "--workdir", str(tmp_path / "ws"), "--source", "none", "--no-create"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "did not start within 1 s" in lines[0]
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in lines[0] and "PREFECT_API_URL" in lines[0]
    assert not (tmp_path / "ws" / "dvc.yaml").exists()  # no stage ran


HOLDER = textwrap.dedent("""
    import sys, time
    from pneumo.ops import workspace
    from flows.server import prefect_api
    with workspace.lock(sys.argv[1]), prefect_api(echo=lambda line: print(line, flush=True)):
        print("ready", flush=True)
        time.sleep(300)
""")


@pytest.mark.slow
def test_a_second_run_on_a_locked_workspace_refuses_and_a_killed_holder_leaves_no_server(tmp_path):
    env = env_without_prefect(PREFECT_HOME=str(tmp_path / "prefect_home"))
    ws, log = tmp_path / "ws", tmp_path / "holder.log"
    with open(log, "w") as out:
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(ws)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 150
        while "ready" not in log.read_text() and holder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "ready" in log.read_text(), log.read_text()
        server = int(log.read_text().split("(pid ")[1].split(")")[0])
        assert psutil.pid_exists(server)

        second = _flows(
            "run", "--workdir", str(ws), "--source", "none", "--no-create", cwd=tmp_path, env=env, timeout=60
        )
        assert second.returncode == 2
        assert second.stderr.strip() == (
            f"error: workspace {ws.resolve()} is in use by another flow run (lock "
            f"{ws.resolve() / '.pneumo.lock'} held by pid {holder.pid}); wait for it "
            "to finish, or use another --workdir"
        )
    finally:
        holder.send_signal(signal.SIGKILL)  # as the OOM killer would: no exit hook runs
        holder.wait(timeout=30)
    deadline = time.monotonic() + 20
    while psutil.pid_exists(server) and psutil.Process(server).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"the temporary server (pid {server}) outlived its killed parent"
        time.sleep(0.5)
    from pneumo.ops import workspace

    with workspace.lock(ws):  # the kernel released the dead holder's lock
        assert (ws / ".pneumo.lock").read_text().strip() == str(os.getpid())
