"""export: the HDF5 model reproduces the trained one, and the card describes it."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

keras = pytest.importorskip("keras")

# Every test here exports the model trained by the session's `trained` fixture.
pytestmark = pytest.mark.slow

from pneumo.core.cache import load_split  # noqa: E402
from pneumo.core.constants import LABELS  # noqa: E402
from pneumo.core.images import to_rgb  # noqa: E402
from pneumo.stages.export import MODEL_CARD, MODEL_H5, export, hdf5_on_purpose  # noqa: E402


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def exported_with_absl(trained):
    """Export once, keeping what Keras said through absl meanwhile."""
    out = trained["root"] / "export"
    absl, seen = logging.getLogger("absl"), _Records()
    absl.addHandler(seen)
    try:
        card = export(
            trained["model"], trained["prepared"], trained["root"] / "eval" / "metrics.json", out, trained["params"]
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
