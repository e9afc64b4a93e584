"""The answer pneumo gives about one image, on every path: `normal`, `pneumonia`, `refer` or `rejected`.

A `Policy` holds what the evaluate stage decided on validation (and export ships in the model
card): the temperature that calibrates the logit, the operating threshold on the calibrated
probability, the refer band, and the input gate (`pneumo.core.ood`). `Policy.answer` turns one
image's logit and features into an `Answer`; the DICOM metadata gate (`pneumo.core.dicom`)
rejects some files before the model runs. Every answer is assistive, never a diagnosis.

The refer band is class-conditional (Mondrian) split-conformal prediction on validation: with
coverage c, the prediction set of an image holds NORMAL when its probability is at most the
c-quantile of validation NORMAL images' probabilities, and PNEUMONIA when one minus it is at
most the c-quantile of validation PNEUMONIA images' (one minus probability). Where the set holds
both labels the model cannot tell at that coverage: the image is referred. The band is widened to
reach the operating threshold, so a label is never given against its prediction set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pneumo.core.ood import OodGate

NORMAL, PNEUMONIA, REFER, REJECTED = "normal", "pneumonia", "refer", "rejected"
DECISIONS: tuple[str, ...] = (NORMAL, PNEUMONIA, REFER, REJECTED)
ANSWERED: tuple[str, ...] = (NORMAL, PNEUMONIA)
REFER_MEANING = (
    "refer: the model cannot tell at the configured coverage (the image's conformal prediction set holds "
    "both labels); a clinician reads it, no label is given"
)
REJECTED_MEANING = (
    "rejected: not something the model can read (not a frontal chest radiograph by its DICOM header, or "
    "unlike every chest X-ray seen in training); no label is given"
)

GATE_CANNOT_CATCH = (
    "The input gate rejects images unlike the training X-rays (other modalities, photos, charts, text, "
    "noise, rotated or cropped films) and DICOM files whose header says another modality, body part or a "
    "lateral view. It cannot catch what looks like a pediatric frontal chest X-ray but is not one the model "
    "can read: adult chest X-rays, other pathologies (tuberculosis, effusion, tumours), other devices or "
    "hospitals, and a file whose DICOM header is wrong. A gate that passes an image is not a guarantee."
)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Overflow-free logistic function, float64."""
    z = np.asarray(z, np.float64)
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def _nll(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising validation log-loss of sigmoid(logit / T) (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar  # inside: SciPy loads only where a temperature is fitted

    logits, y = np.asarray(logits, np.float64), np.asarray(y, np.float64)
    if len(logits) == 0 or len(np.unique(y)) < 2:
        return 1.0  # nothing to fit on: leave the logit as it is
    result = minimize_scalar(lambda t: _nll(y, sigmoid(logits / t)), bounds=(0.05, 20.0), method="bounded")
    return float(result.x)


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The split-conformal quantile: the ceil((n + 1) * coverage)-th smallest score (inf past the end)."""
    scores = np.sort(np.asarray(scores, np.float64))
    k = math.ceil((len(scores) + 1) * coverage)
    return float(scores[k - 1]) if 1 <= k <= len(scores) else math.inf


def conformal_band(probability: np.ndarray, y: np.ndarray, coverage: float) -> tuple[float, float] | None:
    """Probabilities whose class-conditional conformal set holds both labels, as [low, high]; None if none do."""
    probability, y = np.asarray(probability, np.float64), np.asarray(y)
    if coverage <= 0:
        return None
    q_normal = conformal_quantile(probability[y == 0], coverage)  # NORMAL in the set iff p <= q_normal
    q_pneumonia = conformal_quantile(1.0 - probability[y == 1], coverage)  # PNEUMONIA iff 1 - p <= q_pneumonia
    low, high = max(0.0, 1.0 - q_pneumonia), min(1.0, q_normal)
    return (low, high) if low <= high else None


def refer_band(probability: np.ndarray, y: np.ndarray, coverage: float, threshold: float) -> tuple[float, float] | None:
    """The conformal band widened to reach `threshold`; None when the rule is off (coverage 0) or finds no band."""
    band = conformal_band(probability, y, coverage)
    if band is None:
        return None
    return (min(band[0], threshold), max(band[1], threshold))


@dataclass(frozen=True)
class Answer:
    """One image's answer: what pneumo says, with the numbers and reasons behind it."""

    decision: str
    probability: float | None
    ood_score: float | None
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "probability": self.probability,
            "ood_score": self.ood_score,
            "reasons": list(self.reasons),
        }


def rejected_before_model(reasons: list[str]) -> Answer:
    """A file the DICOM metadata gate refused: the model never ran."""
    return Answer(REJECTED, None, None, list(reasons))


@dataclass(frozen=True)
class Policy:
    """What turns a logit and features into an answer (chosen on validation by the evaluate stage)."""

    threshold: float
    temperature: float = 1.0
    refer: tuple[float, float] | None = None
    gate: OodGate | None = None

    def probability(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated P(PNEUMONIA) of raw logits."""
        return sigmoid(np.asarray(logits, np.float64) / self.temperature)

    def ood_scores(self, features: np.ndarray | None, n: int) -> np.ndarray:
        """Input-gate distances (N,); NaN everywhere when there is no gate or no features."""
        if self.gate is None or features is None:
            return np.full(n, np.nan)
        return self.gate.score(features)

    def decisions(self, probability: np.ndarray, ood: np.ndarray) -> np.ndarray:
        """Vectorised decisions (N,) of calibrated probabilities and gate distances (NaN: no gate)."""
        p, ood = np.asarray(probability, np.float64), np.asarray(ood, np.float64)
        out = np.where(p >= self.threshold, PNEUMONIA, NORMAL).astype(object)
        if self.refer is not None:
            out[(p >= self.refer[0]) & (p <= self.refer[1])] = REFER
        if self.gate is not None:
            out[self.gate.refuses(ood)] = REJECTED  # a NaN distance is refused too
        return out.astype(str)

    def answer(self, logit: float, features: np.ndarray | None, notes: list[str] | None = None) -> Answer:
        """One image's answer from its raw logit and pooled features (None: the gate cannot run)."""
        p = float(self.probability(np.array([logit]))[0])
        reasons = list(notes or [])
        score = None
        if self.gate is not None:
            if features is None:
                reasons.append("the model file gives no features: the input gate cannot run")
                return Answer(REJECTED, p, None, reasons)
            score = float(self.gate.score(np.asarray(features)[None])[0])
            if not score <= self.gate.threshold:
                shown = f"score {score:.1f} > {self.gate.threshold:.1f}" if math.isfinite(score) else "no finite score"
                reasons.append(f"image unlike any chest X-ray seen in training ({shown})")
                return Answer(REJECTED, p, _finite(score), reasons)
        if self.refer is not None and self.refer[0] <= p <= self.refer[1]:
            reasons.append(f"probability {p:.2f} is inside the refer band {self.refer[0]:.2f}–{self.refer[1]:.2f}")
            return Answer(REFER, p, score, reasons)
        if p >= self.threshold:
            reasons.append(f"probability {p:.2f} is at or above the operating threshold {self.threshold:.2f}")
            return Answer(PNEUMONIA, p, score, reasons)
        reasons.append(f"probability {p:.2f} is below the operating threshold {self.threshold:.2f}")
        return Answer(NORMAL, p, score, reasons)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
