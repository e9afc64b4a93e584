"""LiteRT conversion of the trained Keras model: `model_float16.tflite` (weights in float16) and
`model_int8.tflite` (int8 weights and activations, calibrated on a sample of the training split;
the few layers whose quantization errs most, measured by LiteRT's quantization debugger on the
same images, can stay float: `export.float_layers`), both with the raw-pixel float32 input and the
`logit` and `features` outputs of `pneumo.core.contract`.

Conversion goes through a SavedModel (`model.export(dir)` then `from_saved_model`):
`TFLiteConverter.from_keras_model` is unreliable with Keras 3.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from pneumo.core.contract import KINDS
from pneumo.core.images import to_rgb
from pneumo.core.io import atomic_path
from pneumo.nn.decision import decision_model

log = logging.getLogger(__name__)


DEBUG_IMAGES = 40  # calibration images the quantization debugger measures each layer's error on


def sensitive_layers(converter, dataset: Callable[[], Iterator[list[np.ndarray]]], n: int) -> list[str]:
    """The `n` tensors whose int8 quantization errs most (root-mean-square error over the quantization
    step, measured by LiteRT's quantization debugger on calibration images), worst first."""
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
    debugger.run()
    table = io.StringIO()
    debugger.layer_statistics_dump(table)
    table.seek(0)
    stats = pd.read_csv(table)
    stats["error"] = np.sqrt(stats["mean_squared_error"]) / stats["scale"]
    return list(stats.sort_values("error", ascending=False, kind="stable")["tensor_name"].head(n))


def _int8(converter, calibration: np.ndarray, float_layers: int) -> bytes:
    """Full-integer int8, except the `float_layers` most quantization-sensitive layers, which stay float."""
    if len(calibration) == 0:
        raise ValueError("litert: int8 needs calibration images; the training split is empty")

    def dataset(images: np.ndarray = calibration) -> Iterator[list[np.ndarray]]:
        for image in images:
            yield [to_rgb(image[None])]

    converter.representative_dataset = dataset
    # float32 in and out on purpose: the same raw-pixel contract as the Keras model
    # (the outputs are the logit and the features: see pneumo.core.contract).
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    if float_layers == 0:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()

    def sample() -> Iterator[list[np.ndarray]]:
        return dataset(calibration[:DEBUG_IMAGES])

    nodes = sensitive_layers(converter, sample, float_layers)
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=sample, debug_options=options
    )
    log.info("litert: int8 keeps the %d most quantization-sensitive layers in float", len(nodes))
    return debugger.get_nondebug_quantized_model()


def convert(
    model,
    out_dir: str | Path,
    calibration: np.ndarray,
    kinds: tuple[str, ...] = ("float16", "int8"),
    float_layers: int = 0,
) -> dict[str, Path]:
    """Write the LiteRT files for `kinds` into `out_dir`; `calibration` is (N, S, S) uint8 luminance.

    The int8 file keeps its `float_layers` most quantization-sensitive layers in float (0: full
    integer). Files appear atomically: a failed conversion leaves earlier files as they were.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"litert: unknown kind {sorted(unknown)[0]!r}: expected one of {', '.join(KINDS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="pneumo-savedmodel-") as tmp:
        for kind in kinds:
            saved = Path(tmp) / kind
            # Output names become the signature's keys: how a file says what it returns.
            decision_model(model).export(str(saved), verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if kind == "float16":
                converter.target_spec.supported_types = [tf.float16]
                flat = converter.convert()
            else:
                flat = _int8(converter, calibration, float_layers)
            target = out_dir / KINDS[kind]
            with atomic_path(target) as part:
                part.write_bytes(flat)
            written[kind] = target
            log.info("litert: wrote %s (%.2f MB)", target, len(flat) / 1e6)
    return written
