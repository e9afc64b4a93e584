"""package: the model pip installs is the one the committed card and metrics describe, checked file by file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pneumo.core.io import sha256_file
from pneumo.core.paths import INT8_FILE, METRICS, MODEL_CARD, MODEL_H5, OOD_STATS_FILE, PACKAGED_DIR, SHIPPED_CARD
from pneumo.stages.package import PACKAGED_FILES, README, metric_mismatches, package, recorded_sha256
from support import REPO

PACKAGED = REPO / PACKAGED_DIR


@pytest.mark.skipif(not (PACKAGED / MODEL_CARD).is_file(), reason="this checkout ships no packaged model")
def test_the_shipped_card_describes_the_shipped_files_and_the_committed_metrics():
    card = json.loads((PACKAGED / MODEL_CARD).read_text())
    metrics = json.loads((REPO / METRICS).read_text())
    assert metric_mismatches(card, metrics) == []
    assert card["metrics"]["test"]["roc_auc"] == metrics["test"]["roc_auc"]
    assert card == json.loads((REPO / SHIPPED_CARD).read_text())  # the card export wrote, unchanged
    for name in (INT8_FILE, MODEL_H5, OOD_STATS_FILE):
        assert sha256_file(PACKAGED / name) == recorded_sha256(card, name), name
    assert card["synthetic_data"] is False and "CC BY 4.0" in card["attribution"]["license"]
    assert "doi:10.17632/rscbjbr9sj.2" in (PACKAGED / README).read_text()


def fake_export(folder: Path, metrics: dict) -> Path:
    """An export folder whose card records its files' real sha256s and the given metrics."""
    folder.mkdir(parents=True)
    for name in (INT8_FILE, MODEL_H5, OOD_STATS_FILE):
        (folder / name).write_bytes(name.encode() * 10)
    card = {
        "synthetic_data": True,
        "operating_threshold": metrics["operating_threshold"],
        "metrics": {"validation": metrics["val"], "test": metrics["test"]},
        "files": {n: {"sha256": sha256_file(folder / n)} for n in (MODEL_H5, OOD_STATS_FILE)},
        "litert": {"files": {"int8": {"file": INT8_FILE, "sha256": sha256_file(folder / INT8_FILE)}}},
    }
    (folder / MODEL_CARD).write_text(json.dumps(card))
    return folder


METRICS_OK = {"operating_threshold": 0.7, "val": {"images": 10, "roc_auc": 0.9}, "test": {"images": 5, "roc_auc": 0.8}}


def test_package_copies_checked_files_and_refuses_a_mismatch_leaving_the_old_copy(tmp_path):
    models = fake_export(tmp_path / "models", METRICS_OK)
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS_OK))
    out = tmp_path / "pkg"
    shas = package(models, tmp_path / "metrics.json", out)
    assert sorted(p.name for p in out.iterdir()) == sorted((*PACKAGED_FILES, README))
    assert (
        shas[INT8_FILE] == sha256_file(out / INT8_FILE)
        and "Synthetic training data: true" in (out / README).read_text()
    )

    other = {**METRICS_OK, "test": {"images": 5, "roc_auc": 0.81}}
    (tmp_path / "metrics.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"test\.roc_auc: 0\.8 != 0\.81"):
        package(models, tmp_path / "metrics.json", out)
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS_OK))
    (models / INT8_FILE).write_bytes(b"a different model")
    with pytest.raises(ValueError, match=f"{INT8_FILE}: sha256"):
        package(models, tmp_path / "metrics.json", out)
    assert sha256_file(out / INT8_FILE) == shas[INT8_FILE]  # the earlier copy is intact
