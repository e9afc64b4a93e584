"""export: the deployable models (Keras HDF5, as the notebook saved it; LiteRT float16 and int8) and the card.

The .h5 is reloaded and compared with the trained model before it replaces anything: an
export that does not reproduce the trained model's probabilities is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from pneumo.core.cache import data_statement, load_split
from pneumo.core.config import Params, as_dict
from pneumo.core.constants import LABELS, __version__
from pneumo.core.contract import IO_CONTRACT
from pneumo.core.decision import GATE_CANNOT_CATCH, REFER_MEANING, REJECTED_MEANING, Policy, sigmoid
from pneumo.core.images import to_rgb
from pneumo.core.io import atomic_path, read_json, sha256_file, sha256_json, write_json
from pneumo.core.ood import OodGate
from pneumo.core.paths import MODEL_CARD, MODEL_H5, OOD_STATS_FILE, PREPARE_SUMMARY, TRAIN_SUMMARY
from pneumo.nn.convert import convert
from pneumo.nn.model import framework_versions, load
from pneumo.serving.litert import LiteRTModel
from pneumo.serving.predict import KerasBackend, score_gray

log = logging.getLogger(__name__)

# Credit for the CC BY 4.0 data, carried by every card of a model trained on it (and by the packaged README).
DATA_ATTRIBUTION = {
    "dataset": "Kermany D, Zhang K, Goldbaum M. Labeled Optical Coherence Tomography (OCT) and Chest X-Ray "
    "Images for Classification. Mendeley Data, v2, 2018. doi:10.17632/rscbjbr9sj.2",
    "paper": "Kermany DS, Goldbaum M, Cai W, et al. Identifying Medical Diagnoses and Treatable Diseases by "
    "Image-Based Deep Learning. Cell 172(5):1122-1131, 2018. doi:10.1016/j.cell.2018.02.010",
    "distribution": "Kaggle paultimothymooney/chest-xray-pneumonia",
    "license": "CC BY 4.0, https://creativecommons.org/licenses/by/4.0/",
    "changes": "pneumo converted the images to luminance, resized them to the model's input and split train by "
    "patient into train and validation; this model was trained and evaluated on the result",
}

INTENDED_USE = (
    "Research and engineering demonstration of a pneumonia screen for pediatric (age 1-5) frontal "
    "chest X-rays. A preliminary, assistive signal for a clinician, never a diagnosis: every output "
    "must be read by a qualified person."
)
LIMITS = [
    "Trained on one data set: pediatric patients of one hospital system (Guangzhou Women and "
    "Children's Medical Center, Kermany et al. 2018); adults and other sites are untested.",
    "Known shift: the official test split is harder than a validation split carved from train; "
    "validation figures overstate test performance.",
    "Images were a 224x224 copy, resized without keeping the aspect ratio and re-saved as JPEG; "
    "full-resolution originals are untested.",
    "The operating threshold was chosen on validation; on the test split it over-calls normal "
    "images more often (see operating_point): expect lower specificity than validation suggests.",
    "Binary NORMAL vs PNEUMONIA only: bacterial and viral pneumonia are not told apart, and other "
    "findings are not detected.",
    GATE_CANNOT_CATCH,
    "Calibration was fitted on validation; on a shifted population (the test split) probabilities are less "
    "well calibrated (see calibration).",
]


class _DropHDF5Legacy(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "This file format is considered legacy" not in record.getMessage()


@contextlib.contextmanager
def hdf5_on_purpose() -> Iterator[None]:
    """Silence Keras's "HDF5 is legacy" warning (absl) while pneumo saves the .h5 it ships on purpose."""
    absl = logging.getLogger("absl")
    quiet = _DropHDF5Legacy()
    absl.addFilter(quiet)
    try:
        yield
    finally:
        absl.removeFilter(quiet)


def _split_metrics(metrics: dict, split: str) -> dict | None:
    if split not in metrics:
        return None
    m = metrics[split]
    return {
        "images": m["images"],
        "roc_auc": m["roc_auc"],
        "pr_auc": m["pr_auc"],
        "brier": m["brier"],
        "at_operating_threshold": m["at_operating"],
        "at_0.5": m["at_0.5"],
        **({"ci95_at_operating_threshold": m["ci95"]["at_operating"]} if "ci95" in m else {}),
    }


