"""predict: every supported format reaches the model as training pixels; bad files fail alone."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pydicom = pytest.importorskip("pydicom")
pytest.importorskip("ai_edge_litert")

import typer  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from pneumo.dicom import dicom_luminance  # noqa: E402
from pneumo.images import ImageError, load_image, to_rgb  # noqa: E402
from pneumo.litert import INT8_FILE  # noqa: E402
from pneumo.predict import predict_command, predict_files  # noqa: E402
from pneumo.prepare import load_split  # noqa: E402
from test_litert import litert_export  # noqa: E402

SIZE = 96


def write_dicom(path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 8,
                syntax=ExplicitVRLittleEndian, encapsulated: bytes | None = None, **elements) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (8 if bits == 8 else 16), bits, bits - 1, 0
    for key, value in elements.items():
        setattr(ds, key, value)
    if encapsulated is not None:
        ds.PixelData = encapsulate([encapsulated])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = stored.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height but holds no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def gray(trained) -> np.ndarray:
    """A synthetic PNEUMONIA chest at the model's size, stretched to the full 0..255 range."""
    images, labels, _ = load_split(trained["prepared"], "test")
    g = images[np.flatnonzero(labels == 1)[0]].astype(np.float64)
    return np.round((g - g.min()) / (g.max() - g.min()) * 255).astype(np.uint8)


def _window(values: np.ndarray) -> dict:
    """A LINEAR window that spans `values` exactly (DICOM PS3.3 C.11.2.1.2.1)."""
    lo, hi = float(values.min()), float(values.max())
    return {"WindowCenter": (lo + hi) / 2 + 0.5, "WindowWidth": hi - lo + 1}


