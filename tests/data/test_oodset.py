"""oodset: the out-of-distribution evaluation set, built from a small prepared cache."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from pneumo.core.cache import load_split
from pneumo.core.config import OodsetParams
from pneumo.core.images import load_image
from pneumo.core.io import sha256_file
from pneumo.core.paths import OOD_DICOM_DIR, OOD_IMAGES_DIR, OOD_MANIFEST
from pneumo.data.oodset import build
from pneumo.stages.prepare import prepare
from support import tiny_params

# Written out, not imported: the set must keep every kind the issue names.
CONTENT_KINDS = {
    "ct",
    "mr",
    "other_modality",
    "photo",
    "logo",
    "chart",
    "text",
    "noise",
    "xray_inverted",
    "xray_rotated",
    "xray_cropped",
}
XRAY_KINDS = {"xray_inverted", "xray_rotated", "xray_cropped"}
MAX_BYTES = 5_000_000
XRAYS = 3


def params(seed: int = 42) -> OodsetParams:
    return OodsetParams(dir="unused", xrays=XRAYS, seed=seed)


def hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, synthetic_raw) -> Path:
    """A small prepared cache (the synthetic set through the real prepare stage)."""
    p = tiny_params()
    out = tmp_path_factory.mktemp("oodset") / "prepared"
    prepare(synthetic_raw, out, p.data, p.prepare)
    return out


@pytest.fixture(scope="module")
def built(prepared, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("oodset_built") / "ood"
    summary = build(prepared, out, params())
    return {"out": out, "summary": summary, "manifest": pd.read_csv(out / OOD_MANIFEST)}


def test_every_manifest_row_is_a_readable_file_and_every_file_is_listed(built):
    out, manifest = built["out"], built["manifest"]
    assert list(manifest.columns) == ["path", "kind", "source", "license", "gate", "note"]
    assert list(manifest["path"]) == sorted(manifest["path"]), "manifest sorted by path"
    assert manifest.notna().all().all(), "no empty cell"
    for row in manifest.itertuples():
        path = out / row.path
        if row.path.startswith(f"{OOD_IMAGES_DIR}/"):
            assert path.suffix == ".png" and row.gate == "content"
            assert PurePosixPath(row.path).parent.name == row.kind
            assert load_image(path, 224).shape == (224, 224)
        else:
            assert row.path.startswith(f"{OOD_DICOM_DIR}/") and path.suffix == ".dcm" and row.gate == "metadata"
            assert pydicom.dcmread(path).Modality
    listed = set(manifest["path"]) | {OOD_MANIFEST}
    assert set(hashes(out)) == listed


def test_kinds_cover_the_issue_and_the_summary_counts_them(built):
    manifest, summary = built["manifest"], built["summary"]
    content = manifest[manifest["gate"] == "content"]
    counts = content["kind"].value_counts()
    assert set(counts.index) == CONTENT_KINDS
    assert all(counts[kind] == XRAYS for kind in XRAY_KINDS)
    assert all(counts[kind] >= 4 for kind in CONTENT_KINDS - XRAY_KINDS), counts.to_dict()
    assert summary["images"] == len(content)
    assert summary["per_kind"] == manifest["kind"].value_counts().to_dict()
    assert summary["dir"] == str(built["out"])
    metadata = manifest[manifest["gate"] == "metadata"]
    assert len(metadata) >= 8
    assert set(metadata["source"].str.extract(r"pydicom test file (\S+)")[0].dropna()) >= {
        "CT_small.dcm",
        "MR_small.dcm",
        "rtdose_1frame.dcm",
    }


def test_xray_kinds_use_validation_images_only_and_transform_them(built, prepared):
    val_images, _, val_rows = load_split(prepared, "val")
    by_path = dict(zip(val_rows["path"], val_images))
    other = set(pd.read_csv(prepared / "manifest.csv").query("split != 'val'")["path"])
    manifest = built["manifest"]
    rows = manifest[manifest["kind"].isin(XRAY_KINDS) | manifest["path"].str.startswith(f"{OOD_DICOM_DIR}/")]
    derived = rows[rows["source"].str.startswith("validation X-ray ")]
    assert len(derived) == 3 * XRAYS + 6
    for row in derived.itertuples():
        source = row.source.removeprefix("validation X-ray ").split(",")[0].split(" in a DICOM")[0]
        assert source in by_path and source not in other, row.source
        original = by_path[source]
        path = built["out"] / row.path
        pixels = pydicom.dcmread(path).pixel_array if path.suffix == ".dcm" else np.asarray(Image.open(path))
        if row.kind == "xray_inverted":
            np.testing.assert_array_equal(pixels, 255 - original)
        elif row.kind == "xray_rotated":
            assert any(np.array_equal(pixels, np.rot90(original, k)) for k in (1, 2, 3)), row.path
        elif row.kind == "xray_cropped":
            assert pixels.shape == (original.shape[0] // 3,) * 2
        else:
            np.testing.assert_array_equal(pixels, original)


def test_same_seed_gives_byte_identical_files(built, prepared, tmp_path):
    build(prepared, tmp_path / "again", params())
    assert hashes(tmp_path / "again") == hashes(built["out"])


def test_another_seed_changes_the_xray_files_only_where_seeded(built, prepared, tmp_path):
    build(prepared, tmp_path / "other", params(seed=7))
    before, after = hashes(built["out"]), hashes(tmp_path / "other")
    for kind in sorted(XRAY_KINDS):
        prefix = f"{OOD_IMAGES_DIR}/{kind}/"
        old = {(p, h) for p, h in before.items() if p.startswith(prefix)}
        new = {(p, h) for p, h in after.items() if p.startswith(prefix)}
        assert old != new, kind
    unseeded = [p for p in before if p.startswith(f"{OOD_IMAGES_DIR}/ct/")]
    assert unseeded and all(before[p] == after[p] for p in unseeded)


EXPECTED_HEADERS = {
    "cr_hand.dcm": ("CR", "HAND", "PA"),
    "cr_skull.dcm": ("CR", "SKULL", "AP"),
    "dx_lateral_ll.dcm": ("DX", "CHEST", "LL"),
    "dx_lateral_rl.dcm": ("DX", "CHEST", "RL"),
    "dx_lateral_code.dcm": ("DX", "CHEST", ""),
    "mg_breast.dcm": ("MG", "BREAST", "CC"),
}


def test_written_dicom_files_carry_the_metadata_the_gate_must_reject(built):
    folder = built["out"] / OOD_DICOM_DIR
    patient_ids = set()
    for name, (modality, body_part, view) in EXPECTED_HEADERS.items():
        ds = pydicom.dcmread(folder / name)
        assert (ds.Modality, ds.BodyPartExamined, ds.ViewPosition) == (modality, body_part, view), name
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert (ds.PhotometricInterpretation, ds.BitsAllocated) == ("MONOCHROME2", 8)
        assert str(ds.PatientName) == "OOD^TEST"
        patient_ids.add(ds.PatientID)
    assert len(patient_ids) == len(EXPECTED_HEADERS)
    code = pydicom.dcmread(folder / "dx_lateral_code.dcm").ViewCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("399067008", "SCT", "lateral")
    copied = {"CT_small.dcm": "CT", "MR_small.dcm": "MR", "rtdose_1frame.dcm": "RTDOSE"}
    for name, modality in copied.items():
        assert pydicom.dcmread(folder / name).Modality == modality


def test_a_failed_build_names_the_path_and_keeps_the_earlier_folder(prepared, tmp_path):
    out = tmp_path / "ood"
    build(prepared, out, params())
    before = hashes(out)
    missing = tmp_path / "no_such_prepared"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build(missing, out, params())
    assert hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ood"], "no temporary folder left behind"


def test_the_folder_stays_small_and_images_stay_within_256_px(built):
    out = built["out"]
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < MAX_BYTES
    for path in (out / OOD_IMAGES_DIR).rglob("*.png"):
        with Image.open(path) as img:
            assert max(img.size) <= 256 and img.mode in ("L", "RGB"), path
            assert not set(img.info) & {"tIME", "timestamp"}, path