def operating_point(metrics: dict) -> dict:
    """The threshold, how it was chosen, and what to expect there: validation (which chose it) and
    test (which confirms it), sensitivity and specificity with the test's 95% intervals."""
    point = {
        "threshold": metrics["operating_threshold"],
        "rule": f"highest threshold with validation sensitivity >= {metrics['target_sensitivity']}",
    }
    for split, name in (("val", "validation"), ("test", "test")):
        if split not in metrics:
            continue
        at = metrics[split]["at_operating"]
        ci = metrics[split].get("ci95", {}).get("at_operating", {})
        point[name] = {
            "images": metrics[split]["images"],
            **{
                key: {"value": at[field], **({"ci95": ci[field]} if field in ci else {})}
                for key, field in (("sensitivity", "recall"), ("specificity", "specificity"), ("accuracy", "accuracy"))
            },
        }
    return point


def decision_section(metrics: dict, stats_sha256: str | None) -> dict | None:
    """The card's `decision`: everything a caller (Python, a service, a phone) needs to answer as pneumo does."""
    policy = metrics.get("policy")
    if policy is None:
        return None
    gate = policy.get("ood")
    return {
        "decisions": {
            "normal": "calibrated probability below the operating threshold (outside the refer band)",
            "pneumonia": "calibrated probability at or above the operating threshold (outside the refer band)",
            "refer": REFER_MEANING,
            "rejected": REJECTED_MEANING,
        },
        "order": "DICOM header gate (before the model), then the image-content gate, then the refer band, "
        "then the threshold",
        "threshold": policy["threshold"],
        "threshold_rule": policy["threshold_rule"],
        "calibration": {
            **policy["calibration"],
            "formula": "probability = 1 / (1 + exp(-logit / temperature)); logit: the LiteRT files' 'logit' "
            "output, or the Keras model's 'logit' layer (its own sigmoid output is uncalibrated)",
        },
        "refer_band": policy["refer"]["band"],
        "refer_coverage": policy["refer"]["coverage"],
        "refer_rule": policy["refer"]["rule"],
        "input_gate": None
        if gate is None
        else {
            "statistics": OOD_STATS_FILE,
            "sha256": stats_sha256,
            "method": gate["method"],
            "formula": "score = sqrt((features - mean)^T precision (features - mean)); rejected when score > threshold "
            "(arrays 'mean' and 'precision' in the statistics file; features: the LiteRT 'features' output or "
            "the Keras 'pool' layer)",
            "threshold": gate["threshold"],
            "keep": gate["keep"],
            "dims": gate["dims"],
            "fitted_on": gate["fitted_on"],
            "threshold_on": gate["threshold_on"],
            "dicom": policy["dicom"],
            "cannot_catch": GATE_CANNOT_CATCH,
        },
        "calibration_metrics": metrics.get("calibration"),
        "test_decisions": metrics.get("decisions", {}).get("test"),
        "out_of_distribution_set": {
            k: v for k, v in metrics.get("ood", {}).items() if k in ("images", "rejected", "auroc_vs_val", "per_kind")
        }
        or None,
    }


