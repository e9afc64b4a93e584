"""predict: every supported format reaches the model as training pixels; bad files fail alone."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pydicom = pytest.importorskip("pydicom")
pytest.importorskip("ai_edge_litert")

# Every test here reads a model trained by the session's `trained` fixture.
pytestmark = pytest.mark.slow

import typer  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.uid import JPEG2000Lossless  # noqa: E402
from test_litert import litert_export  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from pneumo.cli.predict import predict_command  # noqa: E402
from pneumo.core.cache import load_split  # noqa: E402
from pneumo.core.constants import LABELS  # noqa: E402
from pneumo.core.dicom import dicom_luminance  # noqa: E402
from pneumo.core.images import ImageError, load_image, to_rgb  # noqa: E402
from pneumo.core.io import read_json, sha256_file, write_json  # noqa: E402
from pneumo.core.paths import INT8_FILE, OOD_STATS_FILE  # noqa: E402
from pneumo.core.proc import child_env  # noqa: E402
from pneumo.serving.predict import predict_files  # noqa: E402
from pneumo.stages.export import model_card  # noqa: E402
from support import png_header_only, write_dicom  # noqa: E402

SIZE = 96
ANSWER_KEYS = {"path", "decision", "probability", "ood_score", "reasons", "threshold", "model", "notice"}
DECISION_WORDS = ("normal", "pneumonia", "refer", "rejected")


def _answer_lines(table: str) -> list[str]:
    """The table's rows that give a decision (not the header, an ERROR row or the footer)."""
    return [line for line in table.splitlines() if line.split(" ", 1)[0] in DECISION_WORDS]


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
    write_dicom(bad / "jpeg2000.dcm", gray, syntax=JPEG2000Lossless, encapsulated=b"\xff\x4f\xff\x51" + bytes(64))
    out.update({p.stem + "_bad": p for p in bad.iterdir()})
    out["good_dir"], out["bad_dir"] = good, bad
    return out


@pytest.fixture(scope="module")
def litert_dir(trained, tmp_path_factory) -> Path:
    out, _ = litert_export(trained, tmp_path_factory)
    return out


def card_for(size: int = SIZE, threshold=0.5, synthetic: bool = False, **changes) -> dict:
    """A minimal valid card; `changes` replace (or, with None, remove) top-level keys."""
    card = {
        "operating_threshold": threshold,
        "input": {"shape": [None, size, size, 3]},
        "labels": list(LABELS),
        "synthetic_data": synthetic,
    }
    for key, value in changes.items():
        if value is None:
            card.pop(key)
        else:
            card[key] = value
    return card


def decision_for(**changes) -> dict:
    """A card's `decision` section that passes every check up to its statistics file; `changes` replace keys."""
    section = {
        "threshold": 0.5,
        "calibration": {"method": "temperature", "temperature": 1.5},
        "refer_band": [0.4, 0.6],
        "input_gate": {"statistics": "ood_stats.npz", "sha256": None},
    }
    return {**section, **changes}


@pytest.fixture(scope="module")
def synthetic_card(trained, tmp_path_factory) -> Path:
    """The card `pneumo export` writes for the synthetic model (synthetic_data: true), with the gate
    statistics evaluate wrote beside it."""
    folder = tmp_path_factory.mktemp("card")
    stats = shutil.copy2(trained["root"] / "eval" / OOD_STATS_FILE, folder / OOD_STATS_FILE)
    prep = read_json(trained["prepared"] / "prepare.json")
    card = model_card(trained["metrics"], prep, trained["params"], SIZE, "0" * 64, 0.0, stats_sha256=sha256_file(stats))
    return write_json(folder / "model_card.json", card)


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
    path = write_dicom(
        tmp_path / "narrow.dcm",
        stored,
        bits=12,
        RescaleSlope=1,
        RescaleIntercept=0,
        WindowCenter=float(np.median(stored)),
        WindowWidth=200,
    )
    out = dicom_luminance(path)
    low, high = stored < np.median(stored) - 150, stored > np.median(stored) + 150
    assert low.any() and high.any()
    assert np.all(out[low] == 0) and np.all(out[high] == 255)


