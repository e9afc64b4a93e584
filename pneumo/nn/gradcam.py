"""Grad-CAM for the Keras model: where in the image the PNEUMONIA logit looks.

Gradients are taken of the logit (`pneumo.nn.model.LOGIT`, the Dense before the sigmoid, which
does not saturate) with respect to MobileNetV2's last conv activation (`pneumo.nn.model.LAST_CONV`,
`out_relu`), through a functional sub-model from the model's input to both tensors. Maps are
upsampled to the input size and scaled to [0, 1] per image.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from pneumo.core.io import atomic_path
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


def overlay(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """(S, S) uint8 image + (S, S) map in [0, 1] -> (S, S, 3) uint8 RGB (jet colour map)."""
    colour = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    base = np.repeat(gray[..., None].astype(np.float32), 3, axis=-1)
    return np.clip((1 - alpha) * base + alpha * colour, 0, 255).astype(np.uint8)


ASSISTIVE = "Assistive heat map, not a diagnosis"
MIN_WIDTH = 384  # px: the caption must be legible, and the model's input may be 96 px wide


def caption_lines(
    label: str, probability: float, threshold: float | None = None, warning: str | None = None
) -> list[str]:
    """What every heat map says about itself: the answer, that it assists, and any warning."""
    answer = f"{label}  p(PNEUMONIA) = {probability:.3f}"
    if threshold is not None:
        answer += f"  (threshold {threshold:.3f})"
    return [answer, ASSISTIVE] + ([f"WARNING: {warning}"] if warning else [])


def _wrap(draw, text: str, font, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def captioned(rgb: np.ndarray, lines: list[str]) -> Image.Image:
    """The overlay, scaled up to a legible width, over a band holding `lines` (warnings in red)."""
    img = Image.fromarray(rgb)
    if img.width < MIN_WIDTH:
        img = img.resize((MIN_WIDTH, round(img.height * MIN_WIDTH / img.width)), Image.Resampling.BILINEAR)
    font = ImageFont.load_default(size=15)
    pad, step = 8, 20
    probe = ImageDraw.Draw(img)
    wrapped = [(w, text.startswith("WARNING")) for text in lines for w in _wrap(probe, text, font, img.width - 2 * pad)]
    out = Image.new("RGB", (img.width, img.height + 2 * pad + step * len(wrapped)), "white")
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, (text, warn) in enumerate(wrapped):
        draw.text((pad, img.height + pad + k * step), text, fill=(200, 0, 0) if warn else (0, 0, 0), font=font)
    return out


def save_overlay(
    path: str | Path,
    gray: np.ndarray,
    heat: np.ndarray,
    label: str,
    probability: float,
    threshold: float | None = None,
    warning: str | None = None,
) -> Path:
    """Write the captioned overlay as a PNG (atomically); the caption is also in its tEXt chunks."""
    path = Path(path)
    lines = caption_lines(label, probability, threshold, warning)
    info = PngInfo()
    info.add_text("Label", label)
    info.add_text("Probability", f"{probability:.6f}")
    info.add_text("Notice", ASSISTIVE)
    if warning:
        info.add_text("Warning", warning)
    with atomic_path(path) as tmp:
        captioned(overlay(gray, heat), lines).save(tmp, format="PNG", pnginfo=info)
    return path