@pytest.fixture(scope="module")
def files(tmp_path_factory, gray) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("predict_inputs")
    good, bad = d / "good", d / "bad"
    good.mkdir(), bad.mkdir()
    out: dict[str, Path] = {}
    Image.fromarray(gray).convert("RGB").save(good / "chest.jpeg", quality=95)
    out["jpeg"] = good / "chest.jpeg"
    Image.fromarray(gray).save(good / "gray.png")
    Image.fromarray(gray).convert("RGB").save(good / "rgb.png")
    Image.fromarray(gray).convert("RGBA").save(good / "rgba.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(good / "sixteen.png")  # I;16, full range
    out.update({k: good / f"{k}.png" for k in ("gray", "rgb", "rgba", "sixteen")})
    sub = good / "dicom"
    sub.mkdir()
    out["m2_8"] = write_dicom(sub / "m2_8.dcm", gray)
    out["m1_8"] = write_dicom(sub / "m1_8.dcm", 255 - gray, "MONOCHROME1")
    # 12-bit stored values, a Modality rescale and a window that spans the rescaled data.
    stored = gray.astype(np.int64) * 15 + 100  # 100 .. 3925
    rescale = {"RescaleSlope": 2, "RescaleIntercept": -50}
    out["m2_16"] = write_dicom(sub / "m2_16.dcm", stored, bits=12, **rescale, **_window(2 * stored - 50))
    twin = 4095 - stored  # MONOCHROME1: the same picture, low values bright
    out["m1_16"] = write_dicom(sub / "m1_16.dcm", twin, "MONOCHROME1", bits=12, **rescale, **_window(2 * twin - 50))
    # Bad files.
    data = out["jpeg"].read_bytes()
    (bad / "truncated.jpeg").write_bytes(data[: len(data) // 3])
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.jpeg").write_text("this is a text file, not an image\n")
    png_header_only(bad / "huge.png", 9000, 9000)
    write_dicom(bad / "huge.dcm", np.zeros((4, 4), np.uint8), Rows=60000, Columns=60000)
    write_dicom(bad / "jpeg2000.dcm", gray, syntax=JPEG2000Lossless,
                encapsulated=b"\xff\x4f\xff\x51" + bytes(64))
    out.update({p.stem + "_bad": p for p in bad.iterdir()})
    out["good_dir"], out["bad_dir"] = good, bad
    return out


@pytest.fixture(scope="module")
def litert_dir(trained, tmp_path_factory) -> Path:
    out, _ = litert_export(trained, tmp_path_factory)
    return out


def _cli(args: list[str]):
    app = typer.Typer()
    app.command()(predict_command)
    return CliRunner().invoke(app, args)


def _by_name(lines: str) -> dict[str, dict]:
    rows = [json.loads(line) for line in lines.splitlines() if line.startswith("{")]
    return {Path(r["path"]).name: r for r in rows}


def test_dicom_luminance_applies_rescale_window_and_inversion(files, gray):
    for key in ("m2_8", "m1_8"):
        assert np.array_equal(dicom_luminance(files[key]), gray), key
    for key in ("m2_16", "m1_16"):
        assert np.max(np.abs(dicom_luminance(files[key]).astype(int) - gray)) <= 1, key


def test_a_narrow_window_clips(tmp_path, gray):
    stored = gray.astype(np.int64) * 15 + 100
    path = write_dicom(tmp_path / "narrow.dcm", stored, bits=12, RescaleSlope=1, RescaleIntercept=0,
                       WindowCenter=float(np.median(stored)), WindowWidth=200)
    out = dicom_luminance(path)
    low, high = stored < np.median(stored) - 150, stored > np.median(stored) + 150
    assert low.any() and high.any()
    assert np.all(out[low] == 0) and np.all(out[high] == 255)


def test_every_format_through_keras_and_bad_files_fail_alone(trained, files, gray, tmp_path):
    model = keras.models.load_model(trained["model"], compile=False)
    heat_dir = tmp_path / "heat"
    result = _cli([str(files["good_dir"]), str(files["bad_dir"]), "--model", str(trained["model"]),
                   "--json", "--heatmap", str(heat_dir)])
    assert result.exit_code == 1, result.output
    rows = _by_name(result.stdout)
    expected_jpeg = float(model.predict_on_batch(to_rgb(load_image(files["jpeg"], SIZE)[None]))[0, 0])
    expected_gray = float(model.predict_on_batch(to_rgb(gray[None]))[0, 0])
    assert rows["chest.jpeg"]["probability"] == pytest.approx(expected_jpeg, abs=1e-5)
    for name in ("gray.png", "rgb.png", "rgba.png", "sixteen.png", "m2_8.dcm", "m1_8.dcm"):
        assert rows[name]["probability"] == pytest.approx(expected_gray, abs=1e-5), name
    for name in ("m2_16.dcm", "m1_16.dcm"):
        assert rows[name]["probability"] == pytest.approx(expected_gray, abs=0.01), name
    # A MONOCHROME1 file predicts as its MONOCHROME2 twin.
    assert rows["m1_16.dcm"]["probability"] == pytest.approx(rows["m2_16.dcm"]["probability"], abs=1e-3)
    for r in rows.values():
        if "error" not in r:
            assert set(r) >= {"path", "probability", "label", "threshold", "model"}
            assert r["threshold"] == 0.5 and r["label"] == ("PNEUMONIA" if r["probability"] >= 0.5 else "NORMAL")
            assert Path(r["heatmap"]).is_file()
    errors = {name: r["error"] for name, r in rows.items() if "error" in r}
    assert set(errors) == {"truncated.jpeg", "empty.png", "notes.jpeg", "huge.png", "huge.dcm", "jpeg2000.dcm"}
    assert "corrupt or truncated" in errors["truncated.jpeg"]
    assert "empty file" in errors["empty.png"]
    assert "not an image" in errors["notes.jpeg"]
    assert "9000x9000 exceeds the limit" in errors["huge.png"]
    assert "60000x60000 exceeds the limit" in errors["huge.dcm"]
    assert "JPEG 2000" in errors["jpeg2000.dcm"] and "1.2.840.10008.1.2.4.90" in errors["jpeg2000.dcm"]
    for name, message in errors.items():
        assert name in message  # every error names its file
    assert len(list(heat_dir.glob("*.png"))) == 9  # one per readable file


def test_litert_backend_reads_the_card_and_threshold_overrides(litert_dir, files, gray, tmp_path):
    model_dir = tmp_path / "deploy"
    model_dir.mkdir()
    shutil.copy2(litert_dir / INT8_FILE, model_dir / INT8_FILE)
    card = {"operating_threshold": 0.0, "input": {"shape": [None, SIZE, SIZE, 3]}}
    (model_dir / "model_card.json").write_text(json.dumps(card))
    result = _cli([str(files["jpeg"]), str(files["empty_bad"]), "--model", str(model_dir / INT8_FILE)])
    assert result.exit_code == 1
    assert "PNEUMONIA" in result.stdout and "ERROR" in result.stdout and "empty file" in result.stdout
    assert "probability >= 0.0000" in result.stdout  # the card's threshold
    rows = list(predict_files([files["jpeg"]], model_dir / INT8_FILE, threshold=1.0))
    assert rows[0]["threshold"] == 1.0 and rows[0]["label"] == "NORMAL"
    ok = _cli([str(files["gray"]), "--model", str(model_dir / INT8_FILE), "--json", "--threshold", "0.25"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["threshold"] == 0.25


def test_a_card_for_another_input_size_is_refused(litert_dir, files, tmp_path):
    shutil.copy2(litert_dir / INT8_FILE, tmp_path / INT8_FILE)
    (tmp_path / "model_card.json").write_text(json.dumps({"operating_threshold": 0.4,
                                                          "input": {"shape": [None, 224, 224, 3]}}))
    result = _cli([str(files["jpeg"]), "--model", str(tmp_path / INT8_FILE)])
    assert result.exit_code == 2 and "input size 224" in result.output


def test_litert_predict_never_imports_tensorflow(litert_dir, files):
    code = (
        "import json, sys\n"
        "from pneumo.predict import predict_files\n"
        f"rows = list(predict_files([{str(files['jpeg'])!r}], {str(litert_dir / INT8_FILE)!r}, threshold=0.5))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(json.dumps({'p': rows[0]['probability'], 'heavy': heavy}))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    in_process = next(predict_files([files["jpeg"]], litert_dir / INT8_FILE, threshold=0.5))["probability"]
    assert out["p"] == pytest.approx(in_process, abs=1e-6)


def test_unsupported_inputs_are_clear(trained, files, tmp_path):
    with pytest.raises(ImageError, match="DICOM"):
        dicom_luminance(files["jpeg"])
    result = _cli([str(files["jpeg"]), "--model", str(tmp_path / "nothing.h5")])
    assert result.exit_code == 2 and "model file missing" in result.output
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    result = _cli([str(files["jpeg"]), "--model", str(onnx)])
    assert result.exit_code == 2 and ".tflite" in result.output
