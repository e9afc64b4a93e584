"""The LiteRT runtime: run a .tflite classifier with `ai_edge_litert` (never TensorFlow): its raw
logit and pooled features (`pneumo.core.contract`) or a probability, whatever the file's outputs
(older files return one) or its input quantization (a uint8/int8-input file made elsewhere runs too).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from pneumo.core.contract import FEATURES_OUTPUT, LOGIT_OUTPUT, PROBABILITY
from pneumo.core.decision import sigmoid

log = logging.getLogger(__name__)


class LiteRTModel:
    """A .tflite classifier run by `ai_edge_litert` (no TensorFlow import)."""

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: LiteRT model file missing (run `pneumo export`)")
        try:
            self._interp = Interpreter(model_path=str(self.path), num_threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{self.path}: not a LiteRT/TFLite model LiteRT can load ({exc})") from None
        self._input = self._interp.get_input_details()[0]
        shape = [int(v) for v in self._input["shape"]]
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise ValueError(f"{self.path}: input shape {shape} is not (batch, S, S, 3)")
        self.input_size = shape[1]
        self._indices = self._named_outputs()
        self.outputs: tuple[str, ...] = tuple(sorted(self._indices))
        self.output_kind = LOGIT_OUTPUT if LOGIT_OUTPUT in self._indices else PROBABILITY
        self.has_features = FEATURES_OUTPUT in self._indices
        self._batch = 0

    def _named_outputs(self) -> dict[str, int]:
        """Output name -> tensor index, from the file's signature (`pneumo.core.contract`).

        A file without a signature, or whose single output has another name, returns a probability.
        """
        try:
            signatures = self._interp.get_signature_list()
        except (ValueError, RuntimeError):  # files without signatures
            signatures = {}
        if signatures:
            key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
            details = self._interp.get_signature_runner(key).get_output_details()
            named = {name: int(d["index"]) for name, d in details.items()}
            if LOGIT_OUTPUT in named or PROBABILITY in named:
                return named
            if len(named) == 1:
                return {PROBABILITY: next(iter(named.values()))}
            raise ValueError(
                f"{self.path}: outputs {sorted(named)} name neither {LOGIT_OUTPUT!r} nor {PROBABILITY!r}: "
                "not a pneumo classifier"
            )
        return {PROBABILITY: int(self._interp.get_output_details()[0]["index"])}

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self._interp.resize_tensor_input(self._input["index"], [batch, self.input_size, self.input_size, 3])
            self._interp.allocate_tensors()
            self._input = self._interp.get_input_details()[0]
            self._batch = batch

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """(N, S, S, 3) float pixels in [0, 255] -> every named output, float32, one row per image."""
        batch = np.asarray(batch, np.float32)
        self._resize(len(batch))
        dtype = self._input["dtype"]
        if dtype != np.float32:
            scale, zero = self._input["quantization"]
            info = np.iinfo(dtype)
            batch = np.clip(np.round(batch / scale + zero), info.min, info.max).astype(dtype)
        self._interp.set_tensor(self._input["index"], batch)
        self._interp.invoke()
        details = {int(d["index"]): d for d in self._interp.get_output_details()}
        out = {}
        for name, index in self._indices.items():
            value = self._interp.get_tensor(index)
            if value.dtype != np.float32:
                scale, zero = details[index]["quantization"]
                value = (value.astype(np.float32) - zero) * scale
            out[name] = value.reshape(len(batch), -1).astype(np.float32)
        return out

    def scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(raw logits (N,), pooled features (N, D) or None for a file without them)."""
        if len(batch) == 0:
            return np.zeros(0, np.float32), None
        out = self.run(batch)
        if LOGIT_OUTPUT in out:
            logits = out[LOGIT_OUTPUT][:, 0]
        else:
            p = np.clip(out[PROBABILITY][:, 0].astype(np.float64), 1e-7, 1 - 1e-7)
            logits = np.log(p / (1 - p)).astype(np.float32)
        return logits, out.get(FEATURES_OUTPUT)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) float pixels in [0, 255] -> (N,) float32 uncalibrated probabilities sigmoid(logit)."""
        batch = np.asarray(batch, np.float32)
        if len(batch) == 0:
            return np.zeros(0, np.float32)
        out = self.run(batch)
        if LOGIT_OUTPUT in out:
            return sigmoid(out[LOGIT_OUTPUT][:, 0]).astype(np.float32)
        return out[PROBABILITY][:, 0]
