"""The whole DAG through `dvc repro` in a real, temporary git + DVC repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow


def _run(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, synthetic_raw, keras_home) -> Path:
    """A fresh git + DVC repo holding pneumo's code, DAG and tiny params, on synthetic data."""
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(REPO / "pneumo", ws / "pneumo", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "dvc.yaml", ws / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["image_size"] = 96
    params["train"].update(batch_size=16, patience=0)
    params["train"]["frozen"]["epochs"] = 1
    params["train"]["finetune"].update(epochs=1, layers=10)
    params["evaluate"]["bootstrap"] = 20
    params["prepare"]["val_fraction"] = 0.2
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(synthetic_raw, ws / "data" / "raw")
    _run(ws, "git", "init", "-q")
    _run(ws, "dvc", "init", "-q")
    _run(ws, "dvc", "config", "core.analytics", "false")
    return ws


@pytest.fixture(scope="module")
def first_repro(workspace) -> str:
    return _run(workspace, "dvc", "repro")


def test_repro_runs_every_stage_and_writes_the_outputs(workspace, first_repro):
    for stage in ("prepare", "train", "evaluate", "export"):
        assert f"Running stage '{stage}'" in first_repro
    for path in ("data/prepared/manifest.csv", "models/train/model.keras", "eval/metrics.json",
                 "models/model.h5", "models/model_card.json", "dvc.lock"):
        assert (workspace / path).is_file(), path
    metrics = json.loads((workspace / "eval" / "metrics.json").read_text())
    card = json.loads((workspace / "models" / "model_card.json").read_text())
    assert card["operating_threshold"] == metrics["operating_threshold"]
    assert metrics["synthetic"] is True and "SYNTHETIC" in metrics["note"]
    shown = _run(workspace, "dvc", "metrics", "show", "--json")
    assert "operating_threshold" in shown


def test_second_repro_does_nothing(workspace, first_repro):
    out = _run(workspace, "dvc", "repro")
    assert "Running stage" not in out
    assert "up to date" in _run(workspace, "dvc", "status")


def test_changing_one_param_reruns_only_what_depends_on_it(workspace, first_repro):
    lock_before = yaml.safe_load((workspace / "dvc.lock").read_text())
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["evaluate"]["target_sensitivity"] = 0.9
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(workspace, "dvc", "repro")
    assert "Running stage 'evaluate'" in out
    assert "Running stage 'prepare'" not in out and "Running stage 'train'" not in out
    lock_after = yaml.safe_load((workspace / "dvc.lock").read_text())
    assert lock_after["stages"]["train"] == lock_before["stages"]["train"]
    metrics = json.loads((workspace / "eval" / "metrics.json").read_text())
    assert metrics["target_sensitivity"] == 0.9
