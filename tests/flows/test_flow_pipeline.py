"""The `pipeline` flow against Prefect's test server and real `dvc repro` runs in temporary workspaces."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from flows.pipeline import SUMMARY_KEY, TABLE_KEY, fetch_task, pipeline
from pneumo.core import proc
from pneumo.ops import gate, workspace
from support import REPO

pytestmark = pytest.mark.slow

STAGES = workspace.stages(REPO)  # dvc.yaml's order; the flow must follow it, whatever stages there are


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _run_id(state):
    return state.state_details.flow_run_id


def _artifacts(flow_run_id) -> dict[str, object]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _client() as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def _task_runs(flow_run_id) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client() as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted(runs, key=lambda r: r.start_time or r.expected_start_time)


def _logs(flow_run_id) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs reach the API in batches; send what is still queued
    messages: list[str] = []
    with _client() as client:
        while True:  # the API pages its answers (200 a page)
            page = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                limit=200,
                offset=len(messages),
            )
            messages += [log.message for log in page]
            if len(page) < 200:
                return messages


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _set_champion_metric(root: Path, dotted: str, value: float) -> None:
    path = root / "champion" / "metrics.json"
    metrics = json.loads(path.read_text())
    node = metrics
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    path.write_text(json.dumps(metrics, indent=2))


def test_first_run_fetches_versions_reproduces_in_dag_order_and_promotes(flow_workspace):
    root, state = flow_workspace["root"], flow_workspace["state"]
    assert state.is_completed(), state.message
    assert "no champion yet" in state.message
    # Data versioned by fetch's `dvc add`, stages reproduced, champion = the challenger's files.
    assert yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"].endswith(".dir")
    assert set(yaml.safe_load((root / "dvc.lock").read_text())["stages"]) == set(STAGES)
    for name, src in gate.CHAMPION_SOURCES.items():
        assert (root / "champion" / name).read_bytes() == (root / src).read_bytes(), name
    provenance = json.loads((root / "champion" / gate.PROVENANCE_FILE).read_text())
    assert provenance["flow_run_id"] == str(_run_id(state))
    ignored = set((root / ".gitignore").read_text().splitlines())
    assert {"/champion/", "/runs/", "/diff/", "/.pneumo.lock"} <= ignored
    # One task per stage, one at a time, in dvc.yaml's order, after the fetch.
    names = [r.name for r in _task_runs(_run_id(state))]
    repro = [n for n in names if n.startswith("dvc repro ")]
    assert repro == [f"dvc repro {s}" for s in STAGES]
    core = ["prepare", "train", "evaluate", "export"]
    assert [s for s in STAGES if s in core] == core
    assert names[0] == "fetch synthetic"
    # Each stage's output reached Prefect's log, line by line.
    logs = _logs(_run_id(state))
    for stage in STAGES:
        assert any(m.startswith(f"[{stage}] Running stage '{stage}'") for m in logs), stage
    assert not [m for m in logs if "git add" in m or "To track the changes with git" in m]  # DVC autostages
    assert not [m for m in logs if "dvc push` to send" in m]  # the flow pushes itself where a remote exists
    # Artifacts: the gate table and the summary; the report file says where things are.
    artifacts = _artifacts(_run_id(state))
    assert {TABLE_KEY, SUMMARY_KEY} <= set(artifacts)
    table = (
        json.loads(artifacts[TABLE_KEY].data)
        if isinstance(artifacts[TABLE_KEY].data, str)
        else artifacts[TABLE_KEY].data
    )
    assert [row["metric"] for row in table] == list(gate.DEFAULT_METRICS) + list(gate.INFO_METRICS)
    assert all(row["verdict"].startswith("not gated") for row in table if row["metric"].startswith("test."))
    assert "PROMOTED" in artifacts[SUMMARY_KEY].data
    assert "SYNTHETIC" in (root / "runs" / "summary.md").read_text()


def _perfect_champion(root: Path) -> None:
    """A champion whose every validation probability (clean and shifted) is the label itself."""
    import pandas as pd

    path = root / "champion" / "predictions.csv"
    frame = pd.read_csv(path)
    truth = (frame["label"] == "PNEUMONIA").astype(float)
    for column in [c for c in frame.columns if c.startswith("probability")]:
        frame[column] = frame[column].where(frame[column].isna(), truth)
    frame.to_csv(path, index=False)
    _set_champion_metric(root, "val.brier", 0.0)


def test_worse_challenger_is_refused_on_the_validation_bootstrap_and_the_champion_left_byte_identical(ws_copy):
    _perfect_champion(ws_copy)
    before = _digests(ws_copy / "champion")

    state = pipeline(str(ws_copy), source="none", gate_metrics=["val.brier"], tolerance=0.0, return_state=True)

    assert state.is_failed()
    assert "REFUSED" in state.message and "val.brier" in state.message
    assert "paired patient bootstrap on validation" in state.message and "95% lower bound" in state.message
    assert _digests(ws_copy / "champion") == before
    assert not [p for p in ws_copy.iterdir() if p.name.startswith(".champion.")]  # no leftovers
    ran = [r.name for r in _task_runs(_run_id(state))]
    assert not any(n.startswith("promote") for n in ran)
    assert "REFUSED" in _artifacts(_run_id(state))[SUMMARY_KEY].data


def test_better_challenger_replaces_the_champion_and_is_pushed(ws_copy, tmp_path):
    remote = tmp_path / "dvc-remote"
    proc.dvc(ws_copy, "remote", "add", "-d", "store", str(remote))
    challenger = json.loads((ws_copy / "eval" / "metrics.json").read_text())
    _set_champion_metric(ws_copy, "test.roc_auc", challenger["test"]["roc_auc"] - 0.3)
    (ws_copy / "champion" / "model.h5").write_bytes(b"an older model")

    state = pipeline(str(ws_copy), source="none", return_state=True)

    assert state.is_completed(), state.message
    assert (ws_copy / "champion" / "model.h5").read_bytes() == (ws_copy / "models" / "model.h5").read_bytes()
    assert json.loads((ws_copy / "champion" / "metrics.json").read_text()) == challenger
    assert json.loads((ws_copy / "champion" / gate.PROVENANCE_FILE).read_text())["flow_run_id"] == str(_run_id(state))
    summary = (ws_copy / "runs" / "summary.md").read_text()
    assert "stages run: none (all up to date)" in summary  # nothing was out of date: DVC skipped all
    assert "dvc push: done" in summary
    assert "in sync" in proc.dvc(ws_copy, "status", "--cloud").stdout  # the remote has it all
    assert any(p.is_file() for p in remote.rglob("*"))


def _break_train(ws: Path) -> None:
    """Valid params that train cannot honour: a weights file that does not exist."""
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["train"]["weights"] = "missing/no_top.h5"
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _break_evaluate(ws: Path) -> None:
    """A bug in the stage's own code (a dvc.yaml dependency, so the stage reruns and fails)."""
    code = ws / "pneumo" / "stages" / "evaluate.py"
    code.write_text(code.read_text() + "\nraise RuntimeError('a bug in evaluate')\n")


