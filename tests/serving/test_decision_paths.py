"""Issue 14's decision path end to end: what evaluate chooses on validation, what export ships, and what
`predict` answers with the .h5 and the int8 file, on the out-of-distribution set and on a frontal DICOM."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")
pydicom = pytest.importorskip("pydicom")
pytest.importorskip("ai_edge_litert")

# Every test here reads the model trained (and evaluated) by the session's `trained` fixture.
pytestmark = pytest.mark.slow

from pydicom.uid import ComputedRadiographyImageStorage  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from pneumo.cli.app import app  # noqa: E402
from pneumo.cli.predict import HEADER  # noqa: E402
from pneumo.core.cache import load_split  # noqa: E402
from pneumo.core.config import Params  # noqa: E402
from pneumo.core.decision import DECISIONS, REJECTED, Policy  # noqa: E402
from pneumo.core.io import read_json, write_json  # noqa: E402
from pneumo.core.ood import OodGate  # noqa: E402
from pneumo.core.paths import (  # noqa: E402
    INT8_FILE,
    METRICS_FILE,
    MODEL_CARD,
    MODEL_H5,
    OOD_MANIFEST,
    OOD_SCORES_FILE,
    OOD_STATS_FILE,
    PREDICTIONS_FILE,
)
from pneumo.serving.predict import predict_files  # noqa: E402
from pneumo.stages.export import export  # noqa: E402
from support import write_dicom  # noqa: E402

ANSWER_KEYS = {"path", "decision", "probability", "ood_score", "reasons", "threshold", "model", "notice"}
MODELS = {"h5": MODEL_H5, "int8": INT8_FILE}


def _policy(metrics: dict, gate: OodGate | None) -> Policy:
    """The policy metrics.json states, with the gate read from its statistics file."""
    chosen = metrics["policy"]
    band = chosen["refer"]["band"]
    return Policy(chosen["threshold"], chosen["calibration"]["temperature"], tuple(band) if band else None, gate)


def loose_agreement(params: Params) -> Params:
    """12 validation images, one epoch: int8 shifts the pooled features enough that several validation
    decisions differ (refer vs rejected), so export.min_decision_agreement goes to its lowest allowed value
    (as tests/stages/test_export.py does); the OOD test below checks agreement where it matters here."""
    return dataclasses.replace(params, export=dataclasses.replace(params.export, min_decision_agreement=0.5))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_deployment(shipped: Path, to: Path, model: str = MODEL_H5) -> Path:
    """A model, its card and its gate statistics in a folder of their own; the model's path."""
    to.mkdir(parents=True, exist_ok=True)
    for name in (model, MODEL_CARD, OOD_STATS_FILE):
        shutil.copy2(shipped / name, to / name)
    return to / model


# ---- evaluate: the policy is chosen on validation ---------------------------------------------------


@pytest.fixture(scope="module")
def manifest(trained) -> pd.DataFrame:
    return pd.read_csv(trained["ood"] / OOD_MANIFEST)


def test_evaluate_states_the_policy_chosen_on_validation(trained, manifest):
    metrics = trained["metrics"]
    policy = metrics["policy"]
    assert policy["calibration"]["temperature"] > 0 and policy["calibration"]["fitted_on"] == "val"
    assert policy["threshold"] == metrics["operating_threshold"]
    assert policy["ood"]["keep"] == trained["params"].evaluate.ood_keep
    # The OOD set is reported per kind, every kind of its manifest, with the manifest's counts.
    per_kind = metrics["ood"]["per_kind"]
    assert set(per_kind) == set(manifest["kind"])
    for kind, rows in manifest.groupby("kind"):
        assert per_kind[kind]["images"] == len(rows) and 0.0 <= per_kind[kind]["rejected"] <= 1.0, kind
    assert metrics["ood"]["images"] == len(manifest) and metrics["ood"]["errors"] == 0
    # Test decisions carry patient-bootstrap intervals, for every figure that has a value on test.
    test = metrics["decisions"]["test"]
    ci = test["ci95"]
    assert {"referral_rate", "rejection_rate", "answered_rate"} <= set(ci)
    for key, value in test["answered"].items():
        if value is not None:
            low, high = ci[key]
            assert 0.0 <= low <= high <= 1.0, key
    assert test["images"] == metrics["test"]["images"]
    written = json.loads((trained["root"] / "eval" / METRICS_FILE).read_text())
    assert written["policy"] == json.loads(json.dumps(policy))


