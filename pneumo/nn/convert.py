"""LiteRT conversion of the trained Keras model: `model_float16.tflite` (weights in float16) and
`model_int8.tflite` (full-integer int8 weights and activations, calibrated on a sample of the
training split), both with the raw-pixel float32 input of `pneumo.core.contract`.

Conversion goes through a SavedModel (`model.export(dir)` then `from_saved_model`):
`TFLiteConverter.from_keras_model` is unreliable with Keras 3.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pneumo.core.contract import KINDS, LOGIT_OUTPUT, OUTPUTS, PROBABILITY
from pneumo.core.images import to_rgb
from pneumo.core.io import atomic_path
from pneumo.nn.model import LOGIT

log = logging.getLogger(__name__)


def named_output(model, output: str):
    """The same network with one output named `output`: 'probability', or 'logit' (before the sigmoid).

    The name becomes the output key of the exported signature, which is how a file says what it returns.
    """
    if output not in (PROBABILITY, LOGIT_OUTPUT):
        raise ValueError(f"litert: unknown output {output!r}: expected {PROBABILITY!r} or {LOGIT_OUTPUT!r}")
    tensor = model.get_layer(LOGIT).output if output == LOGIT_OUTPUT else model.outputs[0]
    return keras.Model(model.inputs, {output: tensor}, name=f"{model.name}_{output}")


def convert(
    model, out_dir: str | Path, calibration: np.ndarray, kinds: tuple[str, ...] = ("float16", "int8")
) -> dict[str, Path]:
    """Write the LiteRT files for `kinds` into `out_dir`; `calibration` is (N, S, S) uint8 luminance.

    Files appear atomically: a failed conversion leaves earlier files as they were.
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
