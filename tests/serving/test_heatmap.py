"""Grad-CAM of a LiteRT file without TensorFlow: the head's gradient is right, and the maps are Keras' Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
from serve_support import real_xrays

from support import needs_real_data

pytest.importorskip("ai_edge_litert")

from pneumo.core.images import load_image, to_rgb  # noqa: E402
from pneumo.serving.heatmap import HIDDEN, LAST_CONV, LOGIT, Head, LiteRTGradCam, read_head  # noqa: E402
from pneumo.serving.packaged import keras_beside, packaged_model  # noqa: E402


def test_the_head_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    head = Head(rng.normal(size=(12, 5)), rng.normal(size=5), rng.normal(size=5))

    def logit(p: np.ndarray) -> float:
        return float(np.maximum(p @ head.w1 + head.b1, 0) @ head.w2)

    pooled = rng.normal(size=12)
    eps = 1e-6
    numeric = [(logit(pooled + eps * e) - logit(pooled - eps * e)) / (2 * eps) for e in np.eye(12)]
    np.testing.assert_allclose(head.gradient(pooled[None])[0], numeric, rtol=1e-5, atol=1e-8)


def test_layer_names_are_the_networks():
    keras_model = pytest.importorskip("pneumo.nn.model")
    assert (LAST_CONV, LOGIT) == (keras_model.LAST_CONV, keras_model.LOGIT)
    head = read_head(keras_beside(packaged_model()))
    assert head.w1.shape[0] == 1280 and HIDDEN == "dense"


def test_a_file_that_is_not_a_pneumo_h5_is_refused(tmp_path):
    bad = tmp_path / "model.h5"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="model.h5: not an HDF5 file"):
        read_head(bad)


@needs_real_data
def test_litert_maps_are_the_keras_grad_cam_of_the_same_model():
    pytest.importorskip("tensorflow")
    from pneumo.nn.gradcam import gradcam
    from pneumo.nn.model import load

    model = packaged_model()
    rgb = to_rgb(np.stack([load_image(p, 224) for p in real_xrays(6)]))
    lite = LiteRTGradCam(model, keras_beside(model)).maps(rgb)
    keras_maps = gradcam(load(keras_beside(model)), rgb)
    assert lite.shape == keras_maps.shape == (6, 224, 224) and lite.max() == pytest.approx(1.0)
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(lite, keras_maps, strict=True)]
    assert min(corr) > 0.95, corr  # int8 activations and quantized Dense layers: measured 0.976-0.998