def test_every_metadata_gated_dicom_is_rejected_before_the_model(trained, manifest):
    with open(trained["root"] / "eval" / OOD_SCORES_FILE, newline="") as fh:
        rows = {row["path"]: row for row in csv.DictReader(fh)}
    assert set(rows) == set(manifest["path"])
    gated = manifest.loc[manifest["gate"] == "metadata", "path"]
    assert len(gated) >= 6
    for path in gated:
        row = rows[path]
        assert row["decision"] == REJECTED, row
        assert row["probability"] == "" and row["ood_score"] == "", row  # the model never ran
        assert "DICOM" in row["reasons"] or "lateral" in row["reasons"], row
    # The content-gated images did reach the model: each has a probability and a score.
    content = manifest.loc[manifest["gate"] == "content", "path"]
    assert all(rows[p]["probability"] != "" and rows[p]["ood_score"] != "" for p in content)


def test_prediction_decisions_follow_the_policy_from_their_logit_and_score(trained):
    metrics = trained["metrics"]
    gate = OodGate.load(trained["root"] / "eval" / OOD_STATS_FILE)
    assert gate.threshold == metrics["policy"]["ood"]["threshold"]
    policy = _policy(metrics, gate)
    frame = pd.read_csv(trained["root"] / "eval" / PREDICTIONS_FILE, float_precision="round_trip")
    assert {"logit", "probability", "ood_score", "decision"} <= set(frame.columns)
    probability = policy.probability(frame["logit"].to_numpy())
    np.testing.assert_allclose(frame["probability"], probability, rtol=1e-12)  # calibrated, not sigmoid(logit)
    expected = policy.decisions(probability, frame["ood_score"].to_numpy())
    assert list(frame["decision"]) == list(expected)
    assert set(frame["decision"]) <= set(DECISIONS)
    # The gate's threshold keeps at least evaluate.ood_keep of validation X-rays.
    val = frame[frame["split"] == "val"]
    assert np.mean(val["ood_score"] <= gate.threshold) >= trained["params"].evaluate.ood_keep
    # ... and is an observed validation distance (the smallest that keeps that share).
    assert gate.threshold in set(val["ood_score"])
    assert np.mean(val["ood_score"] < gate.threshold) < trained["params"].evaluate.ood_keep


# ---- export, then predict with the .h5 and the int8 file --------------------------------------------


@pytest.fixture(scope="module")
def shipped(trained, tmp_path_factory) -> Path:
    """export into a folder of its own, with the gate statistics evaluate wrote."""
    out = tmp_path_factory.mktemp("shipped")
    export(
        trained["model"],
        trained["prepared"],
        trained["root"] / "eval" / METRICS_FILE,
        out,
        loose_agreement(trained["params"]),
        trained["root"] / "eval" / OOD_STATS_FILE,
    )
    return out


@pytest.fixture(scope="module")
def ood_answers(trained, shipped, manifest) -> dict[str, dict[str, dict]]:
    """Per model (h5, int8): the answer of each OOD file, by its manifest path."""
    files = [trained["ood"] / p for p in manifest["path"]]
    out = {}
    for kind, name in MODELS.items():
        rows = list(predict_files(files, shipped / name))
        assert len(rows) == len(files)
        out[kind] = {Path(r["path"]).relative_to(trained["ood"]).as_posix(): r for r in rows}
    return out


