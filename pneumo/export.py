"""export: the deployable models (Keras HDF5, as the notebook saved it; LiteRT float16 and int8) and the card.

The .h5 is reloaded and compared with the trained model before it replaces anything: an
export that does not reproduce the trained model's probabilities is refused.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pneumo import LABELS, __version__
from pneumo.config import Params, as_dict
from pneumo.io import atomic_path, read_json, sha256_file, sha256_json, write_json
from pneumo.prepare import SUMMARY as PREPARE_SUMMARY
from pneumo.prepare import data_statement, load_split

log = logging.getLogger(__name__)

MODEL_H5 = "model.h5"
MODEL_CARD = "model_card.json"

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
    return {"images": m["images"], "roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"], "brier": m["brier"],
            "at_operating_threshold": m["at_operating"], "at_0.5": m["at_0.5"],
            **({"ci95_at_operating_threshold": m["ci95"]["at_operating"]} if "ci95" in m else {})}


def operating_point(metrics: dict) -> dict:
    """The threshold, how it was chosen, and what to expect there: validation (which chose it) and
    test (which confirms it), sensitivity and specificity with the test's 95% intervals."""
    point = {"threshold": metrics["operating_threshold"],
             "rule": f"highest threshold with validation sensitivity >= {metrics['target_sensitivity']}"}
    for split, name in (("val", "validation"), ("test", "test")):
        if split not in metrics:
            continue
        at = metrics[split]["at_operating"]
        ci = metrics[split].get("ci95", {}).get("at_operating", {})
        point[name] = {"images": metrics[split]["images"],
                       **{key: {"value": at[field], **({"ci95": ci[field]} if field in ci else {})}
                          for key, field in (("sensitivity", "recall"), ("specificity", "specificity"),
                                             ("accuracy", "accuracy"))}}
    return point


def model_card(metrics: dict, prep: dict, params: Params, image_size: int, h5_sha256: str,
               parity: float, training: dict | None = None, litert: dict | None = None) -> dict:
    """The card that travels with the model: what it takes, what it says, how good, its limits."""
    import keras
    import tensorflow as tf

    synthetic = bool(prep["synthetic"])
    return {
        "name": "pneumo-mobilenetv2",
        "synthetic_data": synthetic,
        **({"warning": "Trained and evaluated on SYNTHETIC demo images: not a medical model."} if synthetic else {}),
        "labels": list(LABELS),
        "positive_label": LABELS[1],
        "output": "probability of PNEUMONIA (sigmoid), shape (batch, 1)",
        "input": {"shape": [None, image_size, image_size, 3], "channels": "RGB", "dtype": "float32",
                  "range": [0, 255], "layout": "NHWC",
                  "preprocessing": "inside the model (scaled to [-1, 1]); grayscale X-rays as three equal "
                                   "channels; resize to the input size without keeping the aspect ratio"},
        "operating_threshold": metrics["operating_threshold"],
        "threshold_rule": f"highest threshold with validation sensitivity >= {metrics['target_sensitivity']}",
        "operating_point": operating_point(metrics),
        "metrics": {
            "validation": _split_metrics(metrics, "val"),
            "test": _split_metrics(metrics, "test"),
            "test_source": prep["test_source"],
            "note": data_statement(synthetic, prep["test_source"]),
        },
        "data": {"source": data_statement(synthetic, prep["test_source"]), "fingerprint": prep["data_fingerprint"], "counts": prep["counts"],
                 "patients": prep["patients"]},
        "params_fingerprint": sha256_json(as_dict(params)),
        "training": {k: training[k] for k in ("device", "weights", "best_epoch", "epochs_run", "seconds")
                     if k in training} if training else None,
        "files": {MODEL_H5: {"sha256": h5_sha256, "reload_max_abs_diff": parity}},
        **({"litert": litert} if litert else {}),
        "architecture": "MobileNetV2 (alpha 1.0, ImageNet-initialised) + GlobalAveragePooling2D + "
                        f"Dense({params.train.dense_units}, relu) + Dense(1, sigmoid)",
        "intended_use": INTENDED_USE,
        "limits": LIMITS,
        "software": {"pneumo": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                     "python": platform.python_version()},
        "license": "data CC BY 4.0 (Kermany et al. 2018); MobileNetV2 ImageNet weights Apache-2.0",
    }


def export(model_path: str | Path, prepared_dir: str | Path, metrics_path: str | Path, out_dir: str | Path,
           params: Params, parity_images: int = 32) -> dict:
    """Run the stage: write model.h5 and model_card.json into `out_dir` (each atomically)."""
    from pneumo.images import to_rgb
    from pneumo.model import load

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
            raise RuntimeError(f"export: {h5} reloads with max |dp| = {diff:.2e} > "
                               f"export.parity_tolerance {params.export.parity_tolerance}: refused")
        h5.replace(tmp)
        digest = sha256_file(tmp)
    from pneumo.litert import export_litert

    litert = export_litert(model_path, prepared_dir, out_dir,
                           calibration_images=params.export.calibration_images,
                           seed=params.export.calibration_seed,
                           auc_tolerance=params.export.litert_auc_tolerance,
                           int8_max_mb=params.export.int8_max_mb,
                           threshold=metrics["operating_threshold"])
    train_summary = Path(model_path).with_name("train.json")
    training = read_json(train_summary) if train_summary.exists() else None
    card = model_card(metrics, prep, params, int(model.input_shape[1]), digest, diff, training, litert)
    write_json(out_dir / MODEL_CARD, card)
    log.info("export: %s (reload max |dp| %.1e), threshold %.4f", out_dir / MODEL_H5, diff,
             card["operating_threshold"])
    return card
