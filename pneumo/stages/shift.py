"""Validation under simulated acquisition shift: the validation images, changed the way another
scanner, exposure or export pipeline would change them, scored with the clean operating threshold.

Why: validation carved from train is near saturated here (ROC-AUC 0.99+) and does not rank
recipes the way the official test split does (docs: experiments/README.md). The official test
images come from a later acquisition; a model whose validation scores survive exposure, blur,
resolution, contrast-equalisation and noise changes is expected to survive that shift better.
The perturbations are fixed and deterministic, and none of them looks at a test image.

Each perturbation maps (N, S, S) uint8 luminance to the same shape and dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from pneumo.core.metrics import shifted_metrics

Perturbation = Callable[[np.ndarray], np.ndarray]


def gamma(exponent: float) -> Perturbation:
    """Exposure: 255 * (x / 255) ** exponent (below 1 brightens the mid-tones, above 1 darkens)."""
    table = np.round(255.0 * (np.arange(256) / 255.0) ** exponent).astype(np.uint8)
    return lambda images: table[images]


def blur(sigma: float) -> Perturbation:
    """A softer detector: Gaussian blur of `sigma` pixels within each image."""

    def apply(images: np.ndarray) -> np.ndarray:
        out = gaussian_filter(images.astype(np.float32), sigma=(0, sigma, sigma), mode="nearest")
        return np.clip(np.round(out), 0, 255).astype(np.uint8)

    return apply


def low_resolution(factor: int) -> Perturbation:
    """A coarser source: down-sampled by `factor` and back up (bilinear)."""

    def apply(images: np.ndarray) -> np.ndarray:
        side = images.shape[-1]
        small = (max(1, side // factor), max(1, images.shape[-2] // factor))
        return np.stack(
            [
                np.asarray(
                    Image.fromarray(img, mode="L")
                    .resize(small, Image.Resampling.BILINEAR)
                    .resize((side, images.shape[-2]), Image.Resampling.BILINEAR),
                    dtype=np.uint8,
                )
                for img in images
            ]
        )

    return apply


def equalize(images: np.ndarray) -> np.ndarray:
    """Another export pipeline's contrast: global histogram equalisation of each image."""
    out = np.empty_like(images)
    for i, img in enumerate(images):
        hist = np.bincount(img.ravel(), minlength=256)
        cdf = np.cumsum(hist)
        lowest = cdf[np.flatnonzero(hist)[0]]
        span = cdf[-1] - lowest
        table = np.zeros(256) if span == 0 else np.round((cdf - lowest) / span * 255.0)
        out[i] = np.clip(table, 0, 255).astype(np.uint8)[img]
    return out


def noise(sigma: float, seed: int = 0) -> Perturbation:
    """A noisier detector: additive Gaussian noise of `sigma` grey levels (fixed seed)."""

    def apply(images: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed)
        noisy = images.astype(np.float32) + rng.normal(0.0, sigma, images.shape).astype(np.float32)
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8)

    return apply


# The fixed set, named as the metrics file names them. Changing it changes what `val_shift` means:
# runs scored with another set are not comparable on it.
PERTURBATIONS: dict[str, Perturbation] = {
    "gamma_0.67": gamma(0.67),
    "gamma_1.5": gamma(1.5),
    "blur_1.5": blur(1.5),
    "lowres_2": low_resolution(2),
    "equalize": equalize,
    "noise_10": noise(10.0),
}


def score(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    y: np.ndarray,
    threshold: float,
    perturbations: dict[str, Perturbation] | None = None,
) -> dict:
    """`shifted_metrics` of `predict` (uint8 luminance batch -> probabilities) under each perturbation."""
    perturbations = PERTURBATIONS if perturbations is None else perturbations
    return shifted_metrics(y, {name: predict(f(images)) for name, f in perturbations.items()}, threshold)
