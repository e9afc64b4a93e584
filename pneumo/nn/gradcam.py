"""Grad-CAM for the Keras model: where in the image the PNEUMONIA logit looks.

Gradients are taken of the logit (`pneumo.nn.model.LOGIT`, the Dense before the sigmoid, which
does not saturate) with respect to MobileNetV2's last conv activation (`pneumo.nn.model.LAST_CONV`,
`out_relu`), through a functional sub-model from the model's input to both tensors. Maps are
upsampled to the input size and scaled to [0, 1] per image. Overlays and captions: `pneumo.core.overlay`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from pneumo.nn.model import LAST_CONV, LOGIT


def cam_model(model):
    """model.input -> [out_relu activations, logit]."""
    try:
        conv, logit = model.get_layer(LAST_CONV), model.get_layer(LOGIT)
    except ValueError as exc:
        raise ValueError(
            f"gradcam: the model has no layer {LAST_CONV!r} and {LOGIT!r} "
            f"(a pneumo MobileNetV2 model is expected): {exc}"
        ) from None
    return keras.Model(model.input, [conv.output, logit.output], name="gradcam")


def gradcam(model, batch: np.ndarray, sub_model=None) -> np.ndarray:
    """(N, S, S, 3) pixels in [0, 255] -> (N, S, S) float32 Grad-CAM maps in [0, 1]."""
    sub = sub_model if sub_model is not None else cam_model(model)
    x = tf.convert_to_tensor(np.asarray(batch, np.float32))
    with tf.GradientTape() as tape:
        conv, logit = sub(x, training=False)
        target = tf.reduce_sum(logit)  # images are independent: one backward pass for the batch
    grads = tape.gradient(target, conv)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * conv, axis=-1)).numpy()
    size = int(batch.shape[1])
    out = np.zeros((len(cams), size, size), np.float32)
    for i, cam in enumerate(cams):
        up = np.asarray(
            Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR)
        )
        peak = float(up.max())
        out[i] = up / peak if peak > 0 else up
    return out
