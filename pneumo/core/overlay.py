"""Heat-map overlays: a map in [0, 1] over the image (jet colour map), captioned with the answer and the
notice that it assists and does not diagnose. No TensorFlow: Grad-CAM from Keras (`pneumo.nn.gradcam`) and
from a LiteRT file (`pneumo.serving.heatmap`) both draw here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from pneumo.core.io import atomic_path


def overlay(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """(S, S) uint8 image + (S, S) map in [0, 1] -> (S, S, 3) uint8 RGB (jet colour map)."""
    from matplotlib import colormaps  # inside: matplotlib takes 0.1 s to import, and every command imports this

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


def _png_info(label: str, probability: float, warning: str | None) -> PngInfo:
    info = PngInfo()
    info.add_text("Label", label)
    info.add_text("Probability", f"{probability:.6f}")
    info.add_text("Notice", ASSISTIVE)
    if warning:
        info.add_text("Warning", warning)
    return info


def overlay_png(
    gray: np.ndarray,
    heat: np.ndarray,
    label: str,
    probability: float,
    threshold: float | None = None,
    warning: str | None = None,
) -> bytes:
    """The captioned overlay as PNG bytes (the caption is also in its tEXt chunks)."""
    buffer = io.BytesIO()
    lines = caption_lines(label, probability, threshold, warning)
    captioned(overlay(gray, heat), lines).save(buffer, format="PNG", pnginfo=_png_info(label, probability, warning))
    return buffer.getvalue()


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
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(overlay_png(gray, heat, label, probability, threshold, warning))
    return path
