"""Grad-CAM for the Keras model: where in the image the PNEUMONIA logit looks.

Gradients are taken of the logit (`pneumo.model.LOGIT`, the Dense before the sigmoid, which
does not saturate) with respect to MobileNetV2's last conv activation (`pneumo.model.LAST_CONV`,
`out_relu`), through a functional sub-model from the model's input to both tensors. Maps are
upsampled to the input size and scaled to [0, 1] per image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.model import LAST_CONV, LOGIT


def cam_model(model):
    """model.input -> [out_relu activations, logit]."""
    import keras

    try:
        conv, logit = model.get_layer(LAST_CONV), model.get_layer(LOGIT)
    except ValueError as exc:
        raise ValueError(f"gradcam: the model has no layer {LAST_CONV!r} and {LOGIT!r} "
                         f"(a pneumo MobileNetV2 model is expected): {exc}") from None
    return keras.Model(model.input, [conv.output, logit.output], name="gradcam")


def gradcam(model, batch: np.ndarray, sub_model=None) -> np.ndarray:
    """(N, S, S, 3) pixels in [0, 255] -> (N, S, S) float32 Grad-CAM maps in [0, 1]."""
    import tensorflow as tf

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
        up = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR))
        peak = float(up.max())
        out[i] = up / peak if peak > 0 else up
    return out


def overlay(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """(S, S) uint8 image + (S, S) map in [0, 1] -> (S, S, 3) uint8 RGB (jet colour map)."""
    from matplotlib import colormaps

    colour = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    base = np.repeat(gray[..., None].astype(np.float32), 3, axis=-1)
    return np.clip((1 - alpha) * base + alpha * colour, 0, 255).astype(np.uint8)


def save_overlay(path: str | Path, gray: np.ndarray, heat: np.ndarray) -> Path:
    from pneumo.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(overlay(gray, heat)).save(tmp, format="PNG")
    return path
