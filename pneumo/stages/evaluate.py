"""evaluate: decide the answer's policy on validation, then confirm it on test and on images that are not X-rays.

Chosen on validation (and the training split's features), never on test:
- the temperature that calibrates the logit (`evaluate.calibration`);
- the operating threshold: the highest calibrated probability whose validation sensitivity
  reaches `evaluate.target_sensitivity`;
- the refer band: class-conditional split-conformal sets at `evaluate.refer_coverage`
  (`pneumo.core.decision`);
- the input gate: Mahalanobis statistics of the training split's pooled features, with the
  distance that keeps `evaluate.ood_keep` of validation X-rays (`pneumo.core.ood`).

Reported: every metric on the calibrated probability, at 0.5 and at the operating threshold;
calibration (ECE, Brier) before and after; the decisions (referral and rejection rates, and
accuracy, sensitivity and specificity among the images answered); test with patient-bootstrap
95% intervals; `val_shift`, validation under simulated acquisition shifts (`pneumo.stages.shift`);
and the out-of-distribution set (the oodset stage): AUROC of the gate's distance against
validation X-rays and the rejection rate per kind.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pneumo.core import ood
from pneumo.core.cache import data_statement, load_split
from pneumo.core.config import EvaluateParams, as_dict
from pneumo.core.constants import LABELS
from pneumo.core.decision import ANSWERED, REFER, REJECTED, Policy, fit_temperature, refer_band
from pneumo.core.dicom import CHEST_BODY_PARTS, LATERAL_VIEWS, RADIOGRAPH_MODALITIES
from pneumo.core.images import predict_gray
from pneumo.core.io import atomic_dir, read_json, write_json
from pneumo.core.metrics import (
    binary_metrics,
    bootstrap_figures,
    bootstrap_intervals,
    curves,
    expected_calibration_error,
    ranking_metrics,
    shifted_metrics,
    threshold_for_sensitivity,
)
from pneumo.core.paths import (
    METRICS_FILE,
    OOD_MANIFEST,
    OOD_SCORES_FILE,
    OOD_STATS_FILE,
    PLOTS_DIR,
    PREDICTIONS_FILE,
    PREPARE_SUMMARY,
    SHIFT_COLUMN,
)
from pneumo.nn.model import load
from pneumo.serving.predict import KerasBackend, answer_images, read_inputs, score_gray
from pneumo.stages import shift

log = logging.getLogger(__name__)

EVAL_SPLITS = ("val", "test")


def predict_images(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities (N,) of (N, S, S) uint8 luminance images, in batches."""
    return predict_gray(model.predict_on_batch, images, batch_size)


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


def shifted_probabilities(backend: KerasBackend, policy: Policy, prepared_dir: Path) -> dict[str, np.ndarray]:
    """Calibrated validation probabilities (cache order) under each simulated acquisition shift of
    `pneumo.stages.shift`."""
    images, _, _ = load_split(prepared_dir, "val")
    return {
        name: policy.probability(score_gray(backend, perturb(images))[0])
        for name, perturb in shift.PERTURBATIONS.items()
    }


REFER_RULE = (
    "class-conditional (Mondrian) split-conformal prediction on validation at the stated coverage: an image "
    "whose prediction set holds both labels is referred; the band is widened to reach the operating threshold"
)


def fit_policy(
    val_logits: np.ndarray,
    val_y: np.ndarray,
    val_features: np.ndarray | None,
    train_features: np.ndarray | None,
    params: EvaluateParams,
) -> Policy:
    """Calibration, threshold, refer band and input gate, from validation (and training features) alone."""
    temperature = fit_temperature(val_logits, val_y) if params.calibration == "temperature" else 1.0
    p = Policy(0.5, temperature).probability(val_logits)
    threshold = threshold_for_sensitivity(val_y, p, params.target_sensitivity)
    band = refer_band(p, val_y, params.refer_coverage, threshold)
    gate = None
    if val_features is not None and train_features is not None:
        gate = ood.fit(train_features, val_features, params.ood_keep)
    return Policy(threshold, temperature, band, gate)


