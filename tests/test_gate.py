"""pneumo.gate: the champion/challenger comparison (pure) and the champion folder's replacement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pneumo import gate


def metrics(roc=0.95, recall=0.97, spec=0.6, pr=0.96, brier=0.1) -> dict:
    return {"operating_threshold": 0.4,
            "test": {"roc_auc": roc, "pr_auc": pr, "brier": brier,
                     "at_operating": {"recall": recall, "specificity": spec, "accuracy": 0.8}}}


def test_no_champion_promotes_the_first_model():
    decision = gate.compare(metrics(), None)
    assert decision.promote and "no champion" in decision.reason
    assert [r.metric for r in decision.rows] == list(gate.DEFAULT_METRICS)


def test_better_or_equal_challenger_is_promoted():
    assert gate.compare(metrics(roc=0.96), metrics()).promote
    assert gate.compare(metrics(), metrics()).promote


def test_worse_within_tolerance_passes_beyond_it_fails():
    assert gate.compare(metrics(recall=0.961), metrics(recall=0.97), tolerance=0.01).promote
    refused = gate.compare(metrics(recall=0.95), metrics(recall=0.97), tolerance=0.01)
    assert not refused.promote
    assert [r.metric for r in refused.failures] == ["test.at_operating.recall"]
    assert "test.at_operating.recall 0.9700 -> 0.9500" in refused.reason
    assert "worse by 0.0200 > 0.01" in refused.markdown()


def test_the_exact_tolerance_boundary_passes():
    assert gate.compare(metrics(roc=0.94), metrics(roc=0.95), tolerance=0.01).promote


def test_only_the_gated_metrics_count():
    worse_spec = metrics(spec=0.1)
    assert gate.compare(worse_spec, metrics(), metrics=["test.roc_auc"]).promote
    assert not gate.compare(worse_spec, metrics(), metrics=["test.roc_auc", "test.at_operating.specificity"]).promote


def test_lower_is_better_for_brier():
    assert not gate.compare(metrics(brier=0.2), metrics(brier=0.1), metrics=["test.brier"]).promote
    assert gate.compare(metrics(brier=0.05), metrics(brier=0.1), metrics=["test.brier"]).promote


def test_a_missing_or_null_challenger_metric_fails_a_missing_champion_metric_passes():
    challenger = metrics()
    challenger["test"]["roc_auc"] = None
    refused = gate.compare(challenger, metrics())
    assert not refused.promote and "test.roc_auc missing" in refused.reason
    assert "| test.roc_auc | 0.9500 | - | - | missing in the challenger |" in refused.markdown()
    assert not gate.compare(challenger, None).promote
    champion = metrics()
    del champion["test"]["pr_auc"]
    assert gate.compare(metrics(), champion).promote


def test_bad_settings_are_refused_with_the_key():
    with pytest.raises(ValueError, match="gate.metrics"):
        gate.compare(metrics(), metrics(), metrics=[])
    with pytest.raises(ValueError, match="gate.tolerance"):
        gate.compare(metrics(), metrics(), tolerance=-0.1)


def test_decision_round_trips_through_a_small_dict():
    d = gate.compare(metrics(roc=0.5), metrics()).as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["promote"] is False and d["rows"][0]["worse_by"] == pytest.approx(0.45)


def _challenger(ws: Path, model: bytes = b"new model") -> Path:
    (ws / "models").mkdir(parents=True, exist_ok=True)
    (ws / "eval").mkdir(exist_ok=True)
    (ws / "models" / "model.h5").write_bytes(model)
    (ws / "models" / "model_card.json").write_text('{"card": 1}')
    (ws / "eval" / "metrics.json").write_text(json.dumps(metrics()))
    return ws


def test_promote_replaces_the_champion_folder_whole(tmp_path):
    ws = _challenger(tmp_path)
    (ws / "champion").mkdir()
    (ws / "champion" / "model.h5").write_bytes(b"old model")
    (ws / "champion" / "stale.txt").write_text("from an older champion")
    target = gate.promote(ws, provenance={"flow_run_id": "abc"})
    assert target == ws / "champion"
    assert (target / "model.h5").read_bytes() == b"new model"
    assert not (target / "stale.txt").exists()
    assert gate.read_champion(target) == metrics()
    assert json.loads((target / gate.PROVENANCE_FILE).read_text())["flow_run_id"] == "abc"
    assert sorted(p.name for p in ws.iterdir()) == ["champion", "eval", "models"]  # no temporary folders left


def test_promote_without_the_challenger_files_leaves_the_champion_untouched(tmp_path):
    ws = _challenger(tmp_path)
    (ws / "models" / "model.h5").unlink()
    (ws / "champion").mkdir()
    (ws / "champion" / "model.h5").write_bytes(b"old model")
    with pytest.raises(FileNotFoundError, match="model.h5"):
        gate.promote(ws)
    assert [p.name for p in (ws / "champion").iterdir()] == ["model.h5"]
    assert (ws / "champion" / "model.h5").read_bytes() == b"old model"
    assert gate.read_champion(ws / "champion") is None