def model_card(
    metrics: dict,
    prep: dict,
    params: Params,
    image_size: int,
    h5_sha256: str,
    parity: float,
    training: dict | None = None,
    litert: dict | None = None,
    stats_sha256: str | None = None,
) -> dict:
    """The card that travels with the model: what it takes, what it says, how good, its limits."""
    synthetic = bool(prep["synthetic"])
    decision = decision_section(metrics, stats_sha256)
    return {
        "name": "pneumo-mobilenetv2",
        "synthetic_data": synthetic,
        **({"warning": "Trained and evaluated on SYNTHETIC demo images: not a medical model."} if synthetic else {}),
        "labels": list(LABELS),
        "positive_label": LABELS[1],
        "output": "the Keras model: uncalibrated probability of PNEUMONIA (sigmoid), shape (batch, 1); "
        "answer with `decision` (calibrated probability, refer band, input gate)",
        "input": {
            "shape": [None, image_size, image_size, 3],
            "channels": "RGB",
            "dtype": "float32",
            "range": [0, 255],
            "layout": "NHWC",
            "preprocessing": "inside the model (scaled to [-1, 1]); grayscale X-rays as three equal "
            "channels; resize to the input size without keeping the aspect ratio",
        },
        "operating_threshold": metrics["operating_threshold"],
        **({"decision": decision} if decision else {}),
        "threshold_rule": f"highest threshold with validation sensitivity >= {metrics['target_sensitivity']}",
        "operating_point": operating_point(metrics),
        "metrics": {
            "validation": _split_metrics(metrics, "val"),
            "test": _split_metrics(metrics, "test"),
            "test_source": prep["test_source"],
            "note": data_statement(synthetic, prep["test_source"]),
        },
        "data": {
            "source": data_statement(synthetic, prep["test_source"]),
            "fingerprint": prep["data_fingerprint"],
            "counts": prep["counts"],
            "patients": prep["patients"],
        },
        "params_fingerprint": sha256_json(as_dict(params)),
        "training": {
            k: training[k] for k in ("device", "weights", "best_epoch", "epochs_run", "seconds") if k in training
        }
        if training
        else None,
        "files": {
            MODEL_H5: {"sha256": h5_sha256, "reload_max_abs_diff": parity},
            **({OOD_STATS_FILE: {"sha256": stats_sha256}} if stats_sha256 else {}),
        },
        **({"litert": litert} if litert else {}),
        "architecture": "MobileNetV2 (alpha 1.0, ImageNet-initialised) + GlobalAveragePooling2D + "
        f"Dense({params.train.dense_units}, relu) + Dense(1, sigmoid)",
        "intended_use": INTENDED_USE,
        "limits": LIMITS,
        "software": {"pneumo": __version__, **framework_versions(), "python": platform.python_version()},
        "license": "data CC BY 4.0 (Kermany et al. 2018); MobileNetV2 ImageNet weights Apache-2.0",
        **({} if synthetic else {"attribution": DATA_ATTRIBUTION}),
    }


def shipped_policy(metrics: dict, gate: OodGate | None) -> Policy | None:
    """The policy evaluate chose (metrics.json's `policy`) with its gate; None for metrics without one."""
    policy = metrics.get("policy")
    if policy is None:
        return None
    band = policy["refer"]["band"]
    return Policy(policy["threshold"], policy["calibration"]["temperature"], tuple(band) if band else None, gate)


def export(
    model_path: str | Path,
    prepared_dir: str | Path,
    metrics_path: str | Path,
    out_dir: str | Path,
    params: Params,
    ood_stats: str | Path | None = None,
    parity_images: int = 32,
) -> dict:
    """Run the stage: model.h5, the LiteRT files, the gate's statistics and model_card.json into `out_dir`
    (each atomically; a refused export leaves the earlier files)."""
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    prep = read_json(prepared_dir / PREPARE_SUMMARY)
    metrics = read_json(metrics_path)
    gated = bool(metrics.get("policy", {}).get("ood"))
    if gated and ood_stats is None:
        raise ValueError(f"export: {metrics_path} has an input gate: pass its statistics (evaluate's ood_stats.npz)")
    gate = OodGate.load(ood_stats) if gated else None
    policy = shipped_policy(metrics, gate)
    model = load(model_path)
    images, _, _ = load_split(prepared_dir, "val")
    batch = to_rgb(images[:parity_images])
    expected = model.predict_on_batch(batch)

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / MODEL_H5) as tmp:
        h5 = tmp.with_suffix(".h5")
        with hdf5_on_purpose():
            model.save(h5)
        reloaded = load(h5)
        diff = float(np.max(np.abs(reloaded.predict_on_batch(batch) - expected))) if len(batch) else 0.0
        if diff > params.export.parity_tolerance:
            h5.unlink()
            raise RuntimeError(
                f"export: {h5} reloads with max |dp| = {diff:.2e} > "
                f"export.parity_tolerance {params.export.parity_tolerance}: refused"
            )
        h5.replace(tmp)
        digest = sha256_file(tmp)
    litert = export_litert(
        model_path,
        prepared_dir,
        out_dir,
        calibration_images=params.export.calibration_images,
        seed=params.export.calibration_seed,
        auc_tolerance=params.export.litert_auc_tolerance,
        int8_max_mb=params.export.int8_max_mb,
        threshold=metrics["operating_threshold"],
        policy=policy,
        min_agreement=params.export.min_decision_agreement,
        float_layers=params.export.float_layers,
    )
    stats_digest = None
    if gate is not None:
        stats_digest = sha256_file(gate.save(out_dir / OOD_STATS_FILE))
    train_summary = Path(model_path).with_name(TRAIN_SUMMARY)
    training = read_json(train_summary) if train_summary.exists() else None
    card = model_card(metrics, prep, params, int(model.input_shape[1]), digest, diff, training, litert, stats_digest)
    write_json(out_dir / MODEL_CARD, card)
    log.info("export: %s (reload max |dp| %.1e), threshold %.4f", out_dir / MODEL_H5, diff, card["operating_threshold"])
    return card