def policy_record(policy: Policy, params: EvaluateParams, val_p: np.ndarray, val_y: np.ndarray) -> dict:
    """The policy as metrics.json and the model card state it: every number, and the rule that chose it."""
    conformal = refer_band(val_p, val_y, params.refer_coverage, policy.threshold)
    sweep = {}
    for coverage in (0.9, 0.95, 0.97, 0.98, 0.99, 0.995):
        band = refer_band(val_p, val_y, coverage, policy.threshold)
        sweep[str(coverage)] = {
            "band": list(band) if band else None,
            "val_referral_rate": float(np.mean((val_p >= band[0]) & (val_p <= band[1]))) if band else 0.0,
        }
    return {
        "threshold": policy.threshold,
        "threshold_rule": f"highest calibrated probability with validation sensitivity >= {params.target_sensitivity}",
        "calibration": {"method": params.calibration, "temperature": policy.temperature, "fitted_on": "val"},
        "refer": {
            "coverage": params.refer_coverage,
            "band": list(policy.refer) if policy.refer else None,
            "rule": REFER_RULE if params.refer_coverage > 0 else "off (evaluate.refer_coverage = 0)",
            "fitted_on": "val",
            "coverage_sweep_val": sweep,
            "conformal_band": list(conformal) if conformal else None,
        },
        "ood": None
        if policy.gate is None
        else {
            "method": ood.METHOD,
            "threshold": policy.gate.threshold,
            "keep": params.ood_keep,
            "dims": policy.gate.dims,
            "shrinkage": policy.gate.shrinkage,
            "fitted_on": "train",
            "threshold_on": "val",
        },
        "dicom": {
            "modalities": list(RADIOGRAPH_MODALITIES),
            "body_parts": list(CHEST_BODY_PARTS) + ["(empty)"],
            "lateral_views": list(LATERAL_VIEWS),
        },
    }


def decision_figures(y: np.ndarray, decisions: np.ndarray) -> dict[str, float | None]:
    """Referral and rejection rates, and accuracy, sensitivity and specificity among the images answered."""
    n = len(y)
    answered = np.isin(decisions, ANSWERED)
    pred, truth = decisions[answered] == ANSWERED[1], y[answered] == 1
    positives, negatives = int(truth.sum()), int((~truth).sum())
    return {
        "referral_rate": float(np.mean(decisions == REFER)) if n else None,
        "rejection_rate": float(np.mean(decisions == REJECTED)) if n else None,
        "answered_rate": float(np.mean(answered)) if n else None,
        "accuracy": float(np.mean(pred == truth)) if answered.any() else None,
        "sensitivity": float(np.mean(pred[truth])) if positives else None,
        "specificity": float(np.mean(~pred[~truth])) if negatives else None,
    }


def decisions_summary(part: pd.DataFrame, threshold: float, bootstrap: int = 0, seed: int = 42) -> dict:
    """Figures of the decisions on one split; `all` is the threshold alone on every image (band 0, no gate)."""
    y, decisions = part["y"].to_numpy(), part["decision"].to_numpy().astype(str)
    at = binary_metrics(y, part["probability"].to_numpy(), threshold)
    out: dict = {
        "images": int(len(part)),
        "referred": int(np.sum(decisions == REFER)),
        "rejected": int(np.sum(decisions == REJECTED)),
        "answered": decision_figures(y, decisions),
        "all": {"accuracy": at["accuracy"], "sensitivity": at["recall"], "specificity": at["specificity"]},
    }
    if bootstrap:
        out["ci95"] = bootstrap_figures(
            part["patient"].to_numpy(), lambda idx: decision_figures(y[idx], decisions[idx]), bootstrap, seed
        )
    return out


def reliability(y: np.ndarray, p: np.ndarray, bins: int) -> list[dict]:
    """The reliability diagram as numbers: per equal-width bin with images, its mean probability and observed rate."""
    which = np.minimum((np.asarray(p) * bins).astype(int), bins - 1)
    return [
        {
            "bin": [b / bins, (b + 1) / bins],
            "images": int(np.sum(which == b)),
            "mean_probability": float(np.mean(p[which == b])),
            "observed_rate": float(np.mean(y[which == b])),
        }
        for b in range(bins)
        if np.any(which == b)
    ]


