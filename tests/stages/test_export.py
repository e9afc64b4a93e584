"""export: the HDF5 model reproduces the trained one, and the card describes it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import numpy as np
import pytest

keras = pytest.importorskip("keras")

# Every test here exports the model trained by the session's `trained` fixture.
pytestmark = pytest.mark.slow

from PIL import Image  # noqa: E402

from pneumo.core.cache import load_split  # noqa: E402
from pneumo.core.config import Params  # noqa: E402
from pneumo.core.constants import LABELS  # noqa: E402
from pneumo.core.decision import GATE_CANNOT_CATCH, REFER_MEANING, REJECTED_MEANING  # noqa: E402
from pneumo.core.images import to_rgb  # noqa: E402
from pneumo.core.ood import OodGate  # noqa: E402
from pneumo.core.paths import FLOAT16_FILE, INT8_FILE, OOD_STATS_FILE  # noqa: E402
from pneumo.serving.predict import predict_files  # noqa: E402
from pneumo.stages.export import (  # noqa: E402
    MODEL_CARD,
    MODEL_H5,
    decision_section,
    export,
    hdf5_on_purpose,
    shipped_policy,
)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def loose_agreement(params: Params) -> Params:
    """12 validation images, one epoch: int8 shifts the pooled features enough that several validation
    decisions differ (refer vs rejected), so export.min_decision_agreement goes to its lowest allowed value."""
    return dataclasses.replace(params, export=dataclasses.replace(params.export, min_decision_agreement=0.5))


@pytest.fixture(scope="module")
def exported_with_absl(trained):
    """Export once, keeping what Keras said through absl meanwhile."""
    out = trained["root"] / "export"
    params = loose_agreement(trained["params"])
    absl, seen = logging.getLogger("absl"), _Records()
    absl.addHandler(seen)
    try:
        card = export(
            trained["model"],
            trained["prepared"],
            trained["root"] / "eval" / "metrics.json",
            out,
            params,
            trained["root"] / "eval" / OOD_STATS_FILE,
        )
    finally:
        absl.removeHandler(seen)
    return out, card, seen.messages


@pytest.fixture(scope="module")
def exported(exported_with_absl):
    out, card, _ = exported_with_absl
    return out, card


def test_h5_reloads_with_the_same_predictions(trained, exported):
    out, _ = exported
    images, _, _ = load_split(trained["prepared"], "test")
    batch = to_rgb(images)
    original = keras.models.load_model(trained["model"], compile=False).predict_on_batch(batch)
    reloaded = keras.models.load_model(out / MODEL_H5, compile=False).predict_on_batch(batch)
    np.testing.assert_allclose(reloaded, original, atol=1e-5)


def test_model_card_holds_the_contract_and_the_metrics(trained, exported):
    out, card = exported
    on_disk = json.loads((out / MODEL_CARD).read_text())
    assert on_disk == json.loads(json.dumps(card))
    assert card["labels"] == list(LABELS)
    assert card["input"]["shape"] == [None, 96, 96, 3] and card["input"]["range"] == [0, 255]
    metrics = trained["metrics"]
    assert card["operating_threshold"] == metrics["operating_threshold"]
    assert card["metrics"]["test"]["roc_auc"] == metrics["test"]["roc_auc"]
    assert card["metrics"]["validation"]["at_operating_threshold"] == metrics["val"]["at_operating"]
    assert card["synthetic_data"] is True and "SYNTHETIC" in card["warning"]
    assert len(card["params_fingerprint"]) == 64 and card["data"]["fingerprint"]


def test_model_card_states_the_operating_point_with_intervals(trained, exported):
    _, card = exported
    metrics = trained["metrics"]
    point = card["operating_point"]
    assert point["threshold"] == metrics["operating_threshold"]
    assert str(metrics["target_sensitivity"]) in point["rule"]
    test = metrics["test"]["at_operating"]
    ci = metrics["test"]["ci95"]["at_operating"]
    assert point["test"]["sensitivity"] == {"value": test["recall"], "ci95": ci["recall"]}
    assert point["test"]["specificity"] == {"value": test["specificity"], "ci95": ci["specificity"]}
    low, high = point["test"]["specificity"]["ci95"]
    assert low <= point["test"]["specificity"]["value"] <= high
    assert point["validation"]["sensitivity"]["value"] >= metrics["target_sensitivity"]
    assert "ci95" not in point["validation"]["sensitivity"]  # validation has no bootstrap
    assert any("pediatric" in limit for limit in card["limits"])
    assert any("224x224" in limit for limit in card["limits"])


def test_a_failed_export_leaves_the_previous_model_intact(trained, exported, tmp_path):
    out, _ = exported
    before = (out / MODEL_H5).read_bytes()
    with pytest.raises(FileNotFoundError):
        export(
            tmp_path / "missing.keras",
            trained["prepared"],
            trained["root"] / "eval" / "metrics.json",
            out,
            trained["params"],
            trained["root"] / "eval" / "ood_stats.npz",
        )
    assert (out / MODEL_H5).read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_the_card_says_the_data_was_synthetic_not_the_kermany_split(exported):
    _, card = exported
    for text in (card["metrics"]["note"], card["data"]["source"]):
        assert "SYNTHETIC" in text and "official Kermany" not in text


def test_saving_the_h5_prints_no_legacy_warning_and_the_filter_is_targeted(exported_with_absl, tmp_path):
    *_, messages = exported_with_absl
    assert not [m for m in messages if "legacy" in m], messages
    inputs = keras.Input((4,))
    tiny = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    absl, seen = logging.getLogger("absl"), _Records()
    absl.addHandler(seen)
    try:
        tiny.save(tmp_path / "outside.h5")  # Keras does warn: the check above could fail
        with hdf5_on_purpose():
            tiny.save(tmp_path / "inside.h5")
            absl.warning("another absl warning")  # other warnings still pass
    finally:
        absl.removeHandler(seen)
    assert sum("legacy" in m for m in seen.messages) == 1 and "another absl warning" in seen.messages


def test_the_card_ships_the_decision_policy_and_its_gate_statistics(trained, exported):
    out, card = exported
    metrics = trained["metrics"]
    stats = out / OOD_STATS_FILE
    digest = hashlib.sha256(stats.read_bytes()).hexdigest()
    assert card["files"][OOD_STATS_FILE] == {"sha256": digest}
    assert card["decision"] == decision_section(metrics, digest)
    decision = card["decision"]
    assert decision["threshold"] == metrics["policy"]["threshold"] == card["operating_threshold"]
    assert decision["calibration"]["temperature"] == metrics["policy"]["calibration"]["temperature"] > 0
    assert decision["refer_band"] == metrics["policy"]["refer"]["band"]
    assert decision["decisions"]["refer"] == REFER_MEANING and decision["decisions"]["rejected"] == REJECTED_MEANING
    gate_info = decision["input_gate"]
    assert gate_info["statistics"] == OOD_STATS_FILE and gate_info["sha256"] == digest
    assert gate_info["cannot_catch"] == GATE_CANNOT_CATCH and GATE_CANNOT_CATCH in card["limits"]
    # The shipped statistics are evaluate's, unchanged.
    shipped, evaluated = OodGate.load(stats), OodGate.load(trained["root"] / "eval" / OOD_STATS_FILE)
    assert shipped.threshold == evaluated.threshold == gate_info["threshold"]
    np.testing.assert_array_equal(shipped.mean, evaluated.mean)
    np.testing.assert_array_equal(shipped.precision, evaluated.precision)
    policy = shipped_policy(metrics, shipped)
    assert policy.threshold == decision["threshold"] and policy.gate is shipped
    assert policy.refer == (tuple(decision["refer_band"]) if decision["refer_band"] else None)


def test_the_litert_files_were_checked_for_decision_agreement(trained, exported):
    out, card = exported
    litert = card["litert"]
    assert litert["min_decision_agreement"] == 0.5  # the fixture's (see exported_with_absl)
    for kind, name in (("float16", FLOAT16_FILE), ("int8", INT8_FILE)):
        check = litert["files"][kind]
        assert check["file"] == name and (out / name).stat().st_size == check["bytes"]
        assert check["outputs"] == ["features", "logit"]
        assert check["decision_agreement"] >= litert["min_decision_agreement"], kind
        assert sum(check["decisions"].values()) == check["images"], kind
        assert 0.0 <= check["test"]["decision_agreement"] <= 1.0  # test confirms, decides nothing


def test_export_without_the_gate_statistics_does_not_ship_a_card_predict_refuses(trained, tmp_path):
    """metrics.json has an input gate: an export given no statistics must refuse, or write a card that
    works; never a card naming a statistics file that is not there."""
    out = tmp_path / "models"
    try:
        export(
            trained["model"],
            trained["prepared"],
            trained["root"] / "eval" / "metrics.json",
            out,
            loose_agreement(trained["params"]),
        )
    except (ValueError, FileNotFoundError) as exc:
        assert OOD_STATS_FILE in str(exc) or "statistics" in str(exc)
        return
    images, _, _ = load_split(trained["prepared"], "test")
    png = tmp_path / "x.png"
    Image.fromarray(images[0]).save(png)
    (row,) = predict_files([png], out / MODEL_H5)
    assert row["decision"] in ("normal", "pneumonia", "refer", "rejected")
