"""The LiteRT runtime: run a .tflite classifier with `ai_edge_litert` (never TensorFlow) and
always return probabilities, whatever the file's output (`pneumo.core.contract`) or its
input quantization (a uint8/int8-input file made elsewhere runs too).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from pneumo.core.contract import LOGIT_OUTPUT, PROBABILITY

log = logging.getLogger(__name__)


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
