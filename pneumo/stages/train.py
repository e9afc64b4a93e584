"""train: a frozen phase, then fine-tuning of the top layers; the best epoch on validation wins.

Only the validation split is looked at for early stopping and checkpoint selection. The test
split is never loaded here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pneumo.core.cache import load_split
from pneumo.core.config import DataParams, TrainParams, as_dict
from pneumo.core.io import atomic_dir, read_json, write_json
from pneumo.core.paths import HISTORY_FILE, MODEL_FILE, PREPARE_SUMMARY, TRAIN_SUMMARY
from pneumo.nn.model import WeightsUnavailable, build_model, set_trainable_top
from pneumo.nn.training import BestEpoch, configure_device, fit_phase, make_dataset, seed_everything, steps_per_epoch

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

log = logging.getLogger(__name__)


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    """'balanced': each class weighs n / (2 * n_class), so both classes count equally."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=2)
    if (counts == 0).any():
        raise ValueError(f"train: the training split lacks a class (counts per class: {counts.tolist()})")
    return {c: float(len(labels) / (2 * counts[c])) for c in (0, 1)}


def _build(image_size: int, params: TrainParams, synthetic: bool) -> tuple[keras.Model, str]:
    try:
        model = build_model(image_size, params.weights, params.dense_units, params.dropout)
        return model, params.weights
    except WeightsUnavailable as exc:
        if not synthetic:
            raise
        log.warning(
            "train: %s\ntrain: the data is synthetic, so training falls back to a randomly "
            "initialised MobileNetV2 (whole network trainable).",
            exc,
        )
        return build_model(image_size, "none", params.dense_units, params.dropout), "none (fallback)"


def train(prepared_dir: str | Path, out_dir: str | Path, data: DataParams, params: TrainParams) -> dict:
    """Run the stage: write model.keras, history.csv and train.json into `out_dir`."""
    prepared_dir = Path(prepared_dir)
    prep = read_json(prepared_dir / PREPARE_SUMMARY)
    if prep["image_size"] != data.image_size:
        raise ValueError(
            f"{prepared_dir}: prepared at {prep['image_size']} px but data.image_size is "
            f"{data.image_size}: rerun `pneumo prepare`"
        )
    seed_everything(params.seed, params.deterministic)
    device = configure_device(params)
    x_train, y_train, _ = load_split(prepared_dir, "train")
    x_val, y_val, _ = load_split(prepared_dir, "val")
    weights = class_weights(y_train, params.class_weight)
    steps = steps_per_epoch(len(y_train), params.batch_size)

    def train_ds(phase: int) -> tf.data.Dataset:
        return make_dataset(x_train, y_train, params.batch_size, seed=params.seed, phase=phase, augment=params.augment)

    val_ds = make_dataset(x_val, y_val, params.batch_size)

    model, weights_used = _build(data.image_size, params, prep["synthetic"])
    pretrained = not weights_used.startswith("none")
    best = BestEpoch(params.patience)
    seconds: dict[str, float] = {}
    log.info("train: %d train / %d val images on %s, weights %s", len(y_train), len(y_val), device, weights_used)

    if params.frozen.epochs:
        # A random base has nothing worth freezing: it learns whole, BatchNorm included.
        set_trainable_top(model, 0 if pretrained else None, train_batchnorm=not pretrained)
        seconds["frozen"] = fit_phase(
            model,
            "frozen",
            best,
            train_ds(0),
            steps,
            val_ds,
            params.frozen.epochs,
            params.frozen.learning_rate,
            params,
            weights,
        )
    if params.finetune.epochs and (params.finetune.layers or not pretrained):
        if best.best_weights is not None:
            model.set_weights(best.best_weights)
        set_trainable_top(model, params.finetune.layers if pretrained else None, train_batchnorm=not pretrained)
        seconds["finetune"] = fit_phase(
            model,
            "finetune",
            best,
            train_ds(1),
            steps,
            val_ds,
            params.finetune.epochs,
            params.finetune.learning_rate,
            params,
            weights,
        )
    if best.best_weights is not None:
        model.set_weights(best.best_weights)

    summary = {
        "synthetic": prep["synthetic"],
        "device": device,
        "deterministic": params.deterministic,
        "weights": weights_used,
        "train_images": int(len(y_train)),
        "val_images": int(len(y_val)),
        "class_weight": weights,
        "best_epoch": best.best_epoch,
        "epochs_run": len(best.rows),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "params": as_dict(params),
    }
    with atomic_dir(out_dir) as tmp:
        model.save(tmp / MODEL_FILE)
        pd.DataFrame(best.rows).to_csv(tmp / HISTORY_FILE, index=False)
        write_json(tmp / TRAIN_SUMMARY, summary)
    log.info("train: best epoch %s", best.best_epoch)
    return summary