def test_the_card_names_the_gate_statistics_by_their_sha256(shipped, trained):
    card = read_json(shipped / MODEL_CARD)
    gate_info = card["decision"]["input_gate"]
    assert gate_info["statistics"] == OOD_STATS_FILE
    assert gate_info["sha256"] == _sha256(shipped / OOD_STATS_FILE) == card["files"][OOD_STATS_FILE]["sha256"]
    shipped_gate, evaluated = (
        OodGate.load(shipped / OOD_STATS_FILE),
        OodGate.load(trained["root"] / "eval" / OOD_STATS_FILE),
    )
    assert shipped_gate.threshold == evaluated.threshold == gate_info["threshold"]
    np.testing.assert_array_equal(shipped_gate.mean, evaluated.mean)
    np.testing.assert_array_equal(shipped_gate.precision, evaluated.precision)
    assert card["decision"]["threshold"] == trained["metrics"]["policy"]["threshold"]
    for kind in ("float16", "int8"):
        assert card["litert"]["files"][kind]["outputs"] == ["features", "logit"]
        assert 0.0 <= card["litert"]["files"][kind]["decision_agreement"] <= 1.0


def test_h5_and_int8_decide_alike_on_the_ood_set(ood_answers, manifest):
    h5, int8 = ood_answers["h5"], ood_answers["int8"]
    for kind, rows in ood_answers.items():
        errors = {p: r["error"] for p, r in rows.items() if "error" in r}
        assert not errors, (kind, errors)
        for r in rows.values():
            assert set(r) == ANSWER_KEYS | {"warning"}  # the synthetic model warns on every answer
            assert r["decision"] in DECISIONS and r["reasons"]
    agree = np.mean([h5[p]["decision"] == int8[p]["decision"] for p in manifest["path"]])
    assert agree >= 0.9, agree
    for path in manifest.loc[manifest["gate"] == "metadata", "path"]:
        a, b = h5[path], int8[path]
        assert a["decision"] == b["decision"] == REJECTED, path
        assert a["probability"] is None and b["probability"] is None and a["ood_score"] is b["ood_score"] is None
        assert a["reasons"] == b["reasons"] and a["reasons"], path


def test_the_h5_answers_the_ood_set_as_evaluate_did(trained, ood_answers):
    """The exported .h5 with its card decides as the evaluate stage decided with the trained model."""
    evaluated = pd.read_csv(trained["root"] / "eval" / OOD_SCORES_FILE, keep_default_na=False)
    h5 = ood_answers["h5"]
    same = [h5[row.path]["decision"] == row.decision for row in evaluated.itertuples()]
    assert sum(not s for s in same) <= 1, [
        row.path for row, s in zip(evaluated.itertuples(), same, strict=True) if not s
    ]


def _write_frontal_cr(path: Path, pixels: np.ndarray) -> Path:
    """A CR chest PA radiograph, uncompressed 8-bit MONOCHROME2, no patient data."""
    return write_dicom(
        path,
        pixels,
        sop_class=ComputedRadiographyImageStorage,
        Modality="CR",
        BodyPartExamined="CHEST",
        ViewPosition="PA",
    )


def test_a_frontal_chest_dicom_reaches_the_model_on_both_paths(trained, shipped, tmp_path):
    images, _, _ = load_split(trained["prepared"], "test")
    dcm = _write_frontal_cr(tmp_path / "chest_pa.dcm", images[0])
    for kind, name in MODELS.items():
        (row,) = predict_files([dcm], shipped / name)
        assert "error" not in row, row
        assert row["decision"] in DECISIONS and row["probability"] is not None, (kind, row)  # the model ran
        assert row["ood_score"] is not None and np.isfinite(row["ood_score"]), (kind, row)
        assert row["reasons"][0] == "DICOM view PA", (kind, row)  # the header's note comes first


def test_tampered_or_missing_gate_statistics_are_refused(trained, shipped, tmp_path):
    model = _copy_deployment(shipped, tmp_path / "tampered")
    stats = model.with_name(OOD_STATS_FILE)
    gate = OodGate.load(stats)
    # Valid statistics, other bytes: a looser threshold (what a swapped file from another model could do).
    OodGate(gate.mean, gate.precision, gate.threshold * 10, gate.shrinkage).save(stats)
    image = trained["ood"] / "images"
    one = sorted(image.rglob("*.png"))[0]
    with pytest.raises(ValueError, match="sha256") as raised:
        next(predict_files([one], model))
    assert str(stats) in str(raised.value)
    result = CliRunner().invoke(app, ["predict", str(one), "--model", str(model), "--json"])
    assert result.exit_code == 2 and str(stats) in result.output and "{" not in result.stdout, result.output
    stats.unlink()
    with pytest.raises(FileNotFoundError, match=OOD_STATS_FILE):
        next(predict_files([one], model))


