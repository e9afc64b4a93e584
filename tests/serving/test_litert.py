"""LiteRT exports: float16 and int8 files that agree with the Keras model and are smaller."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from pneumo.core.cache import load_split  # noqa: E402
from pneumo.core.decision import Policy, sigmoid  # noqa: E402
from pneumo.core.images import predict_gray as predict_batches  # noqa: E402
from pneumo.core.images import to_rgb  # noqa: E402
from pneumo.core.ood import OodGate  # noqa: E402
from pneumo.core.paths import FLOAT16_FILE, INT8_FILE, OOD_STATS_FILE  # noqa: E402
from pneumo.nn.decision import POOL, decision_model  # noqa: E402
from pneumo.nn.model import LOGIT  # noqa: E402
from pneumo.serving.litert import LiteRTModel  # noqa: E402
from pneumo.serving.predict import KerasBackend, score_gray  # noqa: E402
from pneumo.stages.export import export_litert, parity, refusals, representative_sample  # noqa: E402

OUTPUTS = ["features", "logit"]  # pneumo.core.contract.OUTPUTS, as the files' signatures list them (sorted)


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


def keras_logits(trained: dict, images: np.ndarray) -> np.ndarray:
    """The trained Keras model's raw logits (what `parity` compares against)."""
    model = keras.models.load_model(trained["model"], compile=False)
    return score_gray(KerasBackend(trained["model"], model), images)[0]


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
def test_both_files_return_the_logit_and_the_features_and_say_so_in_their_signature(trained, exported):
    """An int8 sigmoid has 256 levels and ties the confident end: both files return the logit, and the
    pooled features the input gate measures (pneumo.core.contract)."""
    from ai_edge_litert.interpreter import Interpreter

    out, card = exported
    assert card["files"]["int8"]["outputs"] == OUTPUTS and card["files"]["float16"]["outputs"] == OUTPUTS
    model = keras.models.load_model(trained["model"], compile=False)
    images, _, _ = load_split(trained["prepared"], "val")
    batch = to_rgb(images[:2])
    expected = decision_model(model).predict_on_batch(batch)
    assert set(expected) == set(OUTPUTS) and expected["features"].shape == (2, 1280)
    # int8 moves the pooled features far more than the logit (relative L2 error ~0.3 on the one-epoch
    # 96 px model, ~0.01 in float16): the gate's distances differ between the paths by that much.
    for name, logit_tol, feature_tol in ((FLOAT16_FILE, 0.1, 0.05), (INT8_FILE, 0.5, 0.5)):
        interp = Interpreter(model_path=str(out / name))
        assert sorted(interp.get_signature_list()["serving_default"]["outputs"]) == OUTPUTS
        raw = interp.get_signature_runner()(image=batch)
        logit, features = raw["logit"].reshape(-1), raw["features"]
        assert logit == pytest.approx(np.asarray(expected["logit"]).reshape(-1), abs=logit_tol), name
        assert features.shape == (2, 1280)
        error = np.linalg.norm(features - expected["features"], axis=1) / np.linalg.norm(expected["features"], axis=1)
        assert np.all(error <= feature_tol), (name, error)
        lite = LiteRTModel(out / name)
        assert lite.output_kind == "logit" and lite.has_features and list(lite.outputs) == OUTPUTS
        lite_logits, lite_features = lite.scores(batch)
        np.testing.assert_allclose(lite_logits, logit, atol=1e-6)
        np.testing.assert_allclose(lite_features, features, atol=1e-6)
        np.testing.assert_allclose(lite.run(batch)["logit"][:, 0], logit, atol=1e-6)
        # predict stays the uncalibrated sigmoid(logit): calibration is the policy's (the card's) job.
        assert lite.predict(batch) == pytest.approx(sigmoid(logit), abs=1e-6)
        empty_logits, empty_features = lite.scores(batch[:0])
        assert empty_logits.shape == (0,) and empty_features is None and lite.predict(batch[:0]).shape == (0,)


def test_sigmoid_is_exact_and_does_not_overflow():
    z = np.array([-1000.0, -20.0, -1.0, 0.0, 1.0, 20.0, 1000.0])
    with np.errstate(over="raise"):
        p = sigmoid(z)
    assert p.dtype == np.float64 and p[0] == 0.0 and p[-1] == 1.0 and p[3] == 0.5
    assert p[1:-1] == pytest.approx(1 / (1 + np.exp(-z[1:-1])), rel=1e-12)


