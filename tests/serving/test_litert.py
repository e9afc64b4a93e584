"""LiteRT exports: float16 and int8 files that agree with the Keras model and are smaller."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from pneumo.core.cache import load_split  # noqa: E402
from pneumo.core.images import predict_gray as predict_batches  # noqa: E402
from pneumo.core.images import to_rgb  # noqa: E402
from pneumo.core.paths import FLOAT16_FILE, INT8_FILE  # noqa: E402
from pneumo.nn.convert import named_output  # noqa: E402
from pneumo.serving.litert import LiteRTModel, sigmoid  # noqa: E402
from pneumo.stages.export import export_litert, parity, refusals, representative_sample  # noqa: E402


def litert_export(trained: dict, tmp_path_factory) -> tuple[Path, dict]:
    """Export once per session (test_predict uses the files too): (folder, the card's `litert`)."""
    out = tmp_path_factory.getbasetemp() / "litert_export"
    summary = out / "litert.json"
    if not summary.exists():
        # 12 validation images (36 positive-negative pairs): one swapped pair moves the AUC by 0.028,
        # so the tiny model gets one pair of slack; the 224-px default stays at 0.01.
        result = export_litert(
            trained["model"], trained["prepared"], out, calibration_images=40, auc_tolerance=0.03, threshold=0.5
        )
        summary.write_text(json.dumps(result))
    return out, json.loads(summary.read_text())


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    return litert_export(trained, tmp_path_factory)


@pytest.mark.slow
def test_each_file_agrees_with_keras_on_validation(exported):
    out, card = exported
    files = card["files"]
    assert set(files) == {"float16", "int8"}
    assert files["float16"]["file"] == FLOAT16_FILE and files["int8"]["file"] == INT8_FILE
    assert files["float16"]["max_abs_diff"] < 0.03
    # A one-epoch 96 px model has probabilities crowding 0.5, where int8 steps are widest: one image
    # may move by a quarter; the ranking (AUC) is what must survive.
    assert files["int8"]["max_abs_diff"] < 0.35
    for kind in ("float16", "int8"):
        f = files[kind]
        assert f["images"] > 0 and (out / f["file"]).stat().st_size == f["bytes"]
        assert f["roc_auc_diff"] is not None and abs(f["roc_auc_diff"]) <= 0.03
        assert f["roc_auc_diff"] == pytest.approx(f["roc_auc"] - f["roc_auc_keras"])
    assert card["calibration"]["split"] == "train" and card["calibration"]["images"] == 40
    # The test split is compared too, as a confirmation that decides nothing.
    assert card["confirmation_split"] == "test"
    for kind in ("float16", "int8"):
        confirm = files[kind]["test"]
        assert confirm["images"] > 0 and confirm["max_abs_diff"] < 0.35
        # Labels at the operating threshold: the share of images the file labels as Keras does.
        # (the tiny model's probabilities crowd 0.5, so int8 may flip a few; float16 hardly any)
        assert files[kind]["threshold"] == 0.5 and 0.0 <= confirm["label_agreement"] <= 1.0
        assert confirm["roc_auc_diff"] == pytest.approx(confirm["roc_auc"] - confirm["roc_auc_keras"])
    assert files["float16"]["test"]["label_agreement"] >= 0.9


@pytest.mark.slow
def test_int8_returns_the_logit_and_says_so_in_its_signature(trained, exported):
    """An int8 sigmoid has 256 levels and ties the confident end; the int8 file returns the logit."""
    from ai_edge_litert.interpreter import Interpreter

    out, card = exported
    assert card["files"]["int8"]["output"] == "logit" and card["files"]["float16"]["output"] == "probability"
    model = keras.models.load_model(trained["model"], compile=False)
    images, _, _ = load_split(trained["prepared"], "val")
    batch = to_rgb(images[:1])
    for name, output in ((INT8_FILE, "logit"), (FLOAT16_FILE, "probability")):
        interp = Interpreter(model_path=str(out / name))
        assert interp.get_signature_list()["serving_default"]["outputs"] == [output]
        raw = interp.get_signature_runner()(image=batch)[output].reshape(-1)
        expected = np.asarray(named_output(model, output).predict_on_batch(batch)[output]).reshape(-1)
        assert raw == pytest.approx(expected, abs=0.5 if output == "logit" else 0.02)
        lite = LiteRTModel(out / name)
        assert lite.output_kind == output
        # Whatever the file returns, LiteRTModel returns probabilities.
        assert lite.predict(batch) == pytest.approx(sigmoid(raw) if output == "logit" else raw, abs=1e-6)


def test_sigmoid_is_exact_and_does_not_overflow():
    z = np.array([-1000.0, -20.0, -1.0, 0.0, 1.0, 20.0, 1000.0])
    with np.errstate(over="raise"):
        p = sigmoid(z)
    assert p.dtype == np.float32 and p[0] == 0.0 and p[-1] == 1.0 and p[3] == 0.5
    assert p[1:-1] == pytest.approx(1 / (1 + np.exp(-z[1:-1])), rel=1e-6)
    with pytest.raises(ValueError, match="unknown output 'score'"):
        named_output(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), "score")


