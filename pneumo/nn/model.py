"""The network: MobileNetV2 feature extractor + the notebook's head, preprocessing inside.

The saved model takes raw RGB pixels in [0, 255] at the configured size. The head is built on
the base's output with the functional API, so MobileNetV2's inner layers (`out_relu` for
Grad-CAM) stay reachable, and the logit is a layer of its own with the sigmoid after it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path

import keras
from keras.src.applications import mobilenet_v2

from pneumo.core.io import sha256_file

log = logging.getLogger(__name__)

IMAGENET_NO_TOP = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
IMAGENET_NO_TOP_SHA256 = "87357b52b6896a665ba90b76905db2a02da721efb38f5332bae4f1037cbb9676"
PACKAGED_WEIGHTS = Path(__file__).parents[1] / "assets" / IMAGENET_NO_TOP  # pneumo/assets/
LAST_CONV = "out_relu"
LOGIT = "logit"


class WeightsUnavailable(RuntimeError):
    """The ImageNet weights are neither in the Keras cache nor downloadable."""


def keras_cache_file() -> Path:
    """Where Keras keeps the weights; KERAS_HOME is read now, so a cache set up later counts."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return home / "models" / IMAGENET_NO_TOP


def packaged_weights_file() -> Path | None:
    """The copy shipped inside pneumo (Apache-2.0; see assets/README.md), if intact."""
    path = PACKAGED_WEIGHTS
    if not path.is_file():
        return None
    if sha256_file(path) != IMAGENET_NO_TOP_SHA256:
        log.warning("model: %s does not match its sha256; ignoring it", path)
        return None
    return path


def imagenet_weights_file() -> Path:
    """The no-top ImageNet weights: the Keras cache, else pneumo's own copy, else a download.

    The shipped copy makes the embedded default work offline on a fresh machine.
    """
    target = keras_cache_file()
    if target.is_file():
        return target
    packaged = packaged_weights_file()
    if packaged is not None:
        return packaged
    try:
        return Path(
            keras.utils.get_file(
                IMAGENET_NO_TOP,
                mobilenet_v2.BASE_WEIGHT_PATH + IMAGENET_NO_TOP,
                cache_dir=str(target.parents[1]),
                cache_subdir="models",
            )
        )
    except Exception as exc:  # Keras raises a bare Exception when the download fails
        raise WeightsUnavailable(
            f"ImageNet weights for MobileNetV2 are not in {target} and could not be downloaded "
            f"({exc}). Copy {IMAGENET_NO_TOP} there (tests and CI take it from ../shared/weights), "
            "or set train.weights to a weights file or 'none'."
        ) from exc


def _pretrained_base(weights: str) -> keras.Model:
    """MobileNetV2 at 224 with `weights` loaded (the weights fit any input size)."""
    path = imagenet_weights_file() if weights == "imagenet" else Path(weights)
    try:
        return keras.applications.MobileNetV2(
            input_shape=(224, 224, 3), include_top=False, weights=str(path), alpha=1.0
        )
    except Exception as exc:
        raise ValueError(f"train.weights: cannot load MobileNetV2 no-top weights from {path} ({exc})") from exc


def build_model(
    image_size: int, weights: str = "imagenet", dense_units: int = 128, dropout: float = 0.2
) -> keras.Model:
    """Build the classifier; `weights` is 'imagenet', 'none' or a path to a no-top .h5 file."""
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    # MobileNetV2's own preprocessing ([-1, 1]) as a layer, so the saved model takes raw pixels.
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
    base = keras.applications.MobileNetV2(input_tensor=x, include_top=False, weights=None, alpha=1.0)
    if weights != "none":
        source = _pretrained_base(weights)
        for layer in source.layers:
            if layer.weights:
                base.get_layer(layer.name).set_weights(layer.get_weights())
    features = keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    features = keras.layers.Dropout(dropout, name="dropout")(features)
    hidden = keras.layers.Dense(dense_units, activation="relu", name="dense")(features)
    logit = keras.layers.Dense(1, name=LOGIT, dtype="float32")(hidden)
    prob = keras.layers.Activation("sigmoid", name="probability", dtype="float32")(logit)
    model = keras.Model(inputs, prob, name="pneumo_mobilenetv2")
    return model


def base_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """MobileNetV2's layers inside `model`, input to `out_relu`, in order."""
    names = [layer.name for layer in model.layers]
    end = names.index(LAST_CONV)
    start = names.index("preprocess") + 1
    return model.layers[start : end + 1]


def set_trainable_top(model: keras.Model, n_layers: int | None, train_batchnorm: bool = False) -> int:
    """Freeze the base except its top `n_layers` (None: all).

    BatchNorm stays frozen (in inference mode) unless `train_batchnorm`: pretrained statistics
    must not drift on small batches, but a randomly initialised base needs them to learn.

    Returns how many base layers with weights are now trainable.
    """
    layers = base_layers(model)
    cut = 0 if n_layers is None else max(0, len(layers) - n_layers)
    trainable = 0
    for i, layer in enumerate(layers):
        on = i >= cut and (train_batchnorm or not isinstance(layer, keras.layers.BatchNormalization))
        layer.trainable = on
        trainable += int(on and bool(layer.weights))
    return trainable


def load(path: str | Path) -> keras.Model:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file missing (run `pneumo train` / `pneumo export`)")
    return keras.models.load_model(path, compile=False)


def framework_versions() -> dict[str, str]:
    """The versions a model card records: TensorFlow and Keras. TensorFlow's is read from its
    installed metadata, not imported: this module runs under any Keras backend (the accelerator
    benchmark builds the network with JAX where TensorFlow is absent)."""
    try:
        tensorflow = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        tensorflow = "not installed"
    return {"tensorflow": tensorflow, "keras": keras.__version__}