def calibration_summary(y: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, bins: int) -> dict:
    """ECE and Brier score of the calibrated probability, and of the raw one beside them; the reliability bins."""
    return {
        "reliability": reliability(y, calibrated, bins),
        "ece": expected_calibration_error(y, calibrated, bins),
        "brier": float(np.mean((calibrated - y) ** 2)) if len(y) else None,
        "ece_uncalibrated": expected_calibration_error(y, raw, bins),
        "brier_uncalibrated": float(np.mean((raw - y) ** 2)) if len(y) else None,
    }


def evaluate_ood(
    backend: KerasBackend, policy: Policy, ood_dir: Path, val_scores: np.ndarray
) -> tuple[dict, pd.DataFrame]:
    """Answers for every file of the out-of-distribution set, and what they add up to."""
    manifest_path = ood_dir / OOD_MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: out-of-distribution set missing (run `pneumo oodset`)")
    manifest = pd.read_csv(manifest_path)
    inputs = read_inputs([ood_dir / p for p in manifest["path"]], backend.input_size)
    order = sorted(inputs.index, key=inputs.index.__getitem__)
    gray = np.stack(inputs.images) if inputs.images else np.zeros((0, backend.input_size, backend.input_size), np.uint8)
    answers = dict(zip(order, answer_images(backend, policy, gray, [inputs.notes[k] for k in order]), strict=True))
    answers.update(inputs.early)
    rows = []
    for k, row in manifest.iterrows():
        a = answers.get(k)
        rows.append(
            {
                "path": row["path"],
                "kind": row["kind"],
                "gate": row["gate"],
                "decision": a.decision if a else "error",
                "probability": a.probability if a else None,
                "ood_score": a.ood_score if a else None,
                "reasons": "; ".join(a.reasons) if a else inputs.errors.get(k, ""),
            }
        )
    frame = pd.DataFrame(rows)
    scored = frame["ood_score"].notna()
    auroc = None
    if scored.any() and len(val_scores):
        truth = np.r_[np.zeros(len(val_scores)), np.ones(int(scored.sum()))]
        auroc = float(roc_auc_score(truth, np.r_[val_scores, frame.loc[scored, "ood_score"].to_numpy(float)]))
    per_kind = {
        kind: {"images": int(len(g)), "rejected": float(np.mean(g["decision"] == REJECTED))}
        for kind, g in frame.groupby("kind", sort=True)
    }
    summary = {
        "source": str(ood_dir),
        "images": int(len(frame)),
        "rejected": float(np.mean(frame["decision"] == REJECTED)) if len(frame) else None,
        "errors": int(np.sum(frame["decision"] == "error")),
        "auroc_vs_val": auroc,
        "per_kind": per_kind,
        "by_gate": {
            gate: {"images": int(len(g)), "rejected": float(np.mean(g["decision"] == REJECTED))}
            for gate, g in frame.groupby("gate", sort=True)
        },
    }
    return summary, frame