def test_decision_model_answers_the_logit_and_the_pooled_features():
    inputs = keras.Input((4, 4, 3))
    pooled = keras.layers.GlobalAveragePooling2D(name=POOL)(inputs)
    logit = keras.layers.Dense(1, name=LOGIT)(keras.layers.Dense(5)(pooled))
    model = keras.Model(inputs, keras.layers.Activation("sigmoid")(logit))
    batch = np.random.default_rng(0).uniform(0, 255, (3, 4, 4, 3)).astype(np.float32)
    out = decision_model(model).predict_on_batch(batch)
    assert set(out) == set(OUTPUTS) and out["logit"].shape == (3, 1) and out["features"].shape == (3, 3)
    np.testing.assert_allclose(out["features"], batch.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(sigmoid(out["logit"][:, 0]), model.predict_on_batch(batch)[:, 0], atol=1e-6)
    # A network without the named layers is refused (a model pneumo did not build).
    with pytest.raises(ValueError, match=LOGIT):
        decision_model(keras.Sequential([keras.Input((4, 4, 3)), keras.layers.GlobalAveragePooling2D()]))


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
    logits = keras_logits(trained, images)
    for name, bound in ((FLOAT16_FILE, 0.03), (INT8_FILE, 0.35)):
        lite = LiteRTModel(out / name, num_threads=1)
        assert lite.input_size == 96
        assert lite._input["dtype"] == np.float32  # the documented contract: float32 in, float32 out
        probs = predict_batches(lite.predict, images, batch_size=7)  # odd batches resize the interpreter
        assert probs.shape == expected.shape and np.all((probs >= 0) & (probs <= 1))
        assert np.max(np.abs(probs - expected)) < bound
        assert np.mean(np.abs(probs - expected)) < bound / 5  # most images move far less than the worst
        # Ranking survives quantization: the test split's AUC hardly moves.
        check = parity(out / name, logits, images, labels)
        assert abs(check["roc_auc_diff"]) <= 0.02 and check["max_abs_diff"] < bound  # 100 pairs: 2 may swap
        assert check["outputs"] == OUTPUTS and check["images"] == len(images)
        assert check["max_abs_diff"] == pytest.approx(
            np.max(np.abs(sigmoid(score_gray(lite, images)[0]) - expected)), abs=1e-5
        )


@pytest.mark.slow
def test_label_agreement_counts_images_labelled_as_keras_labels_them(trained, exported):
    out, _ = exported
    images, labels, _ = load_split(trained["prepared"], "test")
    logits = keras_logits(trained, images)
    expected = sigmoid(logits)
    # The same float64 sigmoid of the same logits as parity, so an image at the threshold ties alike.
    lite = sigmoid(score_gray(LiteRTModel(out / INT8_FILE), images, 32)[0])
    for threshold in (0.3, float(np.median(lite))):
        check = parity(out / INT8_FILE, logits, images, labels, threshold)
        assert check["label_agreement"] == pytest.approx(np.mean((lite >= threshold) == (expected >= threshold)))
    # A threshold above every probability: both say NORMAL for all, full agreement.
    assert parity(out / INT8_FILE, logits, images, labels, 1.01)["label_agreement"] == 1.0
    assert "label_agreement" not in parity(out / INT8_FILE, logits, images, labels)
    # With a policy, labels are compared on the calibrated probability: a temperature moves them.
    hot = Policy(0.3, temperature=4.0)
    check = parity(out / INT8_FILE, logits, images, labels, 0.3, hot)
    calibrated = hot.probability(score_gray(LiteRTModel(out / INT8_FILE), images, 32)[0]), hot.probability(logits)
    assert check["label_agreement"] == pytest.approx(np.mean((calibrated[0] >= 0.3) == (calibrated[1] >= 0.3)))
    assert "decision_agreement" not in check  # no Keras decisions given: nothing to compare


@pytest.mark.slow
def test_decision_agreement_runs_the_gate_on_each_files_own_features(trained, exported):
    out, _ = exported
    metrics = trained["metrics"]
    gate = OodGate.load(trained["root"] / "eval" / OOD_STATS_FILE)
    band = metrics["policy"]["refer"]["band"]
    policy = Policy(
        metrics["policy"]["threshold"], metrics["policy"]["calibration"]["temperature"], band and tuple(band), gate
    )
    images, labels, _ = load_split(trained["prepared"], "val")
    model = keras.models.load_model(trained["model"], compile=False)
    logits, features = score_gray(KerasBackend(trained["model"], model), images)
    keras_decisions = policy.decisions(policy.probability(logits), policy.ood_scores(features, len(images)))
    for name in (FLOAT16_FILE, INT8_FILE):
        check = parity(out / name, logits, images, labels, policy.threshold, policy, keras_decisions)
        lite_logits, lite_features = score_gray(LiteRTModel(out / name), images, 32)
        mine = policy.decisions(policy.probability(lite_logits), gate.score(lite_features))
        assert check["decision_agreement"] == pytest.approx(np.mean(mine == keras_decisions)), name
        assert check["decisions"] == {d: int(np.sum(mine == d)) for d in sorted(set(mine))}, name
        assert sum(check["decisions"].values()) == len(images)
    # Keras decisions no file can give: no agreement at all, and refusals says so.
    other = np.full(len(images), "not a decision")
    check = parity(out / INT8_FILE, logits, images, labels, policy.threshold, policy, other)
    assert check["decision_agreement"] == 0.0
    assert "decisions agree with Keras on 0.000" in refusals({"int8": check}, 1.0, 100.0, 0.97)[0]


def test_bad_parity_or_size_is_refused():
    ok = {"file": INT8_FILE, "bytes": 2_900_000, "roc_auc": 0.95, "roc_auc_keras": 0.955, "roc_auc_diff": -0.005}
    assert refusals({"int8": ok}) == []
    worse = {**ok, "roc_auc": 0.94, "roc_auc_diff": -0.015}
    assert "int8: validation AUC 0.9400 is 0.0150 below Keras" in refusals({"int8": worse})[0]
    assert "exceeds 3.5 MB" in refusals({"int8": {**ok, "bytes": 3_600_000}})[0]
    assert refusals({"int8": {**ok, "roc_auc_diff": None}}) == []  # one class only: no AUC to compare
    agreeing = {**ok, "decision_agreement": 0.97}
    assert refusals({"int8": agreeing}, min_agreement=0.97) == []
    low = refusals({"int8": {**ok, "decision_agreement": 0.95}}, min_agreement=0.97)
    assert len(low) == 1 and "int8: validation decisions agree with Keras on 0.950 of images, below 0.97" in low[0]
    assert refusals({"int8": {**ok, "decision_agreement": 0.95}}) == []  # min_agreement 0: no check


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
