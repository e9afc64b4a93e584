"""predict: probabilities of PNEUMONIA for image files (JPEG, PNG, DICOM) with a Keras or LiteRT model.

The backend follows the model file's suffix: `.h5`/`.keras` load with Keras, `.tflite` runs on
`ai_edge_litert` (TensorFlow is then never imported). The threshold and the input size come
from the model card beside the model (`model_card.json`); `threshold` overrides the card, and
without a card the threshold is 0.5 (with a warning) and the size is the model's own.

Every file is read into the same uint8 luminance array that training saw (`load_image` for
JPEG/PNG; `pneumo.core.dicom` then the same resize for DICOM). A file that cannot be used (and a
FIFO, device or empty folder) yields `{"path", "error"}` and the others still run.

The card is checked before it is believed: a threshold outside (0, 1) would silently label
everything one way. A card that says `synthetic_data: true` puts its warning on every answer
(a `warning` field, a note on each table row, and on every heat map).
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pneumo.core.constants import IMAGE_SUFFIXES, LABELS
from pneumo.core.contract import FEATURES_OUTPUT, LOGIT_OUTPUT
from pneumo.core.decision import Answer, Policy, rejected_before_model
from pneumo.core.dicom import DICOM_SUFFIXES, header_gate, is_dicom, load_dicom
from pneumo.core.images import ImageError, load_image, to_rgb
from pneumo.core.io import sha256_file
from pneumo.core.ood import OodGate
from pneumo.core.overlay import save_overlay

log = logging.getLogger(__name__)

CARD_FILE = "model_card.json"
KERAS_SUFFIXES = (".h5", ".keras")
LITERT_SUFFIXES = (".tflite",)
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES
DEFAULT_THRESHOLD = 0.5
SYNTHETIC_WARNING = "Trained on SYNTHETIC demo images: not a medical model; this answer means nothing clinically."
ASSISTIVE_NOTE = "assistive only, not a diagnosis: a qualified clinician reads every image"


class HeatmapWriteError(OSError):
    """A heat map could not be written (full disk, permissions); the message names the file."""


class Backend(Protocol):
    input_size: int

    def scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...


class KerasBackend:
    """A .h5/.keras model (or one already loaded); also what Grad-CAM needs."""

    def __init__(self, path: Path, model: Any = None) -> None:
        from pneumo.nn.decision import decision_model  # inside: TensorFlow loads only for a Keras model
        from pneumo.nn.model import load  # inside: TensorFlow loads only for a Keras model

        self.path = path
        if model is None:
            try:
                model = load(path)
            except FileNotFoundError:
                raise
            except Exception as exc:  # h5py/Keras raise OSError, ValueError or bare Exception on a bad file
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ValueError(f"{path}: not a Keras model pneumo can load ({reason})") from None
        self.model = model
        self.input_size = int(self.model.input_shape[1])
        self._decision = decision_model(model)

    def scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(raw logits (N,), pooled features (N, D))."""
        out = self._decision.predict_on_batch(np.asarray(batch, np.float32))
        return np.asarray(out[LOGIT_OUTPUT]).reshape(len(batch), -1)[:, 0], np.asarray(out[FEATURES_OUTPUT])