def representative_sample(images: np.ndarray, n: int = 200, seed: int = 42) -> np.ndarray:
    """A seeded sample of `n` images (all of them when fewer), in cache order."""
    if len(images) <= n:
        return images
    rng = np.random.default_rng(seed)
    return images[np.sort(rng.choice(len(images), n, replace=False))]


def parity(
    path: str | Path,
    keras_logits: np.ndarray,
    gray: np.ndarray,
    labels: np.ndarray,
    threshold: float | None = None,
    policy: Policy | None = None,
    keras_decisions: np.ndarray | None = None,
) -> dict:
    """How far a LiteRT file is from the Keras model on the same images (e.g. the validation split).

    `keras_logits` are the Keras model's raw logits of `gray` ((N, S, S) uint8); probabilities are
    compared uncalibrated (sigmoid(logit)). With a `threshold`, also the share of images given the same
    label; with a `policy` and the Keras `keras_decisions`, the share given the same decision (normal,
    pneumonia, refer, rejected: the gate run on each file's own features).
    """
    path = Path(path)
    lite = LiteRTModel(path)
    logits, features = score_gray(lite, gray, 32)
    probs, keras_probs = sigmoid(logits), sigmoid(keras_logits)
    two_classes = len(np.unique(labels)) == 2
    auc_keras = float(roc_auc_score(labels, keras_probs)) if two_classes else None
    auc_lite = float(roc_auc_score(labels, probs)) if two_classes else None
    out = {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "outputs": list(lite.outputs),
        "images": int(len(gray)),
        "max_abs_diff": float(np.max(np.abs(probs - keras_probs))) if len(gray) else 0.0,
        "mean_abs_diff": float(np.mean(np.abs(probs - keras_probs))) if len(gray) else 0.0,
        "roc_auc_keras": auc_keras,
        "roc_auc": auc_lite,
        "roc_auc_diff": None if auc_keras is None else float(auc_lite - auc_keras),
    }
    if threshold is not None:
        calibrated = policy.probability if policy is not None else sigmoid
        p, pk = calibrated(logits), calibrated(keras_logits)
        out["threshold"] = float(threshold)
        out["label_agreement"] = float(np.mean((p >= threshold) == (pk >= threshold))) if len(gray) else 1.0
    if policy is not None and keras_decisions is not None:
        mine = policy.decisions(policy.probability(logits), policy.ood_scores(features, len(gray)))
        out["decision_agreement"] = float(np.mean(mine == keras_decisions)) if len(gray) else 1.0
        out["decisions"] = {d: int(np.sum(mine == d)) for d in sorted(set(mine))}
    return out


