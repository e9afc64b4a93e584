"""Grad-CAM: the map points at the evidence a model was trained to use."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pneumo.core.images import to_rgb  # noqa: E402
from pneumo.core.overlay import ASSISTIVE, MIN_WIDTH, caption_lines, overlay, save_overlay  # noqa: E402
from pneumo.nn.gradcam import cam_model, gradcam  # noqa: E402
from pneumo.nn.model import build_model, set_trainable_top  # noqa: E402

SIZE, SQUARE = 160, 40


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int] | None]]:
    """Noisy gray images; label 1 has a bright square somewhere (its corner is returned)."""
    rng = np.random.default_rng(seed)
    images = np.clip(90 + 20 * rng.standard_normal((n, SIZE, SIZE)), 0, 255)
    labels = np.arange(n) % 2
    corners: list[tuple[int, int] | None] = []
    for i in range(n):
        if labels[i]:
            r, c = rng.integers(0, SIZE - SQUARE, 2)
            images[i, r : r + SQUARE, c : c + SQUARE] = 230
            corners.append((int(r), int(c)))
        else:
            corners.append(None)
    return images.astype(np.uint8), labels.astype(np.float32), corners


@pytest.fixture(scope="module")
def square_model(keras_home):
    """MobileNetV2 (ImageNet, base frozen) + head, trained to find a bright square.

    160 px: out_relu is 5x5 there (3x3 at 96 px is too coarse to locate a square).
    """
    keras.utils.set_random_seed(0)
    model = build_model(SIZE, "imagenet", dense_units=32, dropout=0.0)
    set_trainable_top(model, 0)
    images, labels, _ = _images(160, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(to_rgb(images), labels, epochs=6, batch_size=32, verbose=0)
    return model


@pytest.mark.slow
def test_the_heatmap_mass_sits_on_the_planted_square(square_model):
    images, labels, corners = _images(24, seed=7)
    probs = square_model.predict_on_batch(to_rgb(images)).reshape(-1)
    assert probs[labels == 1].mean() > probs[labels == 0].mean() + 0.3, "the model did not learn the square"
    positives = np.flatnonzero(labels == 1)
    heat = gradcam(square_model, to_rgb(images[positives]))
    assert heat.shape == (len(positives), SIZE, SIZE) and heat.min() >= 0 and heat.max() <= 1.0 + 1e-6
    ratios = []
    for k, i in enumerate(positives):
        r, c = corners[i]
        mask = np.zeros((SIZE, SIZE), bool)
        mask[r : r + SQUARE, c : c + SQUARE] = True
        ratios.append(heat[k][mask].mean() / max(heat[k][~mask].mean(), 1e-9))
    # Per unit area the square holds more of the map than the rest, in every image, and on the
    # whole more than twice as much.
    assert min(ratios) > 1.5 and np.median(ratios) > 2.0, f"inside/outside ratios {np.round(ratios, 2)}"


@pytest.mark.slow
def test_the_sub_model_exposes_the_last_conv_and_the_logit(square_model):
    sub = cam_model(square_model)
    conv, logit = sub(to_rgb(np.zeros((1, SIZE, SIZE), np.uint8)))
    assert tuple(conv.shape) == (1, 5, 5, 1280) and tuple(logit.shape) == (1, 1)
    prob = square_model.predict_on_batch(to_rgb(np.zeros((1, SIZE, SIZE), np.uint8)))
    np.testing.assert_allclose(1 / (1 + np.exp(-np.asarray(logit))), prob, atol=1e-5)


def test_overlay_is_an_rgb_png_of_the_image_size(tmp_path):
    gray = np.full((SIZE, SIZE), 100, np.uint8)
    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[:10, :10] = 1.0
    rgb = overlay(gray, heat)
    assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8
    assert not np.array_equal(rgb[0, 0], rgb[-1, -1])  # hot and cold corners are coloured differently


def _saved(path) -> tuple[np.ndarray, dict[str, str]]:
    from PIL import Image

    with Image.open(path) as img:
        assert img.mode == "RGB"
        return np.asarray(img).astype(int), dict(img.text)


def test_a_saved_heat_map_carries_its_label_probability_and_notice(tmp_path):
    gray = np.full((SIZE, SIZE), 100, np.uint8)
    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[:10, :10] = 1.0
    plain, text = _saved(save_overlay(tmp_path / "a.png", gray, heat, "PNEUMONIA", 0.8731, 0.5))
    assert text == {"Label": "PNEUMONIA", "Probability": "0.873100", "Notice": ASSISTIVE}
    assert caption_lines("PNEUMONIA", 0.8731, 0.5)[:2] == [
        "PNEUMONIA  p(PNEUMONIA) = 0.873  (threshold 0.500)",
        ASSISTIVE,
    ]
    width = max(SIZE, MIN_WIDTH)
    assert plain.shape[1] == width and plain.shape[0] > width  # the overlay, scaled, over a caption band
    band = plain[width:]
    assert (band.max(axis=-1) < 100).sum() > 200  # dark caption text was drawn on white
    red = (band[..., 0] > 150) & (band[..., 1] < 80) & (band[..., 2] < 80)
    assert red.sum() == 0

    warned, text = _saved(save_overlay(tmp_path / "b.png", gray, heat, "PNEUMONIA", 0.8731, 0.5, "SYNTHETIC model"))
    assert text["Warning"] == "SYNTHETIC model" and text["Label"] == "PNEUMONIA"
    band = warned[width:]
    assert band.shape[0] > plain.shape[0] - width  # one more line
    red = (band[..., 0] > 150) & (band[..., 1] < 80) & (band[..., 2] < 80)
    assert red.sum() > 50  # the warning is drawn in red
    # The picture itself is the overlay, only scaled.
    assert np.array_equal(warned[:width], plain[:width])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # written atomically


def test_a_model_without_the_named_layers_is_refused():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="out_relu"):
        cam_model(model)
