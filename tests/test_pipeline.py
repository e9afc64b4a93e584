"""The whole DAG through `dvc repro` in a real, temporary git + DVC repository."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from pneumo.core import proc
from pneumo.ops import workspace as workspace_mod
from support import REPO, TINY_PARAMS

pytestmark = pytest.mark.slow


def _run(cwd: Path, *cmd: str) -> str:
    done = proc.run(cmd, cwd, tail=4000)
    return done.stdout + done.stderr


# The tests' tiny params (tests/support.py), with fewer bootstrap resamples.
TINY = copy.deepcopy(TINY_PARAMS)
TINY["evaluate"]["bootstrap"] = 20


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, synthetic_raw, keras_home) -> Path:
    """A fresh git + DVC repo holding pneumo's code, DAG and tiny params, on synthetic data."""
    ws = workspace_mod.create(tmp_path_factory.mktemp("ws") / "repo", TINY, source=REPO)
    shutil.copytree(synthetic_raw, ws / "data" / "raw")
    return ws


@pytest.fixture(scope="module")
def first_repro(workspace) -> str:
    return _run(workspace, "dvc", "repro")


def test_repro_runs_every_stage_and_writes_the_outputs(workspace, first_repro):
    for stage in ("check", "prepare", "oodset", "train", "evaluate", "export", "report"):
        assert f"Running stage '{stage}'" in first_repro
    for path in (
        "data/prepared/manifest.csv",
        "data/ood/manifest.csv",
        "models/train/model.keras",
        "eval/ood_stats.npz",
        "models/ood_stats.npz",
        "eval/metrics.json",
        "models/model.h5",
        "models/model_int8.tflite",
        "models/model_card.json",
        "reports/index.html",
        "dvc.lock",
    ):
        assert (workspace / path).is_file(), path
    metrics = json.loads((workspace / "eval" / "metrics.json").read_text())
    card = json.loads((workspace / "models" / "model_card.json").read_text())
    assert card["operating_threshold"] == metrics["operating_threshold"] == card["decision"]["threshold"]
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


def test_a_second_training_in_a_new_process_reproduces_the_metrics(workspace, first_repro):
    before = json.loads((workspace / "eval" / "metrics.json").read_text())
    weights_before = (workspace / "models" / "train" / "history.csv").read_text()
    out = _run(workspace, "dvc", "repro", "--force", "--single-item", "train")
    assert "Running stage 'train'" in out
    _run(workspace, "dvc", "repro")
    assert (workspace / "models" / "train" / "history.csv").read_text() == weights_before
    assert json.loads((workspace / "eval" / "metrics.json").read_text()) == before


def test_a_bad_param_stops_repro_before_any_output_is_removed(workspace, first_repro):
    params_file = workspace / "params.yaml"
    good = params_file.read_text()
    model = workspace / "models" / "train" / "model.keras"
    stamp = model.stat().st_mtime_ns
    params = yaml.safe_load(good)
    params["train"]["dropout"] = 2.0
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        with pytest.raises(RuntimeError) as failed:
            _run(workspace, "dvc", "repro")
        assert "train.dropout = 2.0" in str(failed.value)
        assert "Running stage 'train'" not in str(failed.value)
        assert model.is_file() and model.stat().st_mtime_ns == stamp
    finally:
        params_file.write_text(good)
    _run(workspace, "dvc", "repro")
    assert "up to date" in _run(workspace, "dvc", "status")
