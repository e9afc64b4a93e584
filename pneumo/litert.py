"""LiteRT (TFLite) exports of the trained model, their runtime, and their parity with Keras.

Two files are written beside the Keras model: `model_float16.tflite` (weights in float16) and
`model_int8.tflite` (full-integer int8 weights and activations, calibrated on a seeded sample
of the training split). Both keep a float32 input: they take the same raw RGB pixels in
[0, 255] as the Keras model, so a caller swaps one file for another without touching its
preprocessing; the quantize/dequantize at the edges costs nothing measurable.

Outputs differ on purpose, and each file says which in its signature (`serving_default`'s
output key):
- float16 returns `probability`, like the Keras model;
- int8 returns the `logit` (probability = sigmoid(logit)). An int8 sigmoid output has 256
  levels, so the confident end collapses into ties (every p above 0.998 reads 1.0): on the
  first real-data model that cost 0.025 test AUC, against +0.004 for the int8 logit (measured
  once, by hand, on that model; the model card holds each export's own figures).

`LiteRTModel` reads the signature and always returns probabilities; it also reads the
quantization parameters of whatever file it is given, so a uint8/int8-input file made
elsewhere runs too.

Conversion goes through a SavedModel (`model.export(dir)` then `from_saved_model`):
`TFLiteConverter.from_keras_model` is unreliable with Keras 3.

This module imports only NumPy at the top: the runtime (`LiteRTModel`) needs `ai_edge_litert`,
never TensorFlow; conversion imports TensorFlow inside its functions.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FLOAT16_FILE = "model_float16.tflite"
INT8_FILE = "model_int8.tflite"
KINDS: dict[str, str] = {"float16": FLOAT16_FILE, "int8": INT8_FILE}
PROBABILITY, LOGIT_OUTPUT = "probability", "logit"
OUTPUTS: dict[str, str] = {"float16": PROBABILITY, "int8": LOGIT_OUTPUT}
IO_CONTRACT = ("float32 input (batch, S, S, 3) RGB in [0, 255], as the Keras model; float32 output (batch, 1) "
               "named by the file's serving_default signature: 'probability', or 'logit' (probability = "
               "1 / (1 + exp(-logit))); int8 quantizes inside the file")


def sigmoid(logit: np.ndarray) -> np.ndarray:
    """Overflow-free logistic function."""
    logit = np.asarray(logit, np.float64)
    out = np.empty_like(logit)
    pos = logit >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-logit[pos]))
    e = np.exp(logit[~pos])
    out[~pos] = e / (1.0 + e)
    return out.astype(np.float32)


class LiteRTModel:
    """A .tflite classifier run by `ai_edge_litert` (no TensorFlow import)."""

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: LiteRT model file missing (run `pneumo export`)")
        try:
            self._interp = Interpreter(model_path=str(self.path), num_threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{self.path}: not a LiteRT/TFLite model LiteRT can load ({exc})") from None
        self._input = self._interp.get_input_details()[0]
        self._output = self._interp.get_output_details()[0]
        shape = [int(v) for v in self._input["shape"]]
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise ValueError(f"{self.path}: input shape {shape} is not (batch, S, S, 3)")
        self.input_size = shape[1]
        self.output_kind = self._output_kind()
        self._batch = 0

    def _output_kind(self) -> str:
        """'logit' when the file's signature names its output so; else 'probability'."""
        try:
            signatures = self._interp.get_signature_list()
        except (ValueError, RuntimeError):  # files without signatures
            return PROBABILITY
        outputs = [name for sig in signatures.values() for name in sig.get("outputs", [])]
        return LOGIT_OUTPUT if outputs == [LOGIT_OUTPUT] else PROBABILITY

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self._interp.resize_tensor_input(self._input["index"], [batch, self.input_size, self.input_size, 3])
            self._interp.allocate_tensors()
            self._input = self._interp.get_input_details()[0]
            self._output = self._interp.get_output_details()[0]
            self._batch = batch

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) float pixels in [0, 255] -> (N,) float32 probabilities."""
        batch = np.asarray(batch, np.float32)
        if len(batch) == 0:
            return np.zeros(0, np.float32)
        self._resize(len(batch))
        dtype = self._input["dtype"]
        if dtype != np.float32:
            scale, zero = self._input["quantization"]
            info = np.iinfo(dtype)
            batch = np.clip(np.round(batch / scale + zero), info.min, info.max).astype(dtype)
        self._interp.set_tensor(self._input["index"], batch)
        self._interp.invoke()
        out = self._interp.get_tensor(self._output["index"])
        if out.dtype != np.float32:
            scale, zero = self._output["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        out = out.reshape(len(batch), -1)[:, 0].astype(np.float32)
        return sigmoid(out) if self.output_kind == LOGIT_OUTPUT else out


def named_output(model, output: str):
    """The same network with one output named `output`: 'probability', or 'logit' (before the sigmoid).

    The name becomes the output key of the exported signature, which is how a file says what it returns.
    """
    import keras

    from pneumo.model import LOGIT

    if output not in (PROBABILITY, LOGIT_OUTPUT):
        raise ValueError(f"litert: unknown output {output!r}: expected {PROBABILITY!r} or {LOGIT_OUTPUT!r}")
    tensor = model.get_layer(LOGIT).output if output == LOGIT_OUTPUT else model.outputs[0]
    return keras.Model(model.inputs, {output: tensor}, name=f"{model.name}_{output}")


def predict_batches(predict: Callable[[np.ndarray], np.ndarray], gray: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Probabilities of (N, S, S) uint8 luminance images, batch by batch."""
    from pneumo.images import to_rgb

    out = np.zeros(len(gray), np.float32)
    for start in range(0, len(gray), batch_size):
        out[start:start + batch_size] = np.asarray(predict(to_rgb(gray[start:start + batch_size]))).reshape(-1)
    return out


