"""What `pneumo serve` does, without HTTP: load the model once, warm it, and answer uploaded files with
the same decision path as `pneumo predict` (`pneumo.serving.predict.read_inputs` and `answer_images`).

An upload is checked before the model sees it: its type is sniffed from its bytes (JPEG, PNG, DICOM
Part 10; anything else is `UnsupportedType`), then it is read exactly as a file given to `pneumo predict`
is (a DICOM header is gated first; an image whose declared size exceeds `max_pixels`, a decompression
bomb, is refused before decoding). A file that cannot be read is `UnreadableUpload`, naming it. The
model is not thread-safe: each of a worker's `slots` holds its own LiteRT interpreter, taken from a queue for
one answer at a time (LiteRT releases the GIL, so slots run in parallel; run them off the event loop).
Logs carry counts and timings, never patient data: no DICOM tags, and file names only when
`log_filenames` is set.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import re
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from pneumo.core.images import to_rgb
from pneumo.core.io import sha256_file
from pneumo.core.overlay import overlay_png
from pneumo.serving.packaged import keras_beside, packaged_dir, packaged_model
from pneumo.serving.predict import (
    ASSISTIVE_NOTE,
    KERAS_SUFFIXES,
    answer_images,
    load_backend,
    read_contract,
    read_inputs,
)

log = logging.getLogger("pneumo.serve")

CONFIG_ENV = "PNEUMO_SERVE_CONFIG"  # how `pneumo serve` hands its checked settings to uvicorn's workers
API_KEY_ENV = "PNEUMO_API_KEY"
MAGIC = {"jpeg": (0, b"\xff\xd8\xff"), "png": (0, b"\x89PNG\r\n\x1a\n"), "dicom": (128, b"DICM")}
SUFFIX = {"jpeg": ".jpeg", "png": ".png", "dicom": ".dcm"}
MAX_NAME = 255
# Uploads are read through files (predict's own reader): in memory where Linux offers it, so an image
# never reaches a disk, and a request saves the disk round trip.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class UploadError(ValueError):
    """A request the service refuses; `status` is the HTTP status that says why."""

    status = 400


class UnsupportedType(UploadError):
    status = 415


class UnreadableUpload(UploadError):
    status = 422


class TooManyFiles(UploadError):
    status = 413


@dataclass(frozen=True)
class ServeConfig:
    """The service's settings, checked once (`check`) where they enter: the command line."""

    model: str | None = None  # None: the model shipped in the package
    card: str | None = None  # None: model_card.json beside the model
    threads: int = 1  # LiteRT threads per interpreter
    slots: int | None = None  # answers computed at once per worker (a LiteRT interpreter each); None: one per CPU
    max_upload_bytes: int = 20 * 1024 * 1024
    max_files: int = 16
    max_pixels: int = 50_000_000
    cors_origins: tuple[str, ...] = ()
    log_filenames: bool = False

    def check(self) -> ServeConfig:
        """A copy with the model resolved to an absolute path, or ValueError/FileNotFoundError saying what is wrong."""
        for name in ("max_upload_bytes", "max_files", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} is {getattr(self, name)}: expected a positive number")
        for name in ("threads", "slots"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)}: expected a positive number")
        model = Path(self.model) if self.model else packaged_model()
        if not model.is_file():
            raise FileNotFoundError(f"{model}: model file missing")
        card = Path(self.card) if self.card else None
        if card is not None and not card.is_file():
            raise FileNotFoundError(f"{card}: model card missing")
        return ServeConfig(**{**asdict(self), "model": str(model.resolve()), "card": card and str(card.resolve())})

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServeConfig:
        raw = (environ if environ is not None else os.environ).get(CONFIG_ENV)
        if not raw:
            return cls().check()
        data = json.loads(raw)
        return cls(**{**data, "cors_origins": tuple(data.get("cors_origins", ()))})


def sniff(data: bytes) -> str | None:
    """'jpeg', 'png' or 'dicom' from the file's own bytes (never its name), else None."""
    for kind, (offset, magic) in MAGIC.items():
        if data[offset : offset + len(magic)] == magic:
            return kind
    return None


