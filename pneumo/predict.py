"""predict: probabilities of PNEUMONIA for image files (JPEG, PNG, DICOM) with a Keras or LiteRT model.

The backend follows the model file's suffix: `.h5`/`.keras` load with Keras, `.tflite` runs on
`ai_edge_litert` (TensorFlow is then never imported). The threshold and the input size come
from the model card beside the model (`model_card.json`); `threshold` overrides the card, and
without a card the threshold is 0.5 (with a warning) and the size is the model's own.

Every file is read into the same uint8 luminance array that training saw (`load_image` for
JPEG/PNG; `pneumo.dicom` then the same resize for DICOM). A file that cannot be used yields
`{"path", "error"}` and the others still run.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
import typer

from pneumo import IMAGE_SUFFIXES, LABELS
from pneumo.dicom import DICOM_SUFFIXES, is_dicom, load_dicom
from pneumo.images import ImageError, load_image

log = logging.getLogger(__name__)

CARD_FILE = "model_card.json"
KERAS_SUFFIXES = (".h5", ".keras")
LITERT_SUFFIXES = (".tflite",)
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES
DEFAULT_THRESHOLD = 0.5


class Backend(Protocol):
    input_size: int

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


class KerasBackend:
    """A .h5/.keras model; also what Grad-CAM needs."""

    def __init__(self, path: Path) -> None:
        from pneumo.model import load

        self.path = path
        self.model = load(path)
        self.input_size = int(self.model.input_shape[1])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(np.asarray(batch, np.float32))).reshape(len(batch), -1)[:, 0]


def load_backend(path: str | Path, num_threads: int | None = None) -> Backend:
    """Keras or LiteRT, by the model file's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file missing (run `pneumo export`)")
    if suffix in KERAS_SUFFIXES:
        return KerasBackend(path)
    if suffix in LITERT_SUFFIXES:
        from pneumo.litert import LiteRTModel

        return LiteRTModel(path, num_threads=num_threads)
    raise ValueError(f"{path}: model suffix {suffix or '(none)'} is not supported: expected "
                     f"{', '.join(KERAS_SUFFIXES + LITERT_SUFFIXES)}")


@dataclass(frozen=True)
class Contract:
    """What the model card says about how to call the model."""

    input_size: int
    threshold: float
    card: Path | None
    warnings: list[str] = field(default_factory=list)


def read_contract(model_path: Path, backend: Backend, threshold: float | None = None,
                  card_path: Path | None = None) -> Contract:
    """Input size and threshold from the card beside the model (or `card_path`), `threshold` first."""
    card_path = card_path or model_path.with_name(CARD_FILE)
    notes: list[str] = []
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text())
            size = int(card["input"]["shape"][1])
            card_threshold = float(card["operating_threshold"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"{card_path}: not a pneumo model card (needs input.shape and "
                             f"operating_threshold): {exc}") from None
        if size != backend.input_size:
            raise ValueError(f"{card_path}: input size {size} does not match {model_path} "
                             f"({backend.input_size}): the card belongs to another model")
        return Contract(size, card_threshold if threshold is None else threshold, card_path, notes)
    if threshold is None:
        notes.append(f"no model card at {card_path}: using threshold {DEFAULT_THRESHOLD} (not the "
                     "operating threshold chosen on validation); pass --threshold to choose one")
    return Contract(backend.input_size, DEFAULT_THRESHOLD if threshold is None else threshold, None, notes)


def collect(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given (any suffix) and, under folders, every supported image, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES))
        else:
            out.append(p)
    return out


def read_image(path: Path, size: int, max_pixels: int = 50_000_000) -> np.ndarray:
    """(size, size) uint8 luminance from a JPEG, PNG or DICOM file."""
    if is_dicom(path):
        return load_dicom(path, size, max_pixels)
    return load_image(path, size, max_pixels)


def _chunks(items: list[Path], n: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), n):
        yield items[start:start + n]


