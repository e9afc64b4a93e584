"""evaluate: metrics on validation and test, at 0.5 and at an operating threshold chosen on validation.

The operating threshold is the highest one whose validation sensitivity reaches
`evaluate.target_sensitivity`; test figures get patient-level bootstrap 95% intervals.
`val_shift` scores validation again under simulated acquisition shifts (`pneumo.shift`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from pneumo import LABELS
from pneumo.config import EvaluateParams, as_dict
from pneumo.io import atomic_dir, read_json, write_json
from pneumo.prepare import SUMMARY as PREPARE_SUMMARY
from pneumo.prepare import data_statement, load_split

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
PLOTS_DIR = "plots"
# predictions.csv columns of the validation rows scored under each shift (pneumo.shift.PERTURBATIONS),
# so the promotion gate can resample val_shift by patient as it does clean validation.
SHIFT_COLUMN = "probability_shift_"
EVAL_SPLITS = ("val", "test")


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
        "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
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


def bootstrap_intervals(y: np.ndarray, p: np.ndarray, groups: np.ndarray, threshold: float,
                        n: int, seed: int) -> dict[str, list[float]]:
    """95% percentile intervals, resampling patients (images of one child move together)."""
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    samples: dict[str, list[float]] = {}
    for _ in range(n):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        yb, pb = y[idx], p[idx]
        if len(np.unique(yb)) < 2:
            continue
        figures = {**binary_metrics(yb, pb, threshold), **ranking_metrics(yb, pb)}
        for key in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc", "brier"):
            samples.setdefault(key, []).append(figures[key])
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items()}


def curves(y: np.ndarray, p: np.ndarray, bins: int) -> dict[str, pd.DataFrame]:
    fpr, tpr, roc_t = skm.roc_curve(y, p)
    precision, recall, pr_t = skm.precision_recall_curve(y, p)
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=bins, strategy="uniform")
    return {
        "roc": pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(roc_t, 1.0)}),
        "pr": pd.DataFrame({"recall": recall, "precision": precision,
                            "threshold": np.append(pr_t, 1.0)}),
        "calibration": pd.DataFrame({"mean_predicted": mean_pred, "fraction_positive": frac_pos}),
    }


def predict_images(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities (N,) of (N, S, S) uint8 luminance images, in batches."""
    from pneumo.images import to_rgb

    probs = np.zeros(len(images), np.float32)
    for start in range(0, len(images), batch_size):
        batch = to_rgb(images[start:start + batch_size])
        probs[start:start + batch_size] = model.predict_on_batch(batch).reshape(-1)
    return probs


def predict_split(model, prepared_dir: Path, split: str, batch_size: int = 64) -> pd.DataFrame:
    """Per-image probabilities of one split, with the manifest's path, label and patient."""
    images, labels, rows = load_split(prepared_dir, split)
    probs = predict_images(model, images, batch_size)
    return pd.DataFrame({"path": rows["path"], "split": split, "patient": rows["patient"],
                         "label": rows["label"], "y": labels, "probability": probs})


def summarize(predictions: pd.DataFrame, params: EvaluateParams) -> dict:
    """All metrics from per-image predictions (pure: the stage and the tests call this)."""
    val = predictions[predictions["split"] == "val"]
    operating = threshold_for_sensitivity(val["y"].to_numpy(), val["probability"].to_numpy(),
                                          params.target_sensitivity)
    out: dict = {"operating_threshold": operating, "target_sensitivity": params.target_sensitivity}
    for split in EVAL_SPLITS:
        part = predictions[predictions["split"] == split]
        if part.empty:
            continue
        y, p = part["y"].to_numpy(), part["probability"].to_numpy()
        entry = {"images": int(len(part)), "positives": int(y.sum()), **ranking_metrics(y, p),
                 "at_0.5": binary_metrics(y, p, 0.5), "at_operating": binary_metrics(y, p, operating)}
        if split == "test":
            groups = part["patient"].to_numpy()
            entry["ci95"] = {
                "at_operating": bootstrap_intervals(y, p, groups, operating, params.bootstrap, params.seed),
                "at_0.5": bootstrap_intervals(y, p, groups, 0.5, params.bootstrap, params.seed),
            }
        out[split] = entry
    return out


def shifted_validation(model, prepared_dir: Path, threshold: float) -> dict:
    """Validation under the simulated acquisition shifts of `pneumo.shift`, at the clean threshold."""
    from pneumo import shift

    images, labels, _ = load_split(prepared_dir, "val")
    return shift.score(lambda batch: predict_images(model, batch), images, labels, threshold)


def shifted_probabilities(model, prepared_dir: Path) -> dict[str, np.ndarray]:
    """Validation probabilities (cache order) under each simulated acquisition shift of `pneumo.shift`."""
    from pneumo import shift

    images, _, _ = load_split(prepared_dir, "val")
    return {name: predict_images(model, perturb(images)) for name, perturb in shift.PERTURBATIONS.items()}


def evaluate(prepared_dir: str | Path, model_path: str | Path, out_dir: str | Path,
             params: EvaluateParams) -> dict:
    """Run the stage: metrics.json, predictions.csv and plots/*.csv into `out_dir`."""
    from pneumo.model import load

    prepared_dir = Path(prepared_dir)
    prep = read_json(prepared_dir / PREPARE_SUMMARY)
    model = load(model_path)
    predictions = pd.concat([predict_split(model, prepared_dir, s) for s in EVAL_SPLITS], ignore_index=True)
    result = {
        "synthetic": prep["synthetic"],
        "test_source": prep["test_source"],
        "note": data_statement(prep["synthetic"], prep["test_source"]),
        **summarize(predictions, params),
        "params": as_dict(params),
    }
    from pneumo.shift import shifted_metrics

    val_rows = predictions["split"] == "val"
    shifted = shifted_probabilities(model, prepared_dir)
    result["val_shift"] = shifted_metrics(predictions.loc[val_rows, "y"].to_numpy(), shifted,
                                          result["operating_threshold"])
    for name, probs in shifted.items():
        predictions.loc[val_rows, SHIFT_COLUMN + name] = probs
    with atomic_dir(out_dir) as tmp:
        predictions.drop(columns=["y"]).to_csv(tmp / PREDICTIONS_FILE, index=False)
        plots = tmp / PLOTS_DIR
        plots.mkdir()
        for split in EVAL_SPLITS:
            part = predictions[predictions["split"] == split]
            if part.empty or part["y"].nunique() < 2:
                continue
            for name, frame in curves(part["y"].to_numpy(), part["probability"].to_numpy(),
                                      params.calibration_bins).items():
                frame.to_csv(plots / f"{name}_{split}.csv", index=False)
            t = result["operating_threshold"]
            pd.DataFrame({"actual": part["label"],
                          "predicted": np.where(part["probability"] >= t, LABELS[1], LABELS[0])}
                         ).to_csv(plots / f"confusion_{split}.csv", index=False)
        write_json(tmp / METRICS_FILE, result)
    log.info("evaluate: validation under simulated shift: mean AUC %s, mean balanced accuracy %s at the "
             "clean threshold", result["val_shift"]["roc_auc"], result["val_shift"]["balanced_accuracy"])
    for split in EVAL_SPLITS:
        if split in result:
            m = result[split]
            log.info("evaluate: %s AUC %.4f, at threshold %.4f: accuracy %.4f sensitivity %.4f specificity %.4f",
                     split, m["roc_auc"], result["operating_threshold"], m["at_operating"]["accuracy"],
                     m["at_operating"]["recall"], m["at_operating"]["specificity"])
    return result
