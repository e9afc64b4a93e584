"""Figures from labels and probabilities (PNEUMONIA positive): thresholds, confusion-matrix
figures, ranking figures, patient-bootstrap intervals, curves, and figures under shift."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve


def threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """The highest threshold at which sensitivity (recall of PNEUMONIA) is at least `target`."""
    positives = np.sort(p[y == 1])
    if len(positives) == 0:
        raise ValueError("evaluate: the validation split has no PNEUMONIA image; cannot set a threshold")
    # Predicting positive for p >= t keeps every positive whose score is >= t.
    k = int(np.floor((1.0 - target) * len(positives) + 1e-9))
    return float(positives[min(k, len(positives) - 1)])


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float | int]:
    """Threshold-dependent figures plus the confusion matrix (PNEUMONIA positive)."""
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "specificity": float(tn / (tn + fp)) if tn + fp else 0.0,
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
    }


def ranking_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """Threshold-free figures; AUCs are None (JSON null) where one class is missing."""
    if len(np.unique(y)) < 2:
        return {"roc_auc": None, "pr_auc": None, "brier": float(skm.brier_score_loss(y, p))}
    return {
        "roc_auc": float(skm.roc_auc_score(y, p)),
        "pr_auc": float(skm.average_precision_score(y, p)),
        "brier": float(skm.brier_score_loss(y, p)),
    }


def bootstrap_intervals(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray, threshold: float, n: int, seed: int
) -> dict[str, list[float]]:
    """95% percentile intervals of the threshold and ranking figures, resampling patients (images of one
    child move together); a resample with one class only is skipped."""

    def figures(idx: np.ndarray) -> dict[str, float | None]:
        yb, pb = y[idx], p[idx]
        if len(np.unique(yb)) < 2:
            return {}
        out = {**binary_metrics(yb, pb, threshold), **ranking_metrics(yb, pb)}
        return {
            key: out[key]
            for key in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc", "brier")
        }

    return bootstrap_figures(groups, figures, n, seed)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE over `bins` equal-width probability bins: the image-weighted mean |observed rate - mean probability|."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    if len(y) == 0:
        return 0.0
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        members = which == b
        total += members.sum() * abs(y[members].mean() - p[members].mean())
    return float(total / len(y))


def bootstrap_figures(
    groups: np.ndarray, figures: Callable[[np.ndarray], dict[str, float | None]], n: int, seed: int
) -> dict[str, list[float]]:
    """95% percentile intervals of `figures(indices)`, resampling patients (a child's images move together).

    A figure that is None in a resample (e.g. no positives left) is skipped there.
    """
    if n == 0 or len(groups) == 0:
        return {}
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    samples: dict[str, list[float]] = {}
    for _ in range(n):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        for key, value in figures(idx).items():
            if value is not None:
                samples.setdefault(key, []).append(value)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items()}


def curves(y: np.ndarray, p: np.ndarray, bins: int) -> dict[str, pd.DataFrame]:
    fpr, tpr, roc_t = skm.roc_curve(y, p)
    precision, recall, pr_t = skm.precision_recall_curve(y, p)
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=bins, strategy="uniform")
    return {
        "roc": pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(roc_t, 1.0)}),
        "pr": pd.DataFrame({"recall": recall, "precision": precision, "threshold": np.append(pr_t, 1.0)}),
        "calibration": pd.DataFrame({"mean_predicted": mean_pred, "fraction_positive": frac_pos}),
    }


def shifted_metrics(y: np.ndarray, probabilities: dict[str, np.ndarray], threshold: float) -> dict:
    """Per perturbation: ROC-AUC, and sensitivity, specificity and balanced accuracy at `threshold`
    (the clean operating threshold); `mean` averages each figure over the perturbations."""
    per: dict[str, dict[str, float | None]] = {}
    for name, p in probabilities.items():
        at = binary_metrics(y, p, threshold)
        per[name] = {
            "roc_auc": ranking_metrics(y, p)["roc_auc"],
            "recall": at["recall"],
            "specificity": at["specificity"],
            "balanced_accuracy": (at["recall"] + at["specificity"]) / 2.0,
        }
    keys = ("roc_auc", "recall", "specificity", "balanced_accuracy")
    mean = {
        k: (
            float(np.mean([v[k] for v in per.values()]))
            if per and all(v[k] is not None for v in per.values())
            else None
        )
        for k in keys
    }
    worst = min((v["roc_auc"] for v in per.values() if v["roc_auc"] is not None), default=None)
    return {**mean, "worst_roc_auc": worst, "threshold": float(threshold), "perturbations": per}
