"""The input gate's content check: how unlike the training X-rays an image is, from the network's own features.

The score is the Mahalanobis distance of an image's pooled MobileNetV2 features (the 1280
numbers the classifier head reads) from the training split's mean, under a Ledoit-Wolf shrinkage
covariance (scikit-learn): Lee et al. 2018's detector with one class-agnostic Gaussian. It needs
no second network, and the same two arrays score Keras and LiteRT features alike. The threshold
is set on validation: the distance that keeps a chosen share (0.99) of validation X-rays.

The statistics travel as one small `.npz` file (`mean` (D,), `precision` (D, D), float32, plus
the `threshold`): a phone reads two arrays and computes sqrt((x - mean)^T precision (x - mean)).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from pneumo.core.io import atomic_path

METHOD = (
    "Mahalanobis distance of the pooled MobileNetV2 features (GlobalAveragePooling output) from the "
    "training split's mean, Ledoit-Wolf shrinkage covariance (scikit-learn)"
)


@dataclass(frozen=True)
class OodGate:
    """Training-feature statistics and the distance above which an image is refused."""

    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D), symmetric
    threshold: float  # a distance (same units as `score`)
    shrinkage: float = 0.0

    @cached_property
    def _mean64(self) -> np.ndarray:
        return np.asarray(self.mean, np.float64)

    @cached_property
    def _precision64(self) -> np.ndarray:  # converted once, not per image (a service scores one at a time)
        return np.asarray(self.precision, np.float64)

    @property
    def dims(self) -> int:
        return int(self.mean.shape[0])

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distances (N,) of (N, D) features; NaN for a row with a non-finite value (never a silent pass)."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dims:
            raise ValueError(f"ood: features of shape {x.shape} do not match the gate's {self.dims} dimensions")
        centered = x - self._mean64
        with np.errstate(invalid="ignore"):  # a non-finite row is NaN below, on purpose
            squared = np.einsum("ij,ij->i", centered @ self._precision64, centered)  # one BLAS product per batch
        out = np.sqrt(np.maximum(squared, 0.0))
        out[~np.isfinite(x).all(axis=1)] = np.nan
        return out

    def refuses(self, scores: np.ndarray) -> np.ndarray:
        """True where a score is above the threshold (or not a number)."""
        scores = np.asarray(scores, np.float64)
        return ~(scores <= self.threshold)

    def save(self, path: str | Path) -> Path:
        """Write the statistics atomically (float32 arrays, uncompressed: readable by any npy reader)."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                mean=self.mean.astype(np.float32),
                precision=self.precision.astype(np.float32),
                threshold=np.float64(self.threshold),
                shrinkage=np.float64(self.shrinkage),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> OodGate:
        """Read statistics written by `save`; a damaged file is refused with its path named."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: input-gate statistics missing (`pneumo evaluate` then `pneumo export`)")
        try:
            with np.load(path, allow_pickle=False) as data:
                mean, precision = data["mean"], data["precision"]
                threshold, shrinkage = float(data["threshold"]), float(data["shrinkage"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: not an input-gate statistics file ({exc})") from None
        if mean.ndim != 1 or precision.shape != (len(mean), len(mean)) or not math.isfinite(threshold):
            raise ValueError(
                f"{path}: inconsistent input-gate statistics (mean {mean.shape}, precision {precision.shape}, "
                f"threshold {threshold})"
            )
        return cls(mean, precision, threshold, shrinkage)


def keep_threshold(scores: np.ndarray, keep: float) -> float:
    """The smallest observed distance that keeps at least `keep` of `scores` (all of them at keep = 1)."""
    scores = np.sort(np.asarray(scores, np.float64))
    if len(scores) == 0:
        raise ValueError("ood: no validation scores to set the threshold on")
    k = min(len(scores), max(1, math.ceil(keep * len(scores) - 1e-9)))
    return float(scores[k - 1])


def fit(train_features: np.ndarray, val_features: np.ndarray, keep: float = 0.99) -> OodGate:
    """Fit mean and shrinkage covariance on training features; set the threshold on validation features."""
    from sklearn.covariance import LedoitWolf  # inside: scikit-learn loads only where a gate is fitted

    x = np.asarray(train_features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"ood: need at least two training feature rows, got shape {x.shape}")
    estimator = LedoitWolf(assume_centered=False).fit(x)
    # float32 as saved, so the threshold is set on exactly the distances a reloaded gate computes.
    mean, precision = estimator.location_.astype(np.float32), estimator.precision_.astype(np.float32)
    gate = OodGate(mean, precision, math.inf, float(estimator.shrinkage_))
    threshold = keep_threshold(gate.score(val_features), keep)
    return OodGate(gate.mean, gate.precision, threshold, gate.shrinkage)