def representative_sample(images: np.ndarray, n: int = 200, seed: int = 42) -> np.ndarray:
    """A seeded sample of `n` images (all of them when fewer), in cache order."""
    if len(images) <= n:
        return images
    rng = np.random.default_rng(seed)
    return images[np.sort(rng.choice(len(images), n, replace=False))]


def convert(model, out_dir: str | Path, calibration: np.ndarray, kinds: tuple[str, ...] = ("float16", "int8")
            ) -> dict[str, Path]:
    """Write the LiteRT files for `kinds` into `out_dir`; `calibration` is (N, S, S) uint8 luminance.

    Files appear atomically: a failed conversion leaves earlier files as they were.
    """
    import tensorflow as tf

    from pneumo.images import to_rgb
    from pneumo.io import atomic_path

    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"litert: unknown kind {sorted(unknown)[0]!r}: expected one of {', '.join(KINDS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="pneumo-savedmodel-") as tmp:
        for kind in kinds:
            saved = Path(tmp) / kind
            named_output(model, OUTPUTS[kind]).export(str(saved), verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if kind == "float16":
                converter.target_spec.supported_types = [tf.float16]
            else:
                if len(calibration) == 0:
                    raise ValueError("litert: int8 needs calibration images; the training split is empty")

                def dataset(images: np.ndarray = calibration) -> Iterator[list[np.ndarray]]:
                    for image in images:
                        yield [to_rgb(image[None])]

                converter.representative_dataset = dataset
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                # float32 in and out on purpose: the same raw-pixel contract as the Keras model
                # (out is the logit: see the module's docstring).
                converter.inference_input_type = tf.float32
                converter.inference_output_type = tf.float32
            flat = converter.convert()
            target = out_dir / KINDS[kind]
            with atomic_path(target) as part:
                part.write_bytes(flat)
            written[kind] = target
            log.info("litert: wrote %s (%.2f MB)", target, len(flat) / 1e6)
    return written


def parity(path: str | Path, keras_probs: np.ndarray, gray: np.ndarray, labels: np.ndarray,
           threshold: float | None = None) -> dict:
    """How far a LiteRT file is from the Keras model on the same images (e.g. the validation split).

    `keras_probs` are the Keras model's probabilities of `gray` ((N, S, S) uint8). With a
    `threshold`, also the share of images given the same label as Keras gives them.
    """
    from sklearn.metrics import roc_auc_score

    from pneumo.io import sha256_file

    path = Path(path)
    lite = LiteRTModel(path)
    probs = predict_batches(lite.predict, gray)
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
        **({} if threshold is None else {
            "threshold": float(threshold),
            "label_agreement": float(np.mean((probs >= threshold) == (keras_probs >= threshold))) if len(gray) else 1.0,
        }),
    }


