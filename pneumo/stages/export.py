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
from pneumo.core.images import predict_gray, to_rgb
from pneumo.core.io import atomic_path, read_json, sha256_file, sha256_json, write_json
from pneumo.core.paths import MODEL_CARD, MODEL_H5, PREPARE_SUMMARY, TRAIN_SUMMARY
from pneumo.nn.convert import convert
from pneumo.nn.model import framework_versions, load
from pneumo.serving.litert import LiteRTModel

log = logging.getLogger(__name__)

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


def model_card(
    metrics: dict,
    prep: dict,
    params: Params,
    image_size: int,
    h5_sha256: str,
    parity: float,
    training: dict | None = None,
    litert: dict | None = None,
) -> dict:
    """The card that travels with the model: what it takes, what it says, how good, its limits."""
    synthetic = bool(prep["synthetic"])
    return {
        "name": "pneumo-mobilenetv2",
        "synthetic_data": synthetic,
        **({"warning": "Trained and evaluated on SYNTHETIC demo images: not a medical model."} if synthetic else {}),
        "labels": list(LABELS),
        "positive_label": LABELS[1],
        "output": "probability of PNEUMONIA (sigmoid), shape (batch, 1)",
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
        "files": {MODEL_H5: {"sha256": h5_sha256, "reload_max_abs_diff": parity}},
        **({"litert": litert} if litert else {}),
        "architecture": "MobileNetV2 (alpha 1.0, ImageNet-initialised) + GlobalAveragePooling2D + "
        f"Dense({params.train.dense_units}, relu) + Dense(1, sigmoid)",
        "intended_use": INTENDED_USE,
        "limits": LIMITS,
        "software": {"pneumo": __version__, **framework_versions(), "python": platform.python_version()},
        "license": "data CC BY 4.0 (Kermany et al. 2018); MobileNetV2 ImageNet weights Apache-2.0",
    }


def export(
    model_path: str | Path,
    prepared_dir: str | Path,
    metrics_path: str | Path,
    out_dir: str | Path,
    params: Params,
    parity_images: int = 32,
) -> dict:
    """Run the stage: write model.h5 and model_card.json into `out_dir` (each atomically)."""
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    prep = read_json(prepared_dir / PREPARE_SUMMARY)
    metrics = read_json(metrics_path)
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
    )
    train_summary = Path(model_path).with_name(TRAIN_SUMMARY)
    training = read_json(train_summary) if train_summary.exists() else None
    card = model_card(metrics, prep, params, int(model.input_shape[1]), digest, diff, training, litert)
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
    path: str | Path, keras_probs: np.ndarray, gray: np.ndarray, labels: np.ndarray, threshold: float | None = None
) -> dict:
    """How far a LiteRT file is from the Keras model on the same images (e.g. the validation split).

    `keras_probs` are the Keras model's probabilities of `gray` ((N, S, S) uint8). With a
    `threshold`, also the share of images given the same label as Keras gives them.
    """
    path = Path(path)
    lite = LiteRTModel(path)
    probs = predict_gray(lite.predict, gray)
    two_classes = len(np.unique(labels)) == 2
    auc_keras = float(roc_auc_score(labels, keras_probs)) if two_classes else None
    auc_lite = float(roc_auc_score(labels, probs)) if two_classes else None
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "output": lite.output_kind,
        "images": int(len(gray)),
        "max_abs_diff": float(np.max(np.abs(probs - keras_probs))) if len(gray) else 0.0,
        "mean_abs_diff": float(np.mean(np.abs(probs - keras_probs))) if len(gray) else 0.0,
        "roc_auc_keras": auc_keras,
        "roc_auc": auc_lite,
        "roc_auc_diff": None if auc_keras is None else float(auc_lite - auc_keras),
        **(
            {}
            if threshold is None
            else {
                "threshold": float(threshold),
                "label_agreement": float(np.mean((probs >= threshold) == (keras_probs >= threshold)))
                if len(gray)
                else 1.0,
            }
        ),
    }


def refusals(checks: dict[str, dict], auc_tolerance: float = 0.01, int8_max_mb: float = 3.5) -> list[str]:
    """Why parity results (kind -> `parity` dict) must be refused; empty when they pass."""
    problems = []
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
) -> dict:
    """Convert, then check each file against Keras on the validation split; returns the card's `litert`.

    Refuses (RuntimeError, earlier files kept) an int8 file more than `auc_tolerance` below Keras in
    validation AUC or larger than `int8_max_mb` megabytes. The same comparison on the test split
    is recorded under `test` as a confirmation; it decides nothing. With the operating `threshold`,
    each comparison also gives the share of images labelled as Keras labels them.
    """
    model = load(model_path)
    train_images, _, _ = load_split(prepared_dir, "train")
    sample = representative_sample(train_images, calibration_images, seed)
    val_images, val_labels, _ = load_split(prepared_dir, "val")
    keras_probs = predict_gray(model.predict_on_batch, val_images)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Converted and checked beside the targets, moved over them only if all pass: a refused
    # export leaves the previous files as they were.
    with tempfile.TemporaryDirectory(prefix=".litert.", dir=out_dir) as staging:
        files = convert(model, staging, sample, kinds)
        checks = {kind: parity(path, keras_probs, val_images, val_labels, threshold) for kind, path in files.items()}
        problems = refusals(checks, auc_tolerance, int8_max_mb)
        if problems:
            raise RuntimeError("export: LiteRT files refused: " + "; ".join(problems))
        test_images, test_labels, _ = load_split(prepared_dir, "test")
        if len(test_images):
            test_probs = predict_gray(model.predict_on_batch, test_images)
            for kind, path in files.items():
                confirm = parity(path, test_probs, test_images, test_labels, threshold)
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
                    )
                    if k in confirm
                }
        for path in files.values():
            os.replace(path, out_dir / path.name)
    for kind, check in checks.items():
        log.info(
            "litert: %s %.2f MB, max |dp| %.4f, AUC diff %s",
            kind,
            check["bytes"] / 1e6,
            check["max_abs_diff"],
            check["roc_auc_diff"],
        )
    return {
        "io": IO_CONTRACT,
        "runtime": "ai_edge_litert.interpreter.Interpreter (or tf.lite.Interpreter)",
        "calibration": {"split": "train", "images": int(len(sample)), "seed": seed},
        "parity_split": "val",
        "confirmation_split": "test",
        "auc_tolerance": auc_tolerance,
        "files": checks,
    }