def display_name(name: str | None, index: int) -> str:
    """The uploaded file's base name (no client folders), printable and bounded; `upload-<n>` without one."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:MAX_NAME]
    return base or f"upload-{index + 1}"


@dataclass
class Upload:
    name: str
    data: bytes


@dataclass
class Service:
    """One loaded model answering uploads; `state` is loading, ready or failed (with `error`)."""

    config: ServeConfig
    state: str = "loading"
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    _slots: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    _heat_lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self) -> None:
        """Load the model, its card and policy, then warm them with one answer; never raises (see `state`)."""
        try:
            self._load()
            self.state = "ready"
            log.info("ready: %s (%s backend)", self.info["file"], self.info["backend"])
        except Exception as exc:  # the service stays up to say why on /readyz
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.error)

    def _load(self) -> None:
        # One BLAS thread: parallelism comes from the slots and the workers, and OpenBLAS' idle threads spin;
        # with two they doubled the CPU time of an answer (the gate's matrix product) and gained no speed.
        threadpool_limits(limits=1, user_api="blas")
        model = Path(self.config.model or packaged_model())
        self.backend = load_backend(model, self.config.threads)
        keras = model.suffix.lower() in KERAS_SUFFIXES  # one Keras model per worker: TensorFlow threads it itself
        slots = 1 if keras else self.config.slots or os.cpu_count() or 1
        backends = [self.backend] + [load_backend(model, self.config.threads) for _ in range(slots - 1)]
        self.contract = read_contract(model, self.backend, None, Path(self.config.card) if self.config.card else None)
        for note in self.contract.warnings:
            log.warning("%s", note)
        self.policy = self.contract.answer_policy()
        self.heat = self._heatmapper(model)
        card = json.loads(self.contract.card.read_text()) if self.contract.card else None
        size = self.contract.input_size
        self.info = {
            "file": model.name,
            "sha256": sha256_file(model),
            "backend": "keras" if keras else "litert",
            "packaged": model.parent.resolve() == packaged_dir().resolve(),
            "heatmap": self.heat is not None,
            "threshold": self.contract.threshold,
            "card": card,
            "notice": ASSISTIVE_NOTE,
        }
        warm = np.full((1, size, size), 128, np.uint8)
        for backend in backends:  # LiteRT releases the GIL: each slot answers in parallel with the others
            answer_images(backend, self.policy, warm, [[]])
            self._slots.put(backend)
        self.info["slots"] = slots
        if self.heat is not None:
            self.heat(warm)

    def _heatmapper(self, model: Path):
        """A function (N, S, S) uint8 -> (N, S, S) maps in [0, 1], or None when the model cannot give them."""
        if model.suffix.lower() in KERAS_SUFFIXES:
            from pneumo.nn.gradcam import cam_model, gradcam  # inside: TensorFlow only for a Keras model

            sub = cam_model(self.backend.model)  # type: ignore[attr-defined]
            return lambda gray: gradcam(self.backend.model, to_rgb(gray), sub)  # type: ignore[attr-defined]
        h5 = keras_beside(model)
        if h5 is None:
            log.warning("no %s beside %s: heat maps are off", "model.h5", model.name)
            return None
        from pneumo.serving.heatmap import LiteRTGradCam

        cam = LiteRTGradCam(model, h5)
        return lambda gray: cam.maps(to_rgb(gray))

    def describe(self) -> dict[str, Any]:
        """What GET /v1/model says: the file, its sha256, the backend and the card."""
        return self.info

    def predict(self, uploads: list[Upload], heatmap: bool = False) -> list[dict[str, Any]]:
        """One result per upload, the same fields as `pneumo predict --json` (+ `heatmap`, a PNG data URL)."""
        if not uploads:
            raise UploadError("no files: send one or more JPEG, PNG or DICOM files in the multipart field 'files'")
        if len(uploads) > self.config.max_files:
            raise TooManyFiles(f"{len(uploads)} files in one request: at most {self.config.max_files} (--max-files)")
        names = [display_name(u.name, i) for i, u in enumerate(uploads)]
        kinds = [sniff(u.data) for u in uploads]
        bad = [n for n, k in zip(names, kinds, strict=True) if k is None]
        if bad:
            raise UnsupportedType(
                f"{', '.join(bad)}: not a JPEG, PNG or DICOM file (read from its bytes; a DICOM file needs its "
                "128-byte preamble and 'DICM')"
            )
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="pneumo-serve-", dir=SCRATCH) as tmp:
            files = [Path(tmp) / f"{i:04d}{SUFFIX[k]}" for i, k in enumerate(kinds)]  # type: ignore[index]
            for path, upload in zip(files, uploads, strict=True):
                path.write_bytes(upload.data)
            read = read_inputs(list(files), self.contract.input_size, self.config.max_pixels)
            if read.errors:
                raise UnreadableUpload(
                    "; ".join(
                        read.errors[k].replace(str(files[k]), names[k]).replace(tmp, "") for k in sorted(read.errors)
                    )
                )
        results = self._answer(read, names, heatmap)
        self._log(results, names, time.perf_counter() - start)
        return results

    def _answer(self, read, names: list[str], heatmap: bool) -> list[dict[str, Any]]:
        size = self.contract.input_size
        gray = np.stack(read.images) if read.images else np.zeros((0, size, size), np.uint8)
        order = sorted(read.index, key=read.index.__getitem__)
        backend = self._slots.get()  # waits while every slot is busy (interpreters are not thread-safe)
        try:
            answers = answer_images(backend, self.policy, gray, [read.notes[k] for k in order])
        finally:
            self._slots.put(backend)
        maps = None
        if heatmap and self.heat is not None and len(gray):
            with self._heat_lock:
                maps = self.heat(gray)
        extra = {"warning": self.contract.synthetic_warning} if self.contract.synthetic_warning else {}
        results = []
        for k, name in enumerate(names):
            answer = read.early[k] if k in read.early else answers[read.index[k]]
            result = {
                "path": name,
                **answer.as_dict(),
                "threshold": self.contract.threshold,
                "model": self.info["file"],
                "notice": ASSISTIVE_NOTE,
                **extra,
            }
            if maps is not None and k in read.index:
                i = read.index[k]
                png = overlay_png(
                    read.images[i],
                    maps[i],
                    answer.decision,
                    answer.probability or 0.0,
                    self.contract.threshold,
                    self.contract.synthetic_warning,
                )
                result["heatmap"] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            results.append(result)
        return results

    def _log(self, results: list[dict[str, Any]], names: list[str], seconds: float) -> None:
        counts = Counter(r["decision"] for r in results)
        named = f" files {names}" if self.config.log_filenames else ""
        log.info("predict: %d file(s) %s in %.1f ms%s", len(results), dict(counts), seconds * 1e3, named)