@pytest.mark.slow
def test_int8_is_smaller_than_float16_smaller_than_keras(trained, exported):
    out, _ = exported
    sizes = {p: (out / p).stat().st_size for p in (FLOAT16_FILE, INT8_FILE)}
    assert sizes[INT8_FILE] < sizes[FLOAT16_FILE] < trained["model"].stat().st_size
    assert sizes[INT8_FILE] < 3.5e6  # weights, not the input size, set the size: 224 px is the same


@pytest.mark.slow
def test_the_files_take_raw_float_pixels_like_keras(trained, exported):
    out, _ = exported
    model = keras.models.load_model(trained["model"], compile=False)
    images, labels, _ = load_split(trained["prepared"], "test")
    expected = model.predict_on_batch(to_rgb(images)).reshape(-1)
    for name, bound in ((FLOAT16_FILE, 0.03), (INT8_FILE, 0.35)):
        lite = LiteRTModel(out / name, num_threads=1)
        assert lite.input_size == 96
        assert lite._input["dtype"] == np.float32  # the documented contract: float32 in, float32 out
        probs = predict_batches(lite.predict, images, batch_size=7)  # odd batches resize the interpreter
        assert probs.shape == expected.shape and np.all((probs >= 0) & (probs <= 1))
        assert np.max(np.abs(probs - expected)) < bound
        assert np.mean(np.abs(probs - expected)) < bound / 5  # most images move far less than the worst
        # Ranking survives quantization: the test split's AUC hardly moves.
        check = parity(out / name, expected, images, labels)
        assert abs(check["roc_auc_diff"]) <= 0.02 and check["max_abs_diff"] < bound  # 100 pairs: 2 may swap


@pytest.mark.slow
def test_label_agreement_counts_images_labelled_as_keras_labels_them(trained, exported):
    out, _ = exported
    model = keras.models.load_model(trained["model"], compile=False)
    images, labels, _ = load_split(trained["prepared"], "test")
    expected = model.predict_on_batch(to_rgb(images)).reshape(-1)
    lite = predict_batches(LiteRTModel(out / INT8_FILE).predict, images)
    for threshold in (0.3, float(np.median(lite))):
        check = parity(out / INT8_FILE, expected, images, labels, threshold)
        assert check["label_agreement"] == pytest.approx(np.mean((lite >= threshold) == (expected >= threshold)))
    # A threshold above every probability: both say NORMAL for all, full agreement.
    assert parity(out / INT8_FILE, expected, images, labels, 1.01)["label_agreement"] == 1.0
    assert "label_agreement" not in parity(out / INT8_FILE, expected, images, labels)


def test_bad_parity_or_size_is_refused():
    ok = {"file": INT8_FILE, "bytes": 2_900_000, "roc_auc": 0.95, "roc_auc_keras": 0.955, "roc_auc_diff": -0.005}
    assert refusals({"int8": ok}) == []
    worse = {**ok, "roc_auc": 0.94, "roc_auc_diff": -0.015}
    assert "int8: validation AUC 0.9400 is 0.0150 below Keras" in refusals({"int8": worse})[0]
    assert "exceeds 3.5 MB" in refusals({"int8": {**ok, "bytes": 3_600_000}})[0]
    assert refusals({"int8": {**ok, "roc_auc_diff": None}}) == []  # one class only: no AUC to compare


def test_representative_sample_is_seeded_and_bounded():
    images = np.arange(500 * 4, dtype=np.uint8).reshape(500, 2, 2)
    a, b = representative_sample(images, 200, seed=1), representative_sample(images, 200, seed=1)
    assert len(a) == 200 and np.array_equal(a, b)
    assert not np.array_equal(a, representative_sample(images, 200, seed=2))
    assert len(representative_sample(images[:50], 200)) == 50


def test_a_file_that_is_not_a_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(ValueError, match="bad.tflite"):
        LiteRTModel(bad)
