"""The Keras side of training: seeded input pipelines, the best-epoch callback, devices and one
compiled fit. `pneumo.stages.train` composes them into the stage."""

from __future__ import annotations

import logging
import math
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from pneumo.core.config import AugmentParams, TrainParams
from pneumo.nn.augment import augment_batch, batch_seed, is_identity

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; with `deterministic`, deterministic kernels too (same
    params, same weights; an error, not a silent difference, where an op has none). tf.data is
    made deterministic by `make_dataset`."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _to_rgb(images: tf.Tensor) -> tf.Tensor:
    return tf.repeat(images, 3, axis=-1)


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    seed: int | None = None,
    phase: int = 0,
    augment: AugmentParams | None = None,
) -> tf.data.Dataset:
    """Batches of (RGB float32 in [0, 255], label) from the uint8 luminance cache.

    With a `seed` the batches are shuffled, repeat without end (train with `steps_per_epoch`) and,
    with `augment`, are augmented under a stateless seed made of (seed, phase, step): the order
    and pixels of every batch are a function of those numbers alone. Without one the split is
    read once, in order (validation).
    """
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.float32)))
    if seed is None:
        ds = ds.batch(batch_size)
        return ds.map(
            lambda x, y: (_to_rgb(tf.cast(x[..., None], tf.float32)), y),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        ).prefetch(tf.data.AUTOTUNE)
    ds = ds.shuffle(len(images), seed=seed + phase, reshuffle_each_iteration=True).batch(batch_size).repeat()

    def step_fn(step: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = batch
        x = tf.cast(x[..., None], tf.float32)
        if augment is not None and not is_identity(augment):
            x = augment_batch(x, augment, batch_seed(seed, phase, step))
        return _to_rgb(x), y

    return (
        ds.enumerate().map(step_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
    )


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
        row = {
            "epoch": len(self.rows) + 1,
            "phase": self.phase,
            **{k: float(v) for k, v in logs.items() if np.isscalar(v) or getattr(v, "shape", None) == ()},
        }
        self.rows.append(row)
        value = row.get(self.monitor, np.inf)
        if value < self.best:
            self.best, self.wait = value, 0
            self.best_weights = [w.copy() for w in self.model.get_weights()]
            self.best_epoch = row
        else:
            self.wait += 1
            if self.patience and self.wait >= self.patience:
                log.info(
                    "train: %s did not improve for %d epochs: stopping phase %s", self.monitor, self.wait, self.phase
                )
                self.model.stop_training = True


def configure_device(params: TrainParams) -> str:
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


def fit_phase(
    model: keras.Model,
    phase: str,
    best: BestEpoch,
    train_ds: tf.data.Dataset,
    steps: int,
    val_ds: tf.data.Dataset,
    epochs: int,
    learning_rate: float,
    params: TrainParams,
    weights: dict | None,
) -> float:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=params.label_smoothing),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    best.start_phase(phase)
    start = time.perf_counter()
    # The dataset shuffles itself under its seed; shuffle=False only says so to Keras.
    model.fit(
        train_ds,
        steps_per_epoch=steps,
        validation_data=val_ds,
        epochs=epochs,
        class_weight=weights,
        callbacks=[best],
        shuffle=False,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return time.perf_counter() - start
