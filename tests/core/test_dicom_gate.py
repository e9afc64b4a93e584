"""The DICOM metadata gate: what a header says about the image before the model runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ComputedRadiographyImageStorage

from pneumo.core.dicom import header_gate
from pneumo.core.images import ImageError
from support import write_dicom as write_any_dicom

# Lowercase and padded code strings are written on purpose (devices write them): pydicom warns.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR CS:UserWarning")


def code(meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = "0"
    item.CodingSchemeDesignator = "99TEST"
    item.CodeMeaning = meaning
    return item


def write_dicom(
    path: Path,
    modality: str | None = "DX",
    body_part: str | None = "CHEST",
    view: str | None = "PA",
    view_code: str | None = None,
) -> Path:
    """An uncompressed 8-bit MONOCHROME2 16x16 CR DICOM file; None leaves an element out."""
    return write_any_dicom(
        path,
        np.arange(256, dtype=np.uint8).reshape(16, 16),
        sop_class=ComputedRadiographyImageStorage,
        Modality=modality,
        BodyPartExamined=body_part,
        ViewPosition=view,
        ViewCodeSequence=None if view_code is None else [code(view_code)],
    )


def test_a_frontal_chest_radiograph_is_accepted_and_its_view_reported(tmp_path):
    assert header_gate(write_dicom(tmp_path / "pa.dcm")) == ([], ["DICOM view PA"])
    assert header_gate(write_dicom(tmp_path / "ap.dcm", modality="CR", view="AP")) == ([], ["DICOM view AP"])


@pytest.mark.parametrize("modality", ["CT", "MR", "US", "MG"])
def test_another_modality_is_refused_by_name(tmp_path, modality):
    refused, _ = header_gate(write_dicom(tmp_path / "x.dcm", modality=modality))
    assert len(refused) == 1
    assert f"Modality is {modality}" in refused[0]


@pytest.mark.parametrize("modality", ["CR", "DX", "DR", "dx", " cr "])
def test_radiograph_modalities_pass_in_any_case(tmp_path, modality):
    refused, notes = header_gate(write_dicom(tmp_path / "x.dcm", modality=modality))
    assert refused == [] and notes == ["DICOM view PA"]


def test_another_body_part_is_refused_by_name(tmp_path):
    refused, _ = header_gate(write_dicom(tmp_path / "hand.dcm", modality="CR", body_part="HAND"))
    assert refused == ["DICOM BodyPartExamined is HAND: not the chest"]


@pytest.mark.parametrize("body_part", ["", None, "chest", "Thorax"])
def test_an_empty_missing_or_lowercase_chest_body_part_passes(tmp_path, body_part):
    refused, notes = header_gate(write_dicom(tmp_path / "x.dcm", body_part=body_part))
    assert refused == [] and notes == ["DICOM view PA"]


def test_every_reason_is_given_at_once(tmp_path):
    refused, notes = header_gate(write_dicom(tmp_path / "x.dcm", modality="CT", body_part="HEAD", view="LL"))
    assert len(refused) == 3
    assert "CT" in refused[0] and "HEAD" in refused[1] and "lateral" in refused[2]
    assert notes == []


@pytest.mark.parametrize("view", ["LL", "RL", "ll", "LATERAL"])
def test_a_lateral_view_position_is_refused(tmp_path, view):
    refused, notes = header_gate(write_dicom(tmp_path / "lat.dcm", view=view))
    assert refused == [f"lateral view (DICOM ViewPosition {view.upper()})"]
    assert notes == []


@pytest.mark.parametrize("meaning", ["lateral", "Left lateral", "LATERAL"])
def test_a_lateral_view_code_is_refused(tmp_path, meaning):
    refused, notes = header_gate(write_dicom(tmp_path / "lat.dcm", view=None, view_code=meaning))
    assert refused == ["lateral view (DICOM ViewCodeSequence)"]
    assert notes == []


def test_a_lateral_view_code_wins_over_a_frontal_view_position(tmp_path):
    refused, notes = header_gate(write_dicom(tmp_path / "x.dcm", view="PA", view_code="lateral"))
    assert refused == ["lateral view (DICOM ViewCodeSequence)"] and notes == []


@pytest.mark.parametrize("meaning", ["left lateral decubitus", "postero-anterior", "antero-posterior"])
def test_decubitus_and_frontal_view_codes_are_not_refused(tmp_path, meaning):
    refused, _ = header_gate(write_dicom(tmp_path / "x.dcm", view=None, view_code=meaning))
    assert refused == []


def test_no_view_at_all_passes_without_a_note(tmp_path):
    assert header_gate(write_dicom(tmp_path / "x.dcm", view=None)) == ([], [])


def test_a_lowercase_frontal_view_is_reported_upper_case(tmp_path):
    assert header_gate(write_dicom(tmp_path / "x.dcm", view="pa")) == ([], ["DICOM view PA"])


def test_a_non_dicom_file_raises_an_image_error_naming_it(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("plain text, not a DICOM file\n" * 20)
    with pytest.raises(ImageError, match="notes.dcm"):
        header_gate(path)


def test_an_empty_or_missing_file_raises_an_image_error_naming_it(tmp_path):
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.dcm"):
        header_gate(empty)
    with pytest.raises(ImageError, match="absent.dcm"):
        header_gate(tmp_path / "absent.dcm")


def test_a_header_without_modality_body_part_or_view_passes_silently(tmp_path):
    # Nothing in the header to refuse: the content check (the OOD gate) still runs on the pixels.
    path = write_dicom(tmp_path / "bare.dcm", modality=None, body_part=None, view=None)
    assert header_gate(path) == ([], [])
