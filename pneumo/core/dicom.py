"""Reading a DICOM chest X-ray into the same uint8 luminance array as `pneumo.core.images.load_image`.

The stored values go through the Modality LUT (RescaleSlope/Intercept or a Modality LUT
Sequence) and the VOI LUT (WindowCenter/Width or a VOI LUT Sequence) with pydicom's own
functions; MONOCHROME1 (low values bright) is inverted so that bone is bright, as in JPEGs.
The result is mapped to [0, 255]: the VOI output range when a window or VOI LUT is present,
the stored values as they are for 8-bit data with an identity Modality LUT (like an 8-bit
PNG), else the image's own min-max (like a 16-bit PNG in `load_image`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pneumo.core.images import ImageError, require_nonempty, resize_square

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
# The metadata gate (`header_gate`): what a frontal chest radiograph's header may say.
RADIOGRAPH_MODALITIES: tuple[str, ...] = ("CR", "DX", "DR")  # DR is not a DICOM term, but devices write it
CHEST_BODY_PARTS: tuple[str, ...] = ("CHEST", "THORAX")  # empty is allowed: many devices leave it blank
LATERAL_VIEWS: tuple[str, ...] = ("LL", "RL", "LAT", "LATERAL", "LEFT LATERAL", "RIGHT LATERAL")
FRONTAL_VIEWS: tuple[str, ...] = ("AP", "PA")


def is_dicom(path: str | Path) -> bool:
    """By suffix, or by the 'DICM' magic after the 128-byte preamble."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _syntax(ds) -> tuple[str, str]:
    uid = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) is not None else None
    return (str(uid), getattr(uid, "name", str(uid))) if uid else ("unknown", "unknown")


def _to_uint8(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round(np.clip((arr - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def _text(value: object) -> str:
    return str(value or "").strip().upper()


def read_header(path: Path):
    """The file's DICOM header without its pixels; ImageError naming the file when pydicom cannot read it."""
    import pydicom  # inside: pydicom loads only when a DICOM file is read
    from pydicom.errors import InvalidDicomError

    require_nonempty(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise ImageError(f"{path}: not a DICOM file pydicom can read ({exc})") from None


def header_gate(path: str | Path) -> tuple[list[str], list[str]]:
    """(why the header refuses the file, what it says about an accepted one), from the header alone.

    Refused: a Modality other than CR, DX (or DR); a BodyPartExamined naming another body part
    than the chest (an empty one passes); a lateral ViewPosition or ViewCodeSequence. An AP or PA
    view is accepted and reported.
    """
    path = Path(path)
    header = read_header(path)
    refused, notes = [], []
    modality = _text(header.get("Modality"))
    if modality and modality not in RADIOGRAPH_MODALITIES:
        refused.append(f"DICOM Modality is {modality}: not a radiograph ({', '.join(RADIOGRAPH_MODALITIES)} expected)")
    body_part = _text(header.get("BodyPartExamined"))
    if body_part and body_part not in CHEST_BODY_PARTS:
        refused.append(f"DICOM BodyPartExamined is {body_part}: not the chest")
    view = _text(header.get("ViewPosition"))
    meanings = [_text(item.get("CodeMeaning")) for item in header.get("ViewCodeSequence", []) or []]
    lateral_code = any("LATERAL" in m and "DECUBITUS" not in m for m in meanings)
    if view in LATERAL_VIEWS or lateral_code:
        where = f"ViewPosition {view}" if view in LATERAL_VIEWS else "ViewCodeSequence"
        refused.append(f"lateral view (DICOM {where})")
    elif view in FRONTAL_VIEWS:
        notes.append(f"DICOM view {view}")
    return refused, notes


def dicom_luminance(path: str | Path, max_pixels: int = 50_000_000) -> np.ndarray:
    """The first frame of a monochrome DICOM file as (rows, cols) uint8 luminance."""
    import pydicom  # inside: pydicom loads only when a DICOM file is read
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    header = read_header(path)
    rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    if rows <= 0 or cols <= 0:
        raise ImageError(f"{path}: DICOM without image dimensions (Rows/Columns): not an image")
    if rows * cols * frames > max_pixels:
        raise ImageError(
            f"{path}: declared size {cols}x{rows}"
            + (f"x{frames} frames" if frames > 1 else "")
            + f" exceeds the limit of {max_pixels} pixels (prepare.max_image_pixels)"
        )
    photometric = str(header.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(
            f"{path}: DICOM PhotometricInterpretation {photometric or 'missing'} is not "
            "supported (MONOCHROME1 or MONOCHROME2 expected for an X-ray)"
        )
    uid, name = _syntax(header)
    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[:2])
        raise ImageError(
            f"{path}: cannot decode DICOM pixel data compressed with transfer syntax {name} "
            f"({uid}): {detail}. If the file is intact, install a pydicom decoder plugin "
            "(pylibjpeg, GDCM) or convert it to an uncompressed transfer syntax"
        ) from None
    except (ValueError, EOFError, OSError, AttributeError, KeyError, TypeError) as exc:
        raise ImageError(
            f"{path}: corrupt DICOM pixel data in transfer syntax {name} ({uid}) ({str(exc).splitlines()[0]})"
        ) from None
    if frames > 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ImageError(f"{path}: DICOM pixel array of shape {arr.shape} is not a single grayscale frame")
    values = apply_modality_lut(arr, ds)
    has_voi = "WindowCenter" in ds or "WindowWidth" in ds or "VOILUTSequence" in ds
    if has_voi:
        values = apply_voi_lut(values, ds)
        # The VOI output range: its value at both ends of the input axis.
        ends = apply_voi_lut(np.array([-1e15, 1e15], np.float64), ds)
        lo, hi = float(np.min(ends)), float(np.max(ends))
    else:
        identity = (
            float(ds.get("RescaleSlope", 1) or 1) == 1
            and float(ds.get("RescaleIntercept", 0) or 0) == 0
            and "ModalityLUTSequence" not in ds
        )
        if int(ds.get("BitsStored", 8)) <= 8 and identity and int(ds.get("PixelRepresentation", 0)) == 0:
            lo, hi = 0.0, 255.0
        else:
            lo, hi = float(np.min(values)), float(np.max(values))
    gray = _to_uint8(np.asarray(values, np.float64), lo, hi)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return gray


def load_dicom(path: str | Path, size: int, max_pixels: int = 50_000_000) -> np.ndarray:
    """A DICOM file as a (size, size) uint8 luminance array, resized as `load_image` resizes."""
    return resize_square(dicom_luminance(path, max_pixels), size)
