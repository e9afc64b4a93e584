"""`pneumo diff`: params, metrics (with the champion's) and curves between two commits of a real
git + DVC workspace."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from pneumo.core import proc
from pneumo.ops import diff as diff_mod
from pneumo.ops import workspace as workspace_mod
from support import REPO, TINY_PARAMS

pytestmark = pytest.mark.slow

# The params the session's `trained` fixture used (support.TINY_PARAMS, and its OOD set's xrays=2), so
# dvc.lock tells the truth. The report stage does not run here: params.yaml's report section stays.
TINY = copy.deepcopy(TINY_PARAMS)
TINY["oodset"] = {"xrays": 2}
del TINY["report"]


def _git(ws: Path, *args: str) -> str:
    return proc.git(ws, *args)


@pytest.fixture(scope="module")
def two_commits(tmp_path_factory, trained, synthetic_raw) -> dict:
    """Commit 1: a run (the session's trained outputs, recorded with `dvc commit`); commit 2: a
    changed evaluate param, `dvc repro evaluate`. The champion's metrics are fabricated."""
    ws = workspace_mod.create(tmp_path_factory.mktemp("diff") / "repo", TINY, source=REPO)
    _git(ws, "config", "user.email", "t@example.com")
    _git(ws, "config", "user.name", "t")
    shutil.copytree(synthetic_raw, ws / "data" / "raw")
    shutil.copytree(trained["prepared"], ws / "data" / "prepared")
    shutil.copytree(trained["root"] / "models" / "train", ws / "models" / "train")
    shutil.copytree(trained["ood"], ws / "data" / "ood")
    shutil.copytree(trained["root"] / "eval", ws / "eval")
    proc.dvc(ws, "repro", "check")  # params checked: the marker prepare depends on
    proc.dvc(ws, "commit", "-f", "prepare", "oodset", "train", "evaluate")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-qm", "run 1")
    old_roc = (ws / "eval" / "plots" / "roc_test.csv").read_text()
    old_metrics = json.loads((ws / "eval" / "metrics.json").read_text())

    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["evaluate"]["target_sensitivity"] = 0.6
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = proc.dvc(ws, "repro", "evaluate")
    assert "Running stage 'evaluate'" in out.stdout
    _git(ws, "add", "-A")
    _git(ws, "commit", "-qm", "run 2: lower target sensitivity")

    champion = json.loads((ws / "eval" / "metrics.json").read_text())
    champion["test"]["roc_auc"] = 0.5
    (ws / "champion").mkdir()
    (ws / "champion" / "metrics.json").write_text(json.dumps(champion))
    return {"ws": ws, "old_roc": old_roc, "old_metrics": old_metrics}


def test_diff_shows_the_param_and_metric_changes_with_the_champion(two_commits):
    ws = two_commits["ws"]
    result = diff_mod.diff("HEAD~1", ws)
    assert result["params"] == [{"param": "evaluate.target_sensitivity", "old": 0.95, "new": 0.6}]
    rows = {r["metric"]: r for r in result["metrics"]}
    assert rows["target_sensitivity"]["old"] == 0.95 and rows["target_sensitivity"]["new"] == 0.6
    assert rows["target_sensitivity"]["change"] == "-0.35"
    # The gate's metrics are always listed, with the champion's number beside them.
    assert rows["test.roc_auc"]["champion"] == 0.5
    assert rows["test.roc_auc"]["old"] == two_commits["old_metrics"]["test"]["roc_auc"]
    assert not any(key.startswith("params.") for key in rows)
    md = result["markdown"]
    assert "| evaluate.target_sensitivity | 0.95 | 0.6 |" in md
    assert "| metric | HEAD~1 | workspace | change | champion |" in md
    assert (ws / "diff" / "report.md").read_text() == md


def test_diff_draws_both_revisions_curves_as_pngs(two_commits):
    ws = two_commits["ws"]
    result = diff_mod.diff("HEAD~1", ws, out=ws / "pr-report")
    for name in ("roc", "pr"):
        png = result["pngs"][name]
        assert png == ws / "pr-report" / f"{name}_test.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"]({png.name})" in result["markdown"]
    # BASE's curve is a cached DVC output, not in git: it was read through DVC at that revision.
    base = diff_mod.read_curve(ws, "HEAD~1", "eval/plots/roc_test.csv")
    assert base is not None and base.to_csv(index=False) == two_commits["old_roc"]


def test_diff_command_prints_markdown_and_refuses_an_unknown_revision(two_commits):
    app = typer.Typer()
    app.command()(diff_mod.diff_command)
    runner = CliRunner()
    ok = runner.invoke(app, ["HEAD~1", "--repo", str(two_commits["ws"])])
    assert ok.exit_code == 0, ok.output
    assert "### Params" in ok.stdout and "evaluate.target_sensitivity" in ok.stdout
    bad = runner.invoke(app, ["no-such-rev", "--repo", str(two_commits["ws"])])
    assert bad.exit_code == 1
    assert "no-such-rev" in bad.output


def test_a_missing_curve_says_pull_only_where_a_remote_exists(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    proc.git(repo, "init", "-q")
    proc.dvc(repo, "init", "-q")
    hint = diff_mod.missing_curve_hint(repo)
    assert "no DVC remote is configured" in hint and "dvc repro" in hint and "dvc pull" not in hint
    proc.dvc(repo, "remote", "add", "-d", "storage", str(tmp_path / "storage"))
    hint = diff_mod.missing_curve_hint(repo)
    assert "dvc pull" in hint and "storage" in hint
