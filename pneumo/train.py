"""train: a frozen phase, then fine-tuning of the top layers; the best epoch on validation wins.

Only the validation split is looked at for early stopping and checkpoint selection. The test
split is never loaded here.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from pneumo.augment import augment_batch, batch_seed, is_identity
from pneumo.config import AugmentParams, DataParams, TrainParams, as_dict
from pneumo.io import atomic_dir, read_json, write_json
from pneumo.model import WeightsUnavailable, build_model, set_trainable_top
from pneumo.prepare import SUMMARY, load_split

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "train.json"


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    """'balanced': each class weighs n / (2 * n_class), so both classes count equally."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=2)
    if (counts == 0).any():
        raise ValueError(f"train: the training split lacks a class (counts per class: {counts.tolist()})")
    return {c: float(len(labels) / (2 * counts[c])) for c in (0, 1)}


def _to_rgb(images: tf.Tensor) -> tf.Tensor:
    return tf.repeat(images, 3, axis=-1)


def make_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, *, seed: int | None = None,
                 phase: int = 0, augment: AugmentParams | None = None) -> tf.data.Dataset:
    """Batches of (RGB float32 in [0, 255], label) from the uint8 luminance cache.

    With a `seed` the batches are shuffled, repeat without end (train with `steps_per_epoch`) and,
    with `augment`, are augmented under a stateless seed made of (seed, phase, step): the order
    and pixels of every batch are a function of those numbers alone. Without one the split is
    read once, in order (validation).
    """
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.float32)))
    if seed is None:
        ds = ds.batch(batch_size)
        return ds.map(lambda x, y: (_to_rgb(tf.cast(x[..., None], tf.float32)), y),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
    ds = ds.shuffle(len(images), seed=seed + phase, reshuffle_each_iteration=True).batch(batch_size).repeat()

    def step_fn(step: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = batch
        x = tf.cast(x[..., None], tf.float32)
        if augment is not None and not is_identity(augment):
            x = augment_batch(x, augment, batch_seed(seed, phase, step))
        return _to_rgb(x), y

    return ds.enumerate().map(step_fn, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=True).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    return max(1, math.ceil(n_images / batch_size))


class BestEpoch(keras.callbacks.Callback):
    """Keep the weights of the lowest validation loss across phases; stop after `patience` misses."""

    def __init__(self, patience: int, monitor: str = "val_loss") -> None:
        super().__init__()
        self.patience, self.monitor = patience, monitor
        self.best = np.inf
        self.best_weights: list[np.ndarray] | None = None
        self.best_epoch: dict | None = None
        self.rows: list[dict] = []
        self.phase, self.offset, self.wait = "", 0, 0

    def start_phase(self, phase: str) -> None:
        self.phase, self.offset, self.wait = phase, len(self.rows), 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        row = {"epoch": len(self.rows) + 1, "phase": self.phase,
               **{k: float(v) for k, v in logs.items() if np.isscalar(v) or getattr(v, "shape", None) == ()}}
        self.rows.append(row)
        value = row.get(self.monitor, np.inf)
        if value < self.best:
            self.best, self.wait = value, 0
            self.best_weights = [w.copy() for w in self.model.get_weights()]
            self.best_epoch = row
        else:
            self.wait += 1
            if self.patience and self.wait >= self.patience:
                log.info("train: %s did not improve for %d epochs: stopping phase %s",
                         self.monitor, self.wait, self.phase)
                self.model.stop_training = True


def _configure_device(params: TrainParams) -> str:
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if params.mixed_precision:
        if gpus:
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            log.warning("train: train.mixed_precision is on but no GPU is visible: training in float32")
    if not gpus:
        log.warning("train: no GPU found: training on the CPU")
        return "CPU"
    return f"GPU x{len(gpus)} ({gpus[0].name})"


def _build(image_size: int, params: TrainParams, synthetic: bool) -> tuple[keras.Model, str]:
    try:
        model = build_model(image_size, params.weights, params.dense_units, params.dropout)
        return model, params.weights
    except WeightsUnavailable as exc:
        if not synthetic:
            raise
        log.warning("train: %s\ntrain: the data is synthetic, so training falls back to a randomly "
                    "initialised MobileNetV2 (whole network trainable).", exc)
        return build_model(image_size, "none", params.dense_units, params.dropout), "none (fallback)"


def _fit(model: keras.Model, phase: str, best: BestEpoch, train_ds: tf.data.Dataset, steps: int,
         val_ds: tf.data.Dataset, epochs: int, learning_rate: float, params: TrainParams,
         weights: dict | None) -> float:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=params.label_smoothing),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    best.start_phase(phase)
    start = time.perf_counter()
    # The dataset shuffles itself under its seed; shuffle=False only says so to Keras.
    model.fit(train_ds, steps_per_epoch=steps, validation_data=val_ds, epochs=epochs, class_weight=weights,
              callbacks=[best], shuffle=False, verbose=1 if sys.stdout.isatty() else 2)
    return time.perf_counter() - start


def train(prepared_dir: str | Path, out_dir: str | Path, data: DataParams, params: TrainParams) -> dict:
    """Run the stage: write model.keras, history.csv and train.json into `out_dir`."""
    prepared_dir = Path(prepared_dir)
    prep = read_json(prepared_dir / SUMMARY)
    if prep["image_size"] != data.image_size:
        raise ValueError(f"{prepared_dir}: prepared at {prep['image_size']} px but data.image_size is "
                         f"{data.image_size}: rerun `pneumo prepare`")
    keras.utils.set_random_seed(params.seed)
    if params.deterministic:
        # Same params, same weights: deterministic kernels (and an error, not a silent
        # difference, where an op has none). tf.data is made deterministic by make_dataset.
        tf.config.experimental.enable_op_determinism()
    device = _configure_device(params)
    x_train, y_train, _ = load_split(prepared_dir, "train")
    x_val, y_val, _ = load_split(prepared_dir, "val")
    weights = class_weights(y_train, params.class_weight)
    steps = steps_per_epoch(len(y_train), params.batch_size)

    def train_ds(phase: int) -> tf.data.Dataset:
        return make_dataset(x_train, y_train, params.batch_size, seed=params.seed, phase=phase,
                            augment=params.augment)

    val_ds = make_dataset(x_val, y_val, params.batch_size)

    model, weights_used = _build(data.image_size, params, prep["synthetic"])
    pretrained = not weights_used.startswith("none")
    best = BestEpoch(params.patience)
    seconds: dict[str, float] = {}
    log.info("train: %d train / %d val images on %s, weights %s", len(y_train), len(y_val), device, weights_used)

    if params.frozen.epochs:
        # A random base has nothing worth freezing: it learns whole, BatchNorm included.
        set_trainable_top(model, 0 if pretrained else None, train_batchnorm=not pretrained)
        seconds["frozen"] = _fit(model, "frozen", best, train_ds(0), steps, val_ds, params.frozen.epochs,
                                 params.frozen.learning_rate, params, weights)
    if params.finetune.epochs and (params.finetune.layers or not pretrained):
        if best.best_weights is not None:
            model.set_weights(best.best_weights)
        set_trainable_top(model, params.finetune.layers if pretrained else None, train_batchnorm=not pretrained)
        seconds["finetune"] = _fit(model, "finetune", best, train_ds(1), steps, val_ds, params.finetune.epochs,
                                   params.finetune.learning_rate, params, weights)
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
        write_json(tmp / SUMMARY_FILE, summary)
    log.info("train: best epoch %s", best.best_epoch)
    return summary