def score_split(
    backend: KerasBackend, prepared_dir: Path, split: str
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """One split's manifest rows with labels, and its raw logits and pooled features (cache order)."""
    images, labels, rows = load_split(prepared_dir, split)
    logits, features = score_gray(backend, images)
    frame = pd.DataFrame(
        {"path": rows["path"], "split": split, "patient": rows["patient"], "label": rows["label"], "y": labels}
    )
    return frame, logits, features


def evaluate(
    prepared_dir: str | Path,
    model_path: str | Path,
    out_dir: str | Path,
    params: EvaluateParams,
    ood_dir: str | Path | None = None,
) -> dict:
    """Run the stage: metrics.json, predictions.csv, plots/*.csv, the gate's statistics and the OOD set's answers."""
    prepared_dir = Path(prepared_dir)
    prep = read_json(prepared_dir / PREPARE_SUMMARY)
    model = load(model_path)
    backend = KerasBackend(Path(model_path), model)
    _, _, train_features = score_split(backend, prepared_dir, "train")
    scored = {split: score_split(backend, prepared_dir, split) for split in EVAL_SPLITS}
    val_frame, val_logits, val_features = scored["val"]
    policy = fit_policy(val_logits, val_frame["y"].to_numpy(), val_features, train_features, params)
    frames = []
    for frame, logits, features in scored.values():
        frame = frame.copy()
        frame["logit"] = logits
        frame["probability"] = policy.probability(logits)
        frame["ood_score"] = policy.ood_scores(features, len(frame))
        frame["decision"] = policy.decisions(frame["probability"].to_numpy(), frame["ood_score"].to_numpy())
        frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True)
    result = {
        "synthetic": prep["synthetic"],
        "test_source": prep["test_source"],
        "note": data_statement(prep["synthetic"], prep["test_source"]),
        **summarize(predictions, params),
        "params": as_dict(params),
    }
    val_rows = predictions["split"] == "val"
    val_y, val_p = predictions.loc[val_rows, "y"].to_numpy(), predictions.loc[val_rows, "probability"].to_numpy()
    result["policy"] = policy_record(policy, params, val_p, val_y)
    result["calibration"] = {"bins": params.calibration_bins, "method": params.calibration}
    result["decisions"] = {}
    for split in EVAL_SPLITS:
        part = predictions[predictions["split"] == split]
        if part.empty:
            continue
        y = part["y"].to_numpy()
        result["calibration"][split] = calibration_summary(
            y,
            Policy(0.5).probability(part["logit"].to_numpy()),
            part["probability"].to_numpy(),
            params.calibration_bins,
        )
        result["decisions"][split] = decisions_summary(
            part, policy.threshold, params.bootstrap if split == "test" else 0, params.seed
        )
    shifted = shifted_probabilities(backend, policy, prepared_dir)
    result["val_shift"] = shifted_metrics(val_y, shifted, result["operating_threshold"])
    for name, probs in shifted.items():
        predictions.loc[val_rows, SHIFT_COLUMN + name] = probs
    ood_frame = None
    if policy.gate is not None:
        result["ood"] = {
            "false_rejection": {
                split: result["decisions"][split]["answered"]["rejection_rate"] for split in result["decisions"]
            }
        }
        if ood_dir is not None:
            summary, ood_frame = evaluate_ood(
                backend, policy, Path(ood_dir), predictions.loc[val_rows, "ood_score"].to_numpy()
            )
            result["ood"].update(summary)
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
        if policy.gate is not None:
            policy.gate.save(tmp / OOD_STATS_FILE)
        if ood_frame is not None:
            ood_frame.to_csv(tmp / OOD_SCORES_FILE, index=False)
        write_json(tmp / METRICS_FILE, result)
    log.info(
        "evaluate: validation under simulated shift: mean AUC %s, mean balanced accuracy %s at the clean threshold",
        result["val_shift"]["roc_auc"],
        result["val_shift"]["balanced_accuracy"],
    )
    for split in EVAL_SPLITS:
        if split in result:
            m, d = result[split], result["decisions"][split]
            log.info(
                "evaluate: %s AUC %.4f, at threshold %.4f: accuracy %.4f sensitivity %.4f specificity %.4f; "
                "referred %d, rejected %d of %d",
                split,
                m["roc_auc"],
                result["operating_threshold"],
                m["at_operating"]["accuracy"],
                m["at_operating"]["recall"],
                m["at_operating"]["specificity"],
                d["referred"],
                d["rejected"],
                d["images"],
            )
    if "ood" in result and "auroc_vs_val" in result["ood"]:
        log.info(
            "evaluate: out-of-distribution set: %d images, %.1f%% rejected, AUROC vs validation %s",
            result["ood"]["images"],
            100 * (result["ood"]["rejected"] or 0),
            result["ood"]["auroc_vs_val"],
        )
    return result
