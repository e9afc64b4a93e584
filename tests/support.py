"""Constants and helpers the tests share (imported by name; conftest modules are not importable)."""

from __future__ import annotations

import copy
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pneumo.core.proc import FORCED_ENV, child_env, quiet_environ

if TYPE_CHECKING:
    import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_DATA = SHARED / "data" / "chest_xray"
SHARED_WEIGHTS = SHARED / "weights"

quiet_environ()  # the tests are an entry point too: no telemetry from anything they start

needs_real_data = pytest.mark.skipif(
    not (REAL_DATA / "train").is_dir(),
    reason=f"real chest X-rays not found at {REAL_DATA} (CI has them; see README)",
)


def env_without_prefect(**extra: str) -> dict[str, str]:
    """A child's environment (pneumo.core.proc.child_env) without this shell's PREFECT_ settings, so a
    test's own Prefect home or server is the only one it sees; telemetry stays off; then `extra`."""
    env = {k: v for k, v in child_env().items() if not k.startswith("PREFECT_") or k in FORCED_ENV}
    return {**env, **extra}


def write_params(path: Path, **overrides) -> Path:
    """A complete params file: the repository's params.yaml with `section__key=value` overrides."""
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        assert leaf in node, f"{dotted}: not a key of params.yaml"
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# Params for fast tests: 96 px images, one short epoch per phase. The session's `trained` fixture uses them
# (through tiny_params); the workspace tests start from a deep copy and state their differences.
TINY_PARAMS: dict[str, Any] = {
    "data": {"image_size": 96},
    "prepare": {"val_fraction": 0.2},
    "train": {"batch_size": 16, "patience": 0, "frozen": {"epochs": 1}, "finetune": {"epochs": 1, "layers": 10}},
    "evaluate": {"bootstrap": 50},
    # A dozen validation images: one swapped pair moves the AUC by ~0.03. One epoch leaves a model whose
    # int8 decisions agree with Keras' only loosely; two float layers exercise the selective path.
    "export": {
        "calibration_images": 40,
        "litert_auc_tolerance": 0.1,
        "min_decision_agreement": 0.5,
        "float_layers": 2,
    },
    "report": {"gradcam_per_group": 2},
}


def tiny_params(**overrides):
    """TINY_PARAMS as Params, with `section__key=value` overrides (missing sections are made)."""
    from pneumo.core.config import params_from_dict

    raw = copy.deepcopy(TINY_PARAMS)
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return params_from_dict(raw)


# pydicom takes a third of a second to import and every test imports this module: the DICOM helper
# imports it when called, so its defaults are the UIDs' strings.
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"  # pydicom.uid.ExplicitVRLittleEndian
DIGITAL_XRAY_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # pydicom.uid.DigitalXRayImageStorageForPresentation


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits: int = 8,
    syntax: str = EXPLICIT_VR_LITTLE_ENDIAN,
    encapsulated: bytes | None = None,
    sop_class: str = DIGITAL_XRAY_IMAGE_STORAGE,
    **elements: Any,
) -> Path:
    """A single-frame grayscale DICOM file of `pixels` (stored values, `bits` of them in 8 or 16 allocated),
    no patient data. `elements` are set by DICOM keyword after the image's own (so `Rows=60000` lies about
    the size); one given as None is left out. Modality is "DX" unless given. With `encapsulated`, the pixel
    data is that one compressed fragment instead (for a compressed `syntax`)."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (8 if bits == 8 else 16), bits, bits - 1, 0
    for keyword, value in {"Modality": "DX", **elements}.items():
        if value is not None:
            setattr(ds, keyword, value)
        elif keyword in ds:
            delattr(ds, keyword)
    if encapsulated is not None:
        ds.PixelData = encapsulate([encapsulated])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = np.ascontiguousarray(pixels, np.uint8 if bits == 8 else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height but holds no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )
    return path
