"""The network: input contract, inner layers, freezing, weights."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pneumo.nn.model import (  # noqa: E402
    IMAGENET_NO_TOP,
    LAST_CONV,
    LOGIT,
    WeightsUnavailable,
    base_layers,
    build_model,
    set_trainable_top,
)


@pytest.fixture(scope="module")
def model(keras_home):
    return build_model(96, "imagenet", dense_units=8, dropout=0.0)


def test_takes_raw_rgb_pixels_and_outputs_a_probability(model):
    assert model.input_shape == (None, 96, 96, 3)
    rng = np.random.default_rng(0)
    out = model.predict_on_batch(rng.uniform(0, 255, (4, 96, 96, 3)).astype("float32"))
    assert out.shape == (4, 1)
    assert np.all((out > 0) & (out < 1))


def test_imagenet_weights_are_loaded_into_the_base(model, keras_home):
    reference = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), include_top=False, weights=str(keras_home / "models" / IMAGENET_NO_TOP)
    )
    for name in ("Conv1", "block_16_project", "Conv_1"):
        for ours, theirs in zip(model.get_layer(name).get_weights(), reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)


def test_inner_layers_reachable_for_grad_cam(model):
    assert model.get_layer(LAST_CONV).output.shape[-1] == 1280
    assert model.get_layer(LOGIT).output.shape[-1] == 1
    # The logit feeds the sigmoid directly: gradients can be taken on it.
    assert model.layers[-1].name == "probability"


def test_set_trainable_top_freezes_everything_but_the_top(model):
    layers = base_layers(model)
    assert layers[0].name == "Conv1" and layers[-1].name == LAST_CONV
    assert set_trainable_top(model, 0) == 0
    assert not any(layer.trainable for layer in layers)
    n = set_trainable_top(model, 10)
    top = layers[-10:]
    assert n == sum(1 for layer in top if layer.weights and not isinstance(layer, keras.layers.BatchNormalization))
    assert all(not isinstance(layer, keras.layers.BatchNormalization) or not layer.trainable for layer in top)
    assert not any(layer.trainable for layer in layers[:-10])
    everything = set_trainable_top(model, None, train_batchnorm=True)
    assert everything == sum(1 for layer in layers if layer.weights)


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    """An empty Keras cache, and a download that fails at once (a closed local port)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr("keras.src.applications.mobilenet_v2.BASE_WEIGHT_PATH", "http://127.0.0.1:9/")


def test_offline_with_an_empty_cache_the_shipped_weights_are_used(offline_empty_cache, keras_home):
    from pneumo.core.io import sha256_file
    from pneumo.nn.model import IMAGENET_NO_TOP_SHA256, PACKAGED_WEIGHTS, imagenet_weights_file

    assert imagenet_weights_file() == PACKAGED_WEIGHTS
    assert sha256_file(keras_home / "models" / IMAGENET_NO_TOP) == IMAGENET_NO_TOP_SHA256


def test_a_damaged_shipped_copy_is_ignored(offline_empty_cache, tmp_path, monkeypatch):
    damaged = tmp_path / IMAGENET_NO_TOP
    damaged.write_bytes(b"not the weights")
    monkeypatch.setattr("pneumo.nn.model.PACKAGED_WEIGHTS", damaged)
    with pytest.raises(WeightsUnavailable):
        build_model(96, "imagenet")


def test_missing_imagenet_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr("pneumo.nn.model.PACKAGED_WEIGHTS", tmp_path / "absent.h5")
    # Point the download at a closed local port: offline, whatever the machine's network.
    monkeypatch.setattr("keras.src.applications.mobilenet_v2.BASE_WEIGHT_PATH", "http://127.0.0.1:9/")
    with pytest.raises(WeightsUnavailable, match=IMAGENET_NO_TOP):
        build_model(96, "imagenet")


def test_weights_file_that_is_not_weights_is_refused(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(ValueError, match="bad.h5"):
        build_model(96, str(bad))