def load_backend(path: str | Path, num_threads: int | None = None) -> Backend:
    """Keras or LiteRT, by the model file's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file missing (run `pneumo export`)")
    if suffix in KERAS_SUFFIXES:
        return KerasBackend(path)
    if suffix in LITERT_SUFFIXES:
        from pneumo.serving.litert import LiteRTModel  # inside: LiteRT loads only for a .tflite model

        return LiteRTModel(path, num_threads=num_threads)
    raise ValueError(
        f"{path}: model suffix {suffix or '(none)'} is not supported: expected "
        f"{', '.join(KERAS_SUFFIXES + LITERT_SUFFIXES)}"
    )


@dataclass(frozen=True)
class Contract:
    """What the model card says about how to call the model and how to answer."""

    input_size: int
    threshold: float
    card: Path | None
    warnings: list[str] = field(default_factory=list)
    synthetic_warning: str | None = None  # set when the card says the model never saw an X-ray
    policy: Policy | None = None  # None: the threshold alone (no card, or a card from before the gate)

    def answer_policy(self) -> Policy:
        """The policy answers follow, with the threshold actually used (a --threshold replaces the card's)."""
        if self.policy is None:
            return Policy(self.threshold)
        return Policy(self.threshold, self.policy.temperature, self.policy.refer, self.policy.gate)


def check_threshold(value: Any, where: str) -> float:
    """A finite probability strictly between 0 and 1, or ValueError naming `where`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 < value < 1
    if not ok:
        raise ValueError(f"{where} is {value!r}: expected a finite probability in (0, 1)")
    return float(value)


def _card_key(card: dict, dotted: str, card_path: Path) -> Any:
    node: Any = card
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(
                f"{card_path}: key {dotted!r} missing: not a pneumo model card (`pneumo export` writes one)"
            )
        node = node[part]
    return node


def check_card(card: Any, card_path: Path, model_path: Path, model_size: int) -> tuple[int, float, str | None]:
    """(input size, operating threshold, synthetic warning or None) from a card that passes every check."""
    if not isinstance(card, dict):
        raise ValueError(f"{card_path}: not a pneumo model card (a JSON object expected)")
    threshold = check_threshold(
        _card_key(card, "operating_threshold", card_path), f"{card_path}: key 'operating_threshold'"
    )
    shape = _card_key(card, "input.shape", card_path)
    size = shape[1] if isinstance(shape, list) and len(shape) == 4 else None
    if not (isinstance(size, int) and not isinstance(size, bool) and size > 0 and shape[2] == size and shape[3] == 3):
        raise ValueError(
            f"{card_path}: key 'input.shape' is {shape!r}: expected [null, S, S, 3] with S a positive integer"
        )
    if size != model_size:
        raise ValueError(
            f"{card_path}: key 'input.shape' says input size {size}, but {model_path} takes "
            f"{model_size}: the card belongs to another model"
        )
    labels = _card_key(card, "labels", card_path)
    if labels != list(LABELS):
        raise ValueError(f"{card_path}: key 'labels' is {labels!r}: expected {list(LABELS)!r} (index = class id)")
    synthetic = _card_key(card, "synthetic_data", card_path)
    if not isinstance(synthetic, bool):
        raise ValueError(f"{card_path}: key 'synthetic_data' is {synthetic!r}: expected true or false")
    warning = str(card.get("warning") or SYNTHETIC_WARNING) if synthetic else None
    return size, threshold, warning


def _positive(value: Any, where: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise ValueError(f"{where} is {value!r}: expected a finite number > 0")
    return float(value)


def read_policy(card: dict, card_path: Path) -> Policy | None:
    """The card's `decision` section as a Policy (its gate statistics read from beside the card and checked
    against their sha256); None for a card written before pneumo had a decision policy."""
    if "decision" not in card:
        return None
    if not isinstance(card["decision"], dict):
        raise ValueError(f"{card_path}: key 'decision' is not a mapping: not a pneumo model card")
    threshold = check_threshold(
        _card_key(card, "decision.threshold", card_path), f"{card_path}: key 'decision.threshold'"
    )
    temperature = _positive(
        _card_key(card, "decision.calibration.temperature", card_path),
        f"{card_path}: key 'decision.calibration.temperature'",
    )
    band = _card_key(card, "decision.refer_band", card_path)
    refer = None
    if band is not None:
        where = f"{card_path}: key 'decision.refer_band'"
        if not (isinstance(band, list) and len(band) == 2):
            raise ValueError(f"{where} is {band!r}: expected [low, high] or null")
        low, high = (_probability(v, where) for v in band)
        if low > high:
            raise ValueError(f"{where} is {band!r}: low above high")
        refer = (low, high)
    if _card_key(card, "decision.input_gate", card_path) is None:
        return Policy(threshold, temperature, refer, None)
    stats = card_path.parent / str(_card_key(card, "decision.input_gate.statistics", card_path))
    expected = _card_key(card, "decision.input_gate.sha256", card_path)
    gate = OodGate.load(stats)
    if sha256_file(stats) != expected:
        raise ValueError(f"{stats}: sha256 differs from the card's {card_path}: the statistics belong to another model")
    return Policy(threshold, temperature, refer, gate)


def _probability(value: Any, where: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1
    if not ok:
        raise ValueError(f"{where} holds {value!r}: expected probabilities in [0, 1]")
    return float(value)


def read_contract(
    model_path: Path, backend: Backend, threshold: float | None = None, card_path: Path | None = None
) -> Contract:
    """Input size and threshold from the card beside the model (or `card_path`), `threshold` first."""
    if threshold is not None:
        threshold = check_threshold(threshold, "--threshold")
    card_path = card_path or model_path.with_name(CARD_FILE)
    notes: list[str] = []
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{card_path}: not valid JSON ({exc})") from None
        size, card_threshold, warning = check_card(card, card_path, model_path, backend.input_size)
        policy = read_policy(card, card_path)
        if policy is None:
            notes.append(
                f"{card_path} has no decision policy (written before pneumo had an input gate): images are not "
                "checked, probabilities are not calibrated and nothing is referred; re-export the model"
            )
        elif getattr(backend, "has_features", True) is False:
            raise ValueError(
                f"{model_path} gives no pooled features, so the input gate of {card_path} cannot run: "
                "re-export the model (`pneumo export`)"
            )
        else:
            card_threshold = policy.threshold
        return Contract(size, card_threshold if threshold is None else threshold, card_path, notes, warning, policy)
    if threshold is None:
        notes.append(
            f"no model card at {card_path}: using threshold {DEFAULT_THRESHOLD} (not the "
            "operating threshold chosen on validation); pass --threshold to choose one"
        )
    notes.append(f"no model card at {card_path}: no input gate, no calibration, no refer band")
    return Contract(backend.input_size, DEFAULT_THRESHOLD if threshold is None else threshold, None, notes)


def collect(paths: Iterable[str | Path]) -> list[Path | dict[str, str]]:
    """Files as given (any suffix) and, under folders, every supported image, sorted.

    A folder with no supported image becomes an error entry `{"path", "error"}` in its place.
    """
    out: list[Path | dict[str, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES)
            out.extend(found)
            if not found:
                out.append(
                    {
                        "path": str(p),
                        "error": f"no images found in {p} (looked for "
                        f"{', '.join(SUPPORTED_SUFFIXES)}, in subfolders too)",
                    }
                )
        else:
            out.append(p)
    return out


def not_regular(path: Path) -> str | None:
    """Why `path` must not be opened (a FIFO would block the run forever), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # the reader says "no such file" in its own words
    if stat.S_ISREG(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or special file"
    return f"{path}: not a regular file ({kind}): skipped"


def heatmap_folder(path: Path) -> Path:
    """The --heatmap folder, created; refused before any model loads if it cannot be one."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--heatmap {path}: exists and is not a folder (give a folder for the PNG overlays)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--heatmap {path}: cannot create the folder ({exc.strerror or exc})") from None
    return path


def read_image(path: Path, size: int, max_pixels: int = 50_000_000) -> np.ndarray:
    """(size, size) uint8 luminance from a JPEG, PNG or DICOM file."""
    if is_dicom(path):
        return load_dicom(path, size, max_pixels)
    return load_image(path, size, max_pixels)


def _chunks(items: list[Path], n: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), n):
        yield items[start : start + n]


@dataclass
class Inputs:
    """One batch of inputs on their way to answers: pixels to score, or an answer/error already known."""

    images: list[np.ndarray] = field(default_factory=list)
    index: dict[int, int] = field(default_factory=dict)  # position in the chunk -> row in `images`
    notes: dict[int, list[str]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    early: dict[int, Answer] = field(default_factory=dict)  # refused by the DICOM header: the model never ran


def read_inputs(chunk: list[Path | dict[str, str]], size: int, max_pixels: int = 50_000_000) -> Inputs:
    """Read files (or carry `collect`'s error entries): DICOM headers gated first, pixels decoded and resized."""
    out = Inputs()
    for k, item in enumerate(chunk):
        if isinstance(item, dict):
            out.errors[k] = item["error"]
            continue
        try:
            problem = not_regular(item)
            if problem:
                out.errors[k] = problem
                continue
            notes: list[str] = []
            if is_dicom(item):
                refused, notes = header_gate(item)
                if refused:
                    out.early[k] = rejected_before_model(refused)
                    continue
            out.index[k] = len(out.images)
            out.images.append(read_image(item, size, max_pixels))
            out.notes[k] = notes
        except ImageError as exc:
            out.index.pop(k, None)
            out.errors[k] = str(exc)
        except Exception as exc:  # one odd file must not stop the others
            out.index.pop(k, None)
            out.errors[k] = f"{item}: unreadable ({type(exc).__name__}: {exc})"
    return out


def score_gray(backend: Backend, gray: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw logits (N,) and pooled features (N, D) (None if the model has none) of uint8 luminance images, batched."""
    logits, features = [], []
    for start in range(0, len(gray), batch_size):
        lo, fe = backend.scores(to_rgb(gray[start : start + batch_size]))
        logits.append(np.asarray(lo, np.float64))
        features.append(fe)
    if not logits:
        return np.zeros(0), None
    has = all(f is not None for f in features)
    return np.concatenate(logits), (np.concatenate(features) if has else None)


def answer_images(backend: Backend, policy: Policy, gray: np.ndarray, notes: list[list[str]]) -> list[Answer]:
    """Answers for (N, S, S) uint8 luminance images: the one decision path every caller shares."""
    if len(gray) == 0:
        return []
    logits, features = backend.scores(to_rgb(gray))
    return [
        policy.answer(float(logits[i]), None if features is None else features[i], notes[i]) for i in range(len(gray))
    ]


def predict_files(
    paths: Iterable[str | Path],
    model_path: str | Path,
    threshold: float | None = None,
    heatmap_dir: str | Path | None = None,
    card_path: str | Path | None = None,
    max_pixels: int = 50_000_000,
    batch_size: int = 16,
    num_threads: int | None = None,
) -> Iterator[dict[str, Any]]:
    """One result per file, in order: path, decision, probability, ood_score, reasons, threshold, model, notice
    (or path, error). A synthetic model's rows all carry `warning`."""
    model_path = Path(model_path)
    if heatmap_dir is not None:
        if model_path.suffix.lower() not in KERAS_SUFFIXES:
            raise ValueError(
                f"--heatmap needs a Keras model (.h5/.keras): Grad-CAM takes gradients, "
                f"which {model_path.name} cannot give"
            )
        heatmap_dir = heatmap_folder(Path(heatmap_dir))
    if threshold is not None:
        check_threshold(threshold, "--threshold")
    items = collect(paths)
    if not any(isinstance(item, Path) for item in items):
        yield from (item for item in items if isinstance(item, dict))  # nothing to ask the model
        return
    backend = load_backend(model_path, num_threads)
    contract = read_contract(model_path, backend, threshold, Path(card_path) if card_path else None)
    policy = contract.answer_policy()
    for note in contract.warnings:
        log.warning("predict: %s", note)
    if contract.synthetic_warning:
        log.warning("predict: %s: %s", contract.card, contract.synthetic_warning)
    extra = {"warning": contract.synthetic_warning} if contract.synthetic_warning else {}
    sub_model = None
    if heatmap_dir is not None:
        from pneumo.nn.gradcam import cam_model  # inside: heat maps need TensorFlow

        sub_model = cam_model(backend.model)  # type: ignore[attr-defined]
    counter = 0
    for chunk in _chunks(items, batch_size):
        read = read_inputs(chunk, contract.input_size, max_pixels)
        gray = np.stack(read.images) if read.images else np.zeros((0, contract.input_size, contract.input_size))
        order = sorted(read.index, key=read.index.__getitem__)
        answers = answer_images(backend, policy, gray, [read.notes[k] for k in order])
        heat = None
        if sub_model is not None and read.images:
            from pneumo.nn.gradcam import gradcam  # inside: heat maps need TensorFlow

            heat = gradcam(backend.model, to_rgb(gray), sub_model)  # type: ignore[attr-defined]
        for k, item in enumerate(chunk):
            counter += 1
            path = item["path"] if isinstance(item, dict) else str(item)
            if k in read.errors:
                yield {"path": path, "error": read.errors[k], **extra}
                continue
            answer = read.early[k] if k in read.early else answers[read.index[k]]
            result = {
                "path": path,
                **answer.as_dict(),
                "threshold": contract.threshold,
                "model": str(model_path),
                "notice": ASSISTIVE_NOTE,
                **extra,
            }
            if heat is not None and k in read.index:
                i = read.index[k]
                result["heatmap"] = str(
                    _save_heatmap(
                        heatmap_dir / f"{counter:04d}_{Path(path).stem}.png",  # type: ignore[operator]
                        read.images[i],
                        heat[i],
                        answer.decision,
                        answer.probability or 0.0,
                        contract,
                    )
                )
            yield result


def _save_heatmap(target: Path, gray: np.ndarray, heat: np.ndarray, label: str, p: float, contract: Contract) -> Path:
    try:
        return save_overlay(target, gray, heat, label, p, contract.threshold, contract.synthetic_warning)
    except OSError as exc:
        raise HeatmapWriteError(
            f"{target}: cannot write the heat map ({exc.strerror or exc}); nothing half-written was left"
        ) from None