def test_a_card_without_a_decision_answers_without_the_gate_and_warns(trained, shipped, tmp_path, caplog):
    model = _copy_deployment(shipped, tmp_path / "old")
    card = read_json(model.with_name(MODEL_CARD))
    del card["decision"]
    write_json(model.with_name(MODEL_CARD), card)
    files = [trained["ood"] / p for p in pd.read_csv(trained["ood"] / OOD_MANIFEST)["path"]]
    with caplog.at_level(logging.WARNING, logger="pneumo.serving.predict"):
        rows = list(predict_files(files, model))
    assert any("has no decision policy" in r.getMessage() for r in caplog.records), caplog.text
    answered = [r for r in rows if "error" not in r]
    assert answered
    for r in answered:
        assert r["ood_score"] is None and r["threshold"] == card["operating_threshold"]
        # No gate from the card: only the DICOM header can still refuse a file.
        assert r["decision"] in ("normal", "pneumonia") or r["probability"] is None, r


def test_a_gated_card_refuses_a_litert_file_without_features(trained, shipped, tmp_path):
    """An old LiteRT file (one output, no features) cannot run the card's gate: refused, not answered ungated."""
    import tensorflow as tf

    size = int(trained["params"].data.image_size)
    inputs = keras.Input((size, size, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    old = keras.Model(inputs, {"probability": keras.layers.Dense(1, activation="sigmoid")(pooled)})
    saved = tmp_path / "saved"
    old.export(str(saved), verbose=False)
    folder = tmp_path / "old_litert"
    folder.mkdir()
    (folder / INT8_FILE).write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    png = sorted((trained["ood"] / "images").rglob("*.png"))[0]
    # Without a card the old file still answers (threshold alone, no gate).
    (row,) = predict_files([png], folder / INT8_FILE)
    assert row["decision"] in ("normal", "pneumonia") and row["ood_score"] is None
    shutil.copy2(shipped / MODEL_CARD, folder / MODEL_CARD)
    shutil.copy2(shipped / OOD_STATS_FILE, folder / OOD_STATS_FILE)
    with pytest.raises(ValueError, match="no pooled features"):
        next(predict_files([png], folder / INT8_FILE))


# ---- the command line ---------------------------------------------------------------------------------


def test_predict_json_lines_and_table_show_a_rejection_before_the_model(trained, shipped, manifest):
    gated = trained["ood"] / manifest.loc[manifest["gate"] == "metadata", "path"].iloc[0]
    picture = trained["ood"] / manifest.loc[manifest["gate"] == "content", "path"].iloc[0]
    args = ["predict", str(gated), str(picture), "--model", str(shipped / MODEL_H5)]
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(gated), str(picture)]
    for r in rows:
        assert set(r) == ANSWER_KEYS | {"warning"}, r  # the synthetic model warns on every answer
    assert rows[0]["decision"] == REJECTED and rows[0]["probability"] is None and rows[0]["ood_score"] is None
    assert rows[1]["probability"] is not None and rows[1]["ood_score"] is not None

    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0] == HEADER
    gated_line = next(line for line in lines if str(gated) in line)
    decision, probability, score, rest = gated_line.split(maxsplit=3)
    assert (decision, probability, score) == (REJECTED, "-", "-"), gated_line
    assert rest.startswith(f"{gated}: ") and "; ".join(rows[0]["reasons"]) in rest
    picture_line = next(line for line in lines if str(picture) in line)
    decision, probability, score, _ = picture_line.split(maxsplit=3)
    assert decision == rows[1]["decision"] and float(probability) == pytest.approx(rows[1]["probability"], abs=1e-4)
    assert float(score) == pytest.approx(rows[1]["ood_score"], abs=0.05)
