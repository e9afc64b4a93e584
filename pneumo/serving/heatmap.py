"""Grad-CAM for a LiteRT file, without TensorFlow: where in the image the PNEUMONIA logit looks.

The network ends MobileNetV2 -> out_relu (S', S', C) -> global average pooling -> Dense(relu) -> Dense(1)
(the logit), so the gradient of the logit with respect to out_relu is the same at every position:
(1 / S'^2) * d logit / d pooled, and d logit / d pooled = W1 (w2 * [W1^T pooled + b1 > 0]) needs only the
two Dense layers. The activations come from the LiteRT file itself (an interpreter that keeps its
intermediate tensors), the Dense weights from the `.h5` of the same training run, read with h5py.
So this is Grad-CAM of the file that answered (`pneumo.nn.gradcam` is the Keras one), up to the
int8 file's quantization of its Dense layers; maps are upsampled and scaled to [0, 1] as there.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

# pneumo.nn.model's LAST_CONV, HIDDEN and LOGIT layer names (not imported: that module loads Keras;
# tests/serving/test_heatmap.py checks they agree).
LAST_CONV = "out_relu"
HIDDEN = "dense"
LOGIT = "logit"


@dataclass(frozen=True)
class Head:
    """The two Dense layers after pooling: hidden = relu(pooled @ w1 + b1), logit = hidden @ w2 + b2."""

    w1: np.ndarray  # (C, H)
    b1: np.ndarray  # (H,)
    w2: np.ndarray  # (H,)

    def gradient(self, pooled: np.ndarray) -> np.ndarray:
        """d logit / d pooled for (N, C) pooled features -> (N, C)."""
        active = (pooled @ self.w1 + self.b1) > 0
        return (active * self.w2) @ self.w1.T


def _weights(h5: h5py.File, layer: str, name: str, path: Path) -> np.ndarray:
    group = h5.get(f"model_weights/{layer}")
    found: list[np.ndarray] = []
    if group is not None:
        group.visititems(lambda key, obj: found.append(obj[()]) if key.split("/")[-1].startswith(name) else None)
    if len(found) != 1:
        raise ValueError(f"{path}: no single {layer}/{name} weight (a pneumo Keras .h5 is expected)")
    return np.asarray(found[0], np.float64)


def read_head(path: str | Path) -> Head:
    """The Dense weights of a pneumo `.h5` (h5py only)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            w1, b1 = _weights(h5, HIDDEN, "kernel", path), _weights(h5, HIDDEN, "bias", path)
            w2 = _weights(h5, LOGIT, "kernel", path)
    except OSError as exc:
        raise ValueError(f"{path}: not an HDF5 file h5py can read ({exc})") from None
    if w1.ndim != 2 or b1.shape != (w1.shape[1],) or w2.shape != (w1.shape[1], 1):
        raise ValueError(f"{path}: Dense weights of shapes {w1.shape}, {b1.shape}, {w2.shape} do not chain")
    return Head(w1, b1, w2[:, 0])


def upsample(cams: np.ndarray, size: int) -> np.ndarray:
    """(N, s, s) maps -> (N, size, size) float32, bilinear, each scaled to a peak of 1 (as nn.gradcam)."""
    out = np.zeros((len(cams), size, size), np.float32)
    for i, cam in enumerate(cams):
        up = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
        peak = float(up.max())
        out[i] = up / peak if peak > 0 else up
    return out


class LiteRTGradCam:
    """Grad-CAM maps of a LiteRT classifier, one image at a time (an interpreter of its own)."""

    def __init__(self, model: str | Path, keras_h5: str | Path) -> None:
        self.head = read_head(keras_h5)
        with warnings.catch_warnings():  # LiteRT warns that kept tensors cost memory: one image's worth here
            warnings.simplefilter("ignore", UserWarning)
            self._interp = Interpreter(model_path=str(model), experimental_preserve_all_tensors=True)
        self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]
        self._conv = self._find_conv(Path(model))

    def _find_conv(self, model: Path) -> dict:
        width = self.head.w1.shape[0]
        candidates = [
            d
            for d in self._interp.get_tensor_details()
            if f"/{LAST_CONV}" in d["name"] and len(d["shape"]) == 4 and int(d["shape"][-1]) == width
        ]
        if not candidates:
            raise ValueError(f"{model}: no {LAST_CONV} activation of width {width}: not a pneumo MobileNetV2 file")
        return sorted(candidates, key=lambda d: d["dtype"] != np.float32)[0]  # the float tensor where there is one

    def _activations(self, rgb: np.ndarray) -> np.ndarray:
        x = np.asarray(rgb, np.float32)[None]
        if self._input["dtype"] != np.float32:
            scale, zero = self._input["quantization"]
            info = np.iinfo(self._input["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self._input["dtype"])
        self._interp.set_tensor(self._input["index"], x)
        self._interp.invoke()
        conv = self._interp.get_tensor(self._conv["index"])
        if conv.dtype != np.float32:
            scale, zero = self._conv["quantization"]
            conv = (conv.astype(np.float32) - zero) * scale
        return conv[0].astype(np.float64)

    def maps(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) pixels in [0, 255] -> (N, S, S) float32 Grad-CAM maps in [0, 1]."""
        cams = []
        for rgb in batch:
            conv = self._activations(rgb)  # (s, s, C)
            pooled = conv.mean(axis=(0, 1))
            weights = self.head.gradient(pooled[None])[0] / (conv.shape[0] * conv.shape[1])
            cams.append(np.maximum(conv @ weights, 0.0))
        return upsample(np.stack(cams), int(batch.shape[1])) if cams else np.zeros((0,) + batch.shape[1:3], np.float32)