def test_every_format_through_keras_and_bad_files_fail_alone(trained, files, gray, tmp_path):
    model = keras.models.load_model(trained["model"], compile=False)
    heat_dir = tmp_path / "heat"
    result = _cli(
        [
            str(files["good_dir"]),
            str(files["bad_dir"]),
            "--model",
            str(trained["model"]),
            "--json",
            "--heatmap",
            str(heat_dir),
        ]
    )
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
            assert set(r) == ANSWER_KEYS | {"heatmap"}, r
            # No card: the threshold 0.5 alone (no gate, no calibration, no refer band).
            assert r["threshold"] == 0.5 and r["decision"] == ("pneumonia" if r["probability"] >= 0.5 else "normal")
            assert r["ood_score"] is None and len(r["reasons"]) == 1 and "operating threshold 0.50" in r["reasons"][0]
            assert "not a diagnosis" in r["notice"]
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
    (model_dir / "model_card.json").write_text(json.dumps(card_for(threshold=1e-6)))
    result = _cli([str(files["jpeg"]), str(files["empty_bad"]), "--model", str(model_dir / INT8_FILE)])
    assert result.exit_code == 1
    (answer,) = _answer_lines(result.stdout)
    assert answer.startswith("pneumonia") and str(files["jpeg"]) in answer
    assert "ERROR" in result.stdout and "empty file" in result.stdout
    assert "probability >= 0.0000" in result.stdout  # the card's threshold
    assert "WARNING" not in result.stdout  # a card with synthetic_data: false adds no warning
    rows = list(predict_files([files["jpeg"]], model_dir / INT8_FILE, threshold=0.999))
    assert rows[0]["probability"] < 0.999
    assert rows[0]["threshold"] == 0.999 and rows[0]["decision"] == "normal" and "warning" not in rows[0]
    ok = _cli([str(files["gray"]), "--model", str(model_dir / INT8_FILE), "--json", "--threshold", "0.25"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["threshold"] == 0.25


def test_a_card_for_another_input_size_is_refused(litert_dir, files, tmp_path):
    shutil.copy2(litert_dir / INT8_FILE, tmp_path / INT8_FILE)
    (tmp_path / "model_card.json").write_text(json.dumps(card_for(224, 0.4)))
    result = _cli([str(files["jpeg"]), "--model", str(tmp_path / INT8_FILE)])
    assert result.exit_code == 2 and "input size 224" in result.output


def test_litert_predict_never_imports_tensorflow(litert_dir, files):
    code = (
        "import json, sys\n"
        "from pneumo.serving.predict import predict_files\n"
        f"rows = list(predict_files([{str(files['jpeg'])!r}], {str(litert_dir / INT8_FILE)!r}, threshold=0.5))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(json.dumps({'p': rows[0]['probability'], 'heavy': heavy}))\n"
    )
    env = child_env({"TF_CPP_MIN_LOG_LEVEL": "3"})
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


# ---- a synthetic model says so everywhere; heat maps say what they are ----------------------------


def _png_text(path: Path) -> dict[str, str]:
    with Image.open(path) as img:
        return dict(img.text)


def _caption_band(path: Path) -> np.ndarray:
    """The pixels under the overlay: the width is the overlay's, so is its (square) height."""
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    return rgb[rgb.shape[1] :]


def test_a_synthetic_model_warns_on_every_answer_and_heat_map(trained, files, synthetic_card, tmp_path):
    warning = read_json(synthetic_card)["warning"]
    assert "SYNTHETIC" in warning
    heat_dir = tmp_path / "heat"
    args = [
        str(files["jpeg"]),
        str(files["m2_8"]),
        str(files["empty_bad"]),
        "--model",
        str(trained["model"]),
        "--card",
        str(synthetic_card),
    ]
    as_json = _cli(args + ["--json", "--heatmap", str(heat_dir)])
    assert as_json.exit_code == 1, as_json.output  # the empty file
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(rows) == 3 and all(r["warning"] == warning for r in rows)
    answered = [r for r in rows if "error" not in r]
    assert len(answered) == 2
    for r in answered:
        text = _png_text(Path(r["heatmap"]))
        assert text["Label"] == r["decision"]
        assert float(text["Probability"]) == pytest.approx(r["probability"], abs=1e-6)
        assert "not a diagnosis" in text["Notice"] and text["Warning"] == warning
        band = _caption_band(Path(r["heatmap"])).astype(int)
        assert band.shape[0] > 40  # label, notice and warning lines
        dark = (band.max(axis=-1) < 100).sum()
        red = ((band[..., 0] > 150) & (band[..., 1] < 80) & (band[..., 2] < 80)).sum()
        assert dark > 200 and red > 100, (dark, red)  # black caption text and the red warning were drawn
    as_table = _cli(args)
    lines = as_table.stdout.splitlines()
    body = [line for line in lines[1:] if not line.startswith("(")]
    assert len(body) >= 3 and all(warning in line for line in body), as_table.stdout
    assert "not a diagnosis" in as_table.stdout


def test_a_real_data_card_adds_no_warning_to_the_heat_map(trained, files, tmp_path):
    card = write_json(tmp_path / "card.json", card_for(threshold=0.5))
    result = _cli(
        [
            str(files["jpeg"]),
            "--model",
            str(trained["model"]),
            "--card",
            str(card),
            "--json",
            "--heatmap",
            str(tmp_path / "heat"),
        ]
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert "warning" not in row
    text = _png_text(Path(row["heatmap"]))
    assert "Warning" not in text and text["Label"] == row["decision"] and "not a diagnosis" in text["Notice"]
    band = _caption_band(Path(row["heatmap"])).astype(int)
    assert ((band[..., 0] > 150) & (band[..., 1] < 80) & (band[..., 2] < 80)).sum() == 0  # no red line


# ---- the card and --threshold are checked before they are believed --------------------------------

BAD_CARDS = {
    "threshold_above_one": (card_for(threshold=7.5), "operating_threshold"),
    "threshold_nan": (card_for(threshold=float("nan")), "operating_threshold"),
    "threshold_zero": (card_for(threshold=0.0), "operating_threshold"),
    "threshold_one": (card_for(threshold=1), "operating_threshold"),
    "threshold_text": (card_for(threshold="0.5"), "operating_threshold"),
    "threshold_bool": (card_for(threshold=True), "operating_threshold"),
    "threshold_missing": (card_for(operating_threshold=None), "operating_threshold"),
    "size_zero": (card_for(input={"shape": [None, 0, 0, 3]}), "input.shape"),
    "size_float": (card_for(input={"shape": [None, 96.5, 96.5, 3]}), "input.shape"),
    "size_other_model": (card_for(224), "input.shape"),
    "shape_missing": (card_for(input={}), "input.shape"),
    "labels_swapped": (card_for(labels=list(reversed(LABELS))), "labels"),
    "labels_missing": (card_for(labels=None), "labels"),
    "synthetic_missing": (card_for(synthetic_data=None), "synthetic_data"),
    "synthetic_text": (card_for(synthetic_data="no"), "synthetic_data"),
    # The decision policy (pneumo.serving.predict.read_policy): checked before an answer is given.
    "decision_not_mapping": (card_for(decision=[0.5]), "decision"),
    "decision_threshold_one": (card_for(decision=decision_for(threshold=1.0)), "decision.threshold"),
    "decision_threshold_missing": (card_for(decision=decision_for(threshold=None)), "decision.threshold"),
    "temperature_zero": (
        card_for(decision=decision_for(calibration={"temperature": 0})),
        "decision.calibration.temperature",
    ),
    "temperature_nan": (
        card_for(decision=decision_for(calibration={"temperature": float("nan")})),
        "decision.calibration.temperature",
    ),
    "temperature_missing": (card_for(decision=decision_for(calibration={})), "decision.calibration.temperature"),
    "refer_band_reversed": (card_for(decision=decision_for(refer_band=[0.6, 0.4])), "decision.refer_band"),
    "refer_band_one_number": (card_for(decision=decision_for(refer_band=[0.5])), "decision.refer_band"),
    "refer_band_above_one": (card_for(decision=decision_for(refer_band=[0.4, 1.5])), "decision.refer_band"),
    "input_gate_missing": (
        card_for(decision={k: v for k, v in decision_for().items() if k != "input_gate"}),
        "decision.input_gate",
    ),
}


def _one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


@pytest.mark.parametrize("case", sorted(BAD_CARDS))
def test_a_bad_card_is_refused_naming_the_file_and_the_key(litert_dir, files, tmp_path, case):
    card, key = BAD_CARDS[case]
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(card))  # NaN is written as the JSON extension `NaN`, which json reads back
    result = _cli([str(files["jpeg"]), "--model", str(litert_dir / INT8_FILE), "--card", str(path)])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert str(path) in line and repr(key) in line, line
    assert _answer_lines(result.stdout) == [] and "{" not in result.stdout  # nothing was answered


def test_a_card_that_is_not_json_is_refused(litert_dir, files, tmp_path):
    path = tmp_path / "model_card.json"
    path.write_text('{"operating_threshold": 0.5,')
    result = _cli([str(files["jpeg"]), "--model", str(litert_dir / INT8_FILE), "--card", str(path)])
    assert result.exit_code == 2 and str(path) in _one_error_line(result.output)


@pytest.mark.parametrize("value", ["7.5", "nan", "inf", "0", "1", "-0.2"])
def test_a_bad_threshold_override_is_refused(litert_dir, files, value):
    result = _cli([str(files["jpeg"]), "--model", str(litert_dir / INT8_FILE), "--threshold", value])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert "--threshold" in line and "(0, 1)" in line
    with pytest.raises(ValueError, match="--threshold"):
        next(predict_files([files["jpeg"]], litert_dir / INT8_FILE, threshold=float(value)))


def test_a_good_threshold_override_beats_the_card(litert_dir, files, tmp_path):
    shutil.copy2(litert_dir / INT8_FILE, tmp_path / INT8_FILE)
    write_json(tmp_path / "model_card.json", card_for(threshold=0.5))
    row = next(predict_files([files["jpeg"]], tmp_path / INT8_FILE, threshold=0.01))
    assert row["threshold"] == 0.01 and row["decision"] == ("pneumonia" if row["probability"] >= 0.01 else "normal")


# ---- inputs and outputs that used to hang or give a traceback ------------------------------------


def test_a_fifo_is_skipped_and_the_files_after_it_still_run(litert_dir, files, tmp_path):
    fifo = tmp_path / "scan.jpeg"
    os.mkfifo(fifo)
    cmd = [
        sys.executable,
        "-m",
        "pneumo",
        "predict",
        str(fifo),
        str(files["jpeg"]),
        "--json",
        "--model",
        str(litert_dir / INT8_FILE),
        "--threshold",
        "0.5",
    ]
    env = child_env({"TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"predict hung on the FIFO {fifo}")
    assert proc.returncode == 1, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows[0]["path"] == str(fifo) and "not a regular file (a FIFO)" in rows[0]["error"]
    assert str(fifo) in rows[0]["error"]
    assert rows[1]["path"] == str(files["jpeg"]) and 0 <= rows[1]["probability"] <= 1


def test_an_empty_folder_says_so_and_fails(litert_dir, files, tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image")
    alone = _cli([str(empty), "--model", str(litert_dir / INT8_FILE)])
    assert alone.exit_code == 1 and f"no images found in {empty}" in alone.output, alone.output
    mixed = _cli(
        [str(empty), str(files["jpeg"]), "--model", str(litert_dir / INT8_FILE), "--json", "--threshold", "0.5"]
    )
    assert mixed.exit_code == 1
    rows = _by_name(mixed.stdout)
    assert "no images found" in rows["empty"]["error"] and "probability" in rows["chest.jpeg"]


def test_a_garbage_h5_is_one_line_naming_the_file(files, tmp_path):
    bad = tmp_path / "model.h5"
    bad.write_bytes(b"this is not an HDF5 file\n" * 10)
    result = _cli([str(files["jpeg"]), "--model", str(bad)])
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert str(bad) in line and "not a Keras model" in line


def test_heatmap_on_an_existing_file_is_refused_before_the_model_loads(files, tmp_path):
    taken = tmp_path / "heat.png"
    taken.write_bytes(b"already here")
    # The model is missing too: the --heatmap check must come first (no model is loaded for it).
    result = _cli([str(files["jpeg"]), "--model", str(tmp_path / "absent.h5"), "--heatmap", str(taken)])
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert f"--heatmap {taken}" in line and "not a folder" in line
    assert taken.read_bytes() == b"already here"


def test_a_full_disk_while_writing_a_heat_map_is_one_line_and_keeps_the_old_map(trained, files, tmp_path, monkeypatch):
    heat_dir = tmp_path / "heat"
    args = [
        str(files["jpeg"]),
        "--model",
        str(trained["model"]),
        "--json",
        "--heatmap",
        str(heat_dir),
        "--threshold",
        "0.5",
    ]
    first = _cli(args)
    assert first.exit_code == 0, first.output
    (old,) = heat_dir.glob("*.png")
    before = old.read_bytes()

    write_bytes = Path.write_bytes

    def full_disk(self, data):
        write_bytes(self, data[: len(data) // 2])  # some bytes reach the disk, then it is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full_disk)  # how core.overlay.save_overlay writes the PNG
    second = _cli(args)
    assert second.exit_code == 1, second.output
    line = _one_error_line(second.output)
    assert str(old) in line and "No space left on device" in line
    assert old.read_bytes() == before  # the earlier heat map is intact
    assert sorted(p.name for p in heat_dir.iterdir()) == [old.name]  # no temporary file left behind
