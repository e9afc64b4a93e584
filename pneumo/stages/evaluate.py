"""evaluate: metrics on validation and test, at 0.5 and at an operating threshold chosen on validation.

The operating threshold is the highest one whose validation sensitivity reaches
`evaluate.target_sensitivity`; test figures get patient-level bootstrap 95% intervals.
`val_shift` scores validation again under simulated acquisition shifts (`pneumo.stages.shift`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pneumo.core.cache import data_statement, load_split
from pneumo.core.config import EvaluateParams, as_dict
from pneumo.core.constants import LABELS
from pneumo.core.images import predict_gray
from pneumo.core.io import atomic_dir, read_json, write_json
from pneumo.core.metrics import (
    binary_metrics,
    bootstrap_intervals,
    curves,
    ranking_metrics,
    shifted_metrics,
    threshold_for_sensitivity,
)
from pneumo.core.paths import METRICS_FILE, PLOTS_DIR, PREDICTIONS_FILE, PREPARE_SUMMARY, SHIFT_COLUMN
from pneumo.nn.model import load
from pneumo.stages import shift

log = logging.getLogger(__name__)

EVAL_SPLITS = ("val", "test")


def predict_images(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities (N,) of (N, S, S) uint8 luminance images, in batches."""
    return predict_gray(model.predict_on_batch, images, batch_size)


def predict_split(model, prepared_dir: Path, split: str, batch_size: int = 64) -> pd.DataFrame:
    """Per-image probabilities of one split, with the manifest's path, label and patient."""
    images, labels, rows = load_split(prepared_dir, split)
    probs = predict_images(model, images, batch_size)
    return pd.DataFrame(
        {
            "path": rows["path"],
            "split": split,
            "patient": rows["patient"],
            "label": rows["label"],
            "y": labels,
            "probability": probs,
        }
    )


def summarize(predictions: pd.DataFrame, params: EvaluateParams) -> dict:
    """All metrics from per-image predictions (pure: the stage and the tests call this)."""
    val = predictions[predictions["split"] == "val"]
    operating = threshold_for_sensitivity(val["y"].to_numpy(), val["probability"].to_numpy(), params.target_sensitivity)
    out: dict = {"operating_threshold": operating, "target_sensitivity": params.target_sensitivity}
    for split in EVAL_SPLITS:
        part = predictions[predictions["split"] == split]
        if part.empty:
            continue
        y, p = part["y"].to_numpy(), part["probability"].to_numpy()
        entry = {
            "images": int(len(part)),
            "positives": int(y.sum()),
            **ranking_metrics(y, p),
            "at_0.5": binary_metrics(y, p, 0.5),
            "at_operating": binary_metrics(y, p, operating),
        }
        if split == "test":
            groups = part["patient"].to_numpy()
            entry["ci95"] = {
                "at_operating": bootstrap_intervals(y, p, groups, operating, params.bootstrap, params.seed),
                "at_0.5": bootstrap_intervals(y, p, groups, 0.5, params.bootstrap, params.seed),
            }
        out[split] = entry
    return out


def shifted_validation(model, prepared_dir: Path, threshold: float) -> dict:
    """Validation under the simulated acquisition shifts of `pneumo.stages.shift`, at the clean threshold."""
    images, labels, _ = load_split(prepared_dir, "val")
    return shift.score(lambda batch: predict_images(model, batch), images, labels, threshold)


def shifted_probabilities(model, prepared_dir: Path) -> dict[str, np.ndarray]:
    """Validation probabilities (cache order) under each simulated acquisition shift of `pneumo.stages.shift`."""
    images, _, _ = load_split(prepared_dir, "val")
    return {name: predict_images(model, perturb(images)) for name, perturb in shift.PERTURBATIONS.items()}


def evaluate(prepared_dir: str | Path, model_path: str | Path, out_dir: str | Path, params: EvaluateParams) -> dict:
    """Run the stage: metrics.json, predictions.csv and plots/*.csv into `out_dir`."""
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
    val_rows = predictions["split"] == "val"
    shifted = shifted_probabilities(model, prepared_dir)
    result["val_shift"] = shifted_metrics(
        predictions.loc[val_rows, "y"].to_numpy(), shifted, result["operating_threshold"]
    )
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
            for name, frame in curves(
                part["y"].to_numpy(), part["probability"].to_numpy(), params.calibration_bins
            ).items():
                frame.to_csv(plots / f"{name}_{split}.csv", index=False)
            t = result["operating_threshold"]
            pd.DataFrame(
                {"actual": part["label"], "predicted": np.where(part["probability"] >= t, LABELS[1], LABELS[0])}
            ).to_csv(plots / f"confusion_{split}.csv", index=False)
        write_json(tmp / METRICS_FILE, result)
    log.info(
        "evaluate: validation under simulated shift: mean AUC %s, mean balanced accuracy %s at the clean threshold",
        result["val_shift"]["roc_auc"],
        result["val_shift"]["balanced_accuracy"],
    )
    for split in EVAL_SPLITS:
        if split in result:
            m = result[split]
            log.info(
                "evaluate: %s AUC %.4f, at threshold %.4f: accuracy %.4f sensitivity %.4f specificity %.4f",
                split,
                m["roc_auc"],
                result["operating_threshold"],
                m["at_operating"]["accuracy"],
                m["at_operating"]["recall"],
                m["at_operating"]["specificity"],
            )
    return result