def predict_files(paths: Iterable[str | Path], model_path: str | Path, threshold: float | None = None,
                  heatmap_dir: str | Path | None = None, card_path: str | Path | None = None,
                  max_pixels: int = 50_000_000, batch_size: int = 16,
                  num_threads: int | None = None) -> Iterator[dict[str, Any]]:
    """One result dict per file, in order: path, probability, label, threshold, model (or path, error)."""
    from pneumo.images import to_rgb

    model_path = Path(model_path)
    if heatmap_dir is not None and model_path.suffix.lower() not in KERAS_SUFFIXES:
        raise ValueError(f"--heatmap needs a Keras model (.h5/.keras): Grad-CAM takes gradients, "
                         f"which {model_path.name} cannot give")
    backend = load_backend(model_path, num_threads)
    contract = read_contract(model_path, backend, threshold, Path(card_path) if card_path else None)
    for note in contract.warnings:
        log.warning("predict: %s", note)
    sub_model = None
    if heatmap_dir is not None:
        from pneumo.gradcam import cam_model

        heatmap_dir = Path(heatmap_dir)
        heatmap_dir.mkdir(parents=True, exist_ok=True)
        sub_model = cam_model(backend.model)  # type: ignore[attr-defined]
    counter = 0
    for chunk in _chunks(collect(paths), batch_size):
        images, ok, errors = [], [], {}
        for path in chunk:
            try:
                images.append(read_image(path, contract.input_size, max_pixels))
                ok.append(path)
            except ImageError as exc:
                errors[path] = str(exc)
            except Exception as exc:  # one odd file must not stop the others
                errors[path] = f"{path}: unreadable ({type(exc).__name__}: {exc})"
        probs = backend.predict(to_rgb(np.stack(images))) if images else np.zeros(0)
        heat = None
        if sub_model is not None and images:
            from pneumo.gradcam import gradcam

            heat = gradcam(backend.model, to_rgb(np.stack(images)), sub_model)  # type: ignore[attr-defined]
        by_path = {p: i for i, p in enumerate(ok)}
        for path in chunk:
            counter += 1
            if path in errors:
                yield {"path": str(path), "error": errors[path]}
                continue
            i = by_path[path]
            p = float(probs[i])
            result = {"path": str(path), "probability": p, "label": LABELS[int(p >= contract.threshold)],
                      "threshold": contract.threshold, "model": str(model_path)}
            if heat is not None:
                from pneumo.gradcam import save_overlay

                result["heatmap"] = str(save_overlay(heatmap_dir / f"{counter:04d}_{path.stem}.png",  # type: ignore[operator]
                                                     images[i], heat[i]))
            yield result


def _table_row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{'ERROR':<10} {'':>11}  {r['error']}"
    return f"{r['label']:<10} {r['probability']:>11.4f}  {r['path']}"


def predict_command(
    paths: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, DICOM) or folders (searched recursively).")],
    model: Annotated[Path, typer.Option(help="Model file: .h5/.keras (Keras) or .tflite (LiteRT).")] = Path("models/model.h5"),
    threshold: Annotated[float | None, typer.Option(help="Decision threshold; default: the model card's operating threshold.")] = None,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
    heatmap: Annotated[Path | None, typer.Option(help="Write Grad-CAM overlays (PNG) into this folder (Keras models only).")] = None,
    card: Annotated[Path | None, typer.Option(help="Model card to read; default: model_card.json beside the model.")] = None,
    max_pixels: Annotated[int, typer.Option(help="Refuse images whose declared size exceeds this many pixels.")] = 50_000_000,
    threads: Annotated[int | None, typer.Option(help="LiteRT interpreter threads (default: LiteRT's choice).")] = None,
) -> None:
    """Probability of PNEUMONIA for each image; exit status 1 if any file could not be read."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        typer.echo(f"error: --threshold {threshold} is not a probability in [0, 1]", err=True)
        raise typer.Exit(2)
    failed, used = 0, None
    try:
        for i, r in enumerate(predict_files(paths, model, threshold, heatmap, card, max_pixels, num_threads=threads)):
            if i == 0 and not json_lines:
                typer.echo(f"{'label':<10} {'probability':>11}  path")
            failed += "error" in r
            used = r.get("threshold", used)
            typer.echo(json.dumps(r) if json_lines else _table_row(r))
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not json_lines and used is not None:
        typer.echo(f"(PNEUMONIA when probability >= {used:.4f}; model {model})")
    if failed:
        typer.echo(f"{failed} file(s) could not be read", err=True)
        raise typer.Exit(1)