def refusals(checks: dict[str, dict], auc_tolerance: float = 0.01, int8_max_mb: float = 3.5) -> list[str]:
    """Why parity results (kind -> `parity` dict) must be refused; empty when they pass."""
    problems = []
    for kind, check in checks.items():
        drop = check["roc_auc_diff"]
        if drop is not None and -drop > auc_tolerance:
            problems.append(f"{kind}: validation AUC {check['roc_auc']:.4f} is {-drop:.4f} below Keras "
                            f"({check['roc_auc_keras']:.4f}), more than {auc_tolerance}")
    if "int8" in checks and checks["int8"]["bytes"] > int8_max_mb * 1e6:
        problems.append(f"int8: {checks['int8']['bytes'] / 1e6:.2f} MB exceeds {int8_max_mb} MB")
    return problems


def export_litert(model_path: str | Path, prepared_dir: str | Path, out_dir: str | Path, *,
                  calibration_images: int = 200, seed: int = 42, auc_tolerance: float = 0.01,
                  int8_max_mb: float = 3.5, kinds: tuple[str, ...] = ("float16", "int8"),
                  threshold: float | None = None) -> dict:
    """Convert, then check each file against Keras on the validation split; returns the card's `litert`.

    Refuses (RuntimeError, earlier files kept) an int8 file more than `auc_tolerance` below Keras in
    validation AUC or larger than `int8_max_mb` megabytes. The same comparison on the test split
    is recorded under `test` as a confirmation; it decides nothing. With the operating `threshold`,
    each comparison also gives the share of images labelled as Keras labels them.
    """
    from pneumo.model import load
    from pneumo.prepare import load_split

    model = load(model_path)
    train_images, _, _ = load_split(prepared_dir, "train")
    sample = representative_sample(train_images, calibration_images, seed)
    val_images, val_labels, _ = load_split(prepared_dir, "val")
    keras_probs = predict_batches(lambda b: model.predict_on_batch(b), val_images)
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
            test_probs = predict_batches(lambda b: model.predict_on_batch(b), test_images)
            for kind, path in files.items():
                confirm = parity(path, test_probs, test_images, test_labels, threshold)
                checks[kind]["test"] = {k: confirm[k] for k in (
                    "images", "max_abs_diff", "mean_abs_diff", "roc_auc_keras", "roc_auc", "roc_auc_diff",
                    "label_agreement") if k in confirm}
        for path in files.values():
            os.replace(path, out_dir / path.name)
    for kind, check in checks.items():
        log.info("litert: %s %.2f MB, max |dp| %.4f, AUC diff %s", kind, check["bytes"] / 1e6,
                 check["max_abs_diff"], check["roc_auc_diff"])
    return {
        "io": IO_CONTRACT,
        "runtime": "ai_edge_litert.interpreter.Interpreter (or tf.lite.Interpreter)",
        "calibration": {"split": "train", "images": int(len(sample)), "seed": seed},
        "parity_split": "val",
        "confirmation_split": "test",
        "auc_tolerance": auc_tolerance,
        "files": checks,
    }