@pytest.mark.parametrize("stage, breaker", [("train", _break_train), ("evaluate", _break_evaluate)])
def test_a_failing_stage_fails_the_run_and_leaves_previous_outputs_intact(ws_copy, stage, breaker):
    # eval/metrics.json and models/model_card.json are uncached outputs: DVC deletes them first.
    outputs = {
        p: (ws_copy / p).read_bytes()
        for p in (
            "models/train/model.keras",
            "eval/metrics.json",
            "eval/plots/roc_test.csv",
            "eval/predictions.csv",
            "models/model_card.json",
            "models/model.h5",
        )
    }
    champion = _digests(ws_copy / "champion")
    breaker(ws_copy)

    state = pipeline(str(ws_copy), source="none", return_state=True)

    assert state.is_failed()
    assert f"stage '{stage}' failed" in state.message
    assert "previous outputs restored (dvc checkout: ok)" in state.message
    for path, data in outputs.items():
        assert (ws_copy / path).read_bytes() == data, path
    assert _digests(ws_copy / "champion") == champion
    ran = [r.name for r in _task_runs(_run_id(state))]
    later = STAGES[STAGES.index(stage) + 1]
    assert f"dvc repro {stage}" in ran and f"dvc repro {later}" not in ran


def test_invalid_params_fail_the_run_before_any_stage(ws_copy):
    lock = (ws_copy / "dvc.lock").read_bytes()
    params = yaml.safe_load((ws_copy / "params.yaml").read_text())
    params["evaluate"]["calibration_bins"] = 1000
    (ws_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    state = pipeline(str(ws_copy), source="none", return_state=True)

    assert state.is_failed()
    assert "evaluate.calibration_bins" in state.message and "1000" in state.message
    assert not [r.name for r in _task_runs(_run_id(state)) if r.name.startswith("dvc repro")]
    assert (ws_copy / "dvc.lock").read_bytes() == lock


class FlakyArchive(BaseHTTPRequestHandler):
    """Serves one zip; the first `failures` requests get HTTP 500."""

    body = b""
    failures = 2
    seen: list[int] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append(len(type(self).seen) + 1)
        if len(type(self).seen) <= self.failures:
            self.send_error(500, "try again")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


def _zip_of(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"chest_xray/{path.relative_to(folder).as_posix()}")
    return buf.getvalue()


def test_fetch_that_fails_twice_is_retried_to_success(prefect_server, synthetic_raw, tmp_path):
    handler = type("Handler", (FlakyArchive,), {"body": _zip_of(synthetic_raw), "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        root = workspace.create(tmp_path / "ws", source=Path(__file__).resolve().parents[2])
        url = f"http://127.0.0.1:{server.server_address[1]}/chest_xray.zip"
        state = fetch_task(retries=3, retry_delay=0.05)(str(root), "url", {"url": url}, return_state=True)
        seen = list(handler.seen)
        # The flow's --sha256 reaches the download: a wrong pin fails the fetch.
        pinned = fetch_task(retries=0)(str(root), "url", {"url": url, "sha256": "0" * 64}, return_state=True)
    finally:
        server.shutdown()
        server.server_close()
    assert state.is_completed(), state.message
    assert seen == [1, 2, 3]
    with _client() as client:
        run = client.read_task_run(state.state_details.task_run_id)
    assert run.run_count == 3
    summary = state.result()
    assert summary["total"] == 80 and summary["source"] == "url"
    assert pinned.is_failed() and "sha256 mismatch" in pinned.message
    assert yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"] == summary["dvc_md5"]
    assert (root / "data" / "raw" / "train" / "PNEUMONIA").is_dir()


def test_run_command_prints_where_the_model_metrics_and_report_are(ws_copy):
    from typer.testing import CliRunner

    from flows.__main__ import app

    result = CliRunner().invoke(app, ["run", "--workdir", str(ws_copy), "--source", "none", "--no-create"])
    assert result.exit_code == 0, result.output
    for line in (
        f"model:    {ws_copy / 'models/model.h5'}",
        f"metrics:  {ws_copy / 'eval/metrics.json'}",
        f"champion: {ws_copy / 'champion'}",
        f"report:   {ws_copy / 'reports/index.html'}",
        f"run summary: {ws_copy / 'runs/summary.md'}",
    ):
        assert line in result.stdout
    # An equal challenger is "not worse": promoted again, the champion now from this run.
    assert "not worse than the champion" in result.stdout
    refused = CliRunner().invoke(
        app, ["run", "--workdir", str(ws_copy), "--source", "none", "--no-create", "--metric", "test.roc_auc"]
    )
    assert refused.exit_code == 2 and "test is reported, never gated" in refused.output
