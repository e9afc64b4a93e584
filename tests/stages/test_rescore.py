"""Re-scoring recorded runs from their cached models: a run recorded before evaluate measured the
shift is scored from the model DVC cached for it; one whose model is gone, or that was prepared
differently, is left as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pneumo.core import proc
from pneumo.core.config import as_dict
from pneumo.core.tables import flatten
from pneumo.ops.experiments import select
from pneumo.stages.rescore import backfill_shift

pytestmark = pytest.mark.slow


def run(cwd: Path, *cmd: str) -> str:
    return proc.run(cmd, cwd).stdout


def test_backfill_scores_old_runs_from_their_cached_model(trained, tmp_path):
    ws = tmp_path / "repo"
    (ws / "models" / "train").mkdir(parents=True)
    run(ws, "git", "init", "-q")
    run(ws, "git", "config", "user.email", "t@example.com")
    run(ws, "git", "config", "user.name", "t")
    run(ws, "dvc", "init", "-q")
    params = json.loads(json.dumps(as_dict(trained["params"])))  # tuples as lists, as YAML writes them
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(trained["model"], ws / "models" / "train" / "model.keras")
    run(ws, "dvc", "add", "-q", "models/train")
    run(ws, "git", "add", "-A")
    run(ws, "git", "commit", "-qm", "a run")
    rev = run(ws, "git", "rev-parse", "HEAD").strip()
    shutil.rmtree(ws / "models")  # only the cache holds the model now

    metrics = {k: v for k, v in trained["metrics"].items() if k != "val_shift"}
    base = {"rev": rev, "params": flatten(params), "metrics": metrics}
    records = [
        {**base, "name": "old", "run": "1"},
        {**base, "name": "gone", "run": "2", "rev": "f" * 40},
        {**base, "name": "other-prep", "run": "3", "params": {**base["params"], "prepare.seed": 99}},
    ]
    out = backfill_shift(ws, records, trained["prepared"])
    assert [r["name"] for r in out] == ["old", "gone", "other-prep"]
    scored = out[0]["val_shift"]
    expected = trained["metrics"]["val_shift"]
    assert scored["source"].startswith("backfilled")
    assert scored["threshold"] == expected["threshold"]
    assert scored["roc_auc"] == pytest.approx(expected["roc_auc"], abs=1e-6)
    assert "val_shift" not in out[1] and "val_shift" not in out[2]
    assert out[0]["run"] == "1" and out[0]["metrics"] is metrics  # the run's identity is untouched
    assert select(out, base["params"])["name"] == "old"
    assert backfill_shift(ws, out, trained["prepared"])[0] is out[0]  # scored once