def refusals(
    checks: dict[str, dict], auc_tolerance: float = 0.01, int8_max_mb: float = 3.5, min_agreement: float = 0.0
) -> list[str]:
    """Why parity results (kind -> `parity` dict) must be refused; empty when they pass."""
    problems = []
    for kind, check in checks.items():
        agreement = check.get("decision_agreement")
        if agreement is not None and agreement < min_agreement:
            problems.append(
                f"{kind}: validation decisions agree with Keras on {agreement:.3f} of images, below {min_agreement}"
            )
    for kind, check in checks.items():
        drop = check["roc_auc_diff"]
        if drop is not None and -drop > auc_tolerance:
            problems.append(
                f"{kind}: validation AUC {check['roc_auc']:.4f} is {-drop:.4f} below Keras "
                f"({check['roc_auc_keras']:.4f}), more than {auc_tolerance}"
            )
    if "int8" in checks and checks["int8"]["bytes"] > int8_max_mb * 1e6:
        problems.append(f"int8: {checks['int8']['bytes'] / 1e6:.2f} MB exceeds {int8_max_mb} MB")
    return problems


def export_litert(
    model_path: str | Path,
    prepared_dir: str | Path,
    out_dir: str | Path,
    *,
    calibration_images: int = 200,
    seed: int = 42,
    auc_tolerance: float = 0.01,
    int8_max_mb: float = 3.5,
    kinds: tuple[str, ...] = ("float16", "int8"),
    threshold: float | None = None,
    policy: Policy | None = None,
    min_agreement: float = 0.0,
    float_layers: int = 0,
) -> dict:
    """Convert, then check each file against Keras on the validation split; returns the card's `litert`.

    Refuses (RuntimeError, earlier files kept) an int8 file more than `auc_tolerance` below Keras in
    validation AUC or larger than `int8_max_mb` megabytes. The same comparison on the test split
    is recorded under `test` as a confirmation; it decides nothing. With the operating `threshold`,
    each comparison also gives the share of images labelled as Keras labels them.
    """
    model = load(model_path)
    keras = KerasBackend(Path(model_path), model)
    train_images, _, _ = load_split(prepared_dir, "train")
    sample = representative_sample(train_images, calibration_images, seed)
    val_images, val_labels, _ = load_split(prepared_dir, "val")

    def reference(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        logits, features = score_gray(keras, gray)
        if policy is None:
            return logits, None
        return logits, policy.decisions(policy.probability(logits), policy.ood_scores(features, len(gray)))

    keras_logits, keras_decisions = reference(val_images)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Converted and checked beside the targets, moved over them only if all pass: a refused
    # export leaves the previous files as they were.
    with tempfile.TemporaryDirectory(prefix=".litert.", dir=out_dir) as staging:
        files = convert(model, staging, sample, kinds, float_layers)
        checks = {
            kind: parity(path, keras_logits, val_images, val_labels, threshold, policy, keras_decisions)
            for kind, path in files.items()
        }
        problems = refusals(checks, auc_tolerance, int8_max_mb, min_agreement)
        if problems:
            raise RuntimeError("export: LiteRT files refused: " + "; ".join(problems))
        test_images, test_labels, _ = load_split(prepared_dir, "test")
        if len(test_images):
            test_logits, test_decisions = reference(test_images)
            for kind, path in files.items():
                confirm = parity(path, test_logits, test_images, test_labels, threshold, policy, test_decisions)
                checks[kind]["test"] = {
                    k: confirm[k]
                    for k in (
                        "images",
                        "max_abs_diff",
                        "mean_abs_diff",
                        "roc_auc_keras",
                        "roc_auc",
                        "roc_auc_diff",
                        "label_agreement",
                        "decision_agreement",
                        "decisions",
                    )
                    if k in confirm
                }
        for path in files.values():
            os.replace(path, out_dir / path.name)
    for kind, check in checks.items():
        log.info(
            "litert: %s %.2f MB, max |dp| %.4f, AUC diff %s, decisions agree with Keras on %s of validation",
            kind,
            check["bytes"] / 1e6,
            check["max_abs_diff"],
            check["roc_auc_diff"],
            check.get("decision_agreement"),
        )
    return {
        "io": IO_CONTRACT,
        "runtime": "ai_edge_litert.interpreter.Interpreter (or tf.lite.Interpreter)",
        "calibration": {"split": "train", "images": int(len(sample)), "seed": seed},
        "int8_float_layers": float_layers,
        "parity_split": "val",
        "confirmation_split": "test",
        "auc_tolerance": auc_tolerance,
        "min_decision_agreement": min_agreement,
        "files": checks,
    }
