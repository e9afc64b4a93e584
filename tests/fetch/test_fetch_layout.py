"""Layout normalisation on real folders: the variants real copies have, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumo.fetch.errors import FetchError
from pneumo.fetch.layout import SYNTHETIC_MARKER, materialise, plan

from fetch_helpers import jpeg_bytes, layout_files, tree_hashes, write_tree


def _result(src: Path, tmp_path: Path) -> dict[str, str]:
    return tree_hashes(materialise(plan(src), tmp_path / "result", move=False))


def test_kaggle_zip_shape_normalised(tmp_path: Path) -> None:
    """chest_xray/ on top, the chest_xray/chest_xray duplicate and __MACOSX junk, as in the Kaggle zip."""
    files = layout_files("chest_xray/")
    files |= {k.replace("chest_xray/", "chest_xray/chest_xray/", 1): v for k, v in layout_files("chest_xray/").items()}
    files |= {"__MACOSX/chest_xray/train/NORMAL/._img000.jpeg": b"junk", "chest_xray/.DS_Store": b"junk",
              "chest_xray/train/NORMAL/._img000.jpeg": b"junk", "chest_xray/__MACOSX/x": b"junk"}
    src = write_tree(tmp_path / "src", files)
    p = plan(src)
    assert any("chest_xray/chest_xray" in note for note in p.ignored)
    expected = {k.removeprefix("chest_xray/"): v for k, v in
                tree_hashes(write_tree(tmp_path / "plain", layout_files())).items()}
    assert _result(src, tmp_path) == expected


def test_case_variants_normalised(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"Train/normal/a.jpeg": jpeg_bytes(1), "Train/Pneumonia/b.JPG": jpeg_bytes(2),
                                        "TEST/NORMAL/c.jpeg": jpeg_bytes(3), "val/pneumonia/d.png": jpeg_bytes(4)})
    assert sorted(_result(src, tmp_path)) == ["test/NORMAL/c.jpeg", "train/NORMAL/a.jpeg",
                                              "train/PNEUMONIA/b.JPG", "val/PNEUMONIA/d.png"]


def test_single_wrapper_folder_and_docs_left_out(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", layout_files("chest-xray-pneumonia/") | {
        "chest-xray-pneumonia/README.md": b"doc", "chest-xray-pneumonia/MANIFEST.csv": b"a,b"})
    p = plan(src)
    assert len(p.entries) == 11
    assert sorted(Path(n).name for n in p.ignored) == ["MANIFEST.csv", "README.md"]


def test_synthetic_marker_kept(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", layout_files() | {SYNTHETIC_MARKER: b"synthetic"})
    out = materialise(plan(src), tmp_path / "out", move=False)
    assert (out / SYNTHETIC_MARKER).read_bytes() == b"synthetic"


@pytest.mark.parametrize("files, message", [
    ({"images/a.jpeg": b"x", "images/b.jpeg": b"y"}, "images: no split folders found; found images/a.jpeg, images/b.jpeg"),
    (layout_files(counts={"test": {"NORMAL": 1, "PNEUMONIA": 1}}), "no split folders found|no train/ folder"),
    (layout_files() | {"train/OTHER/x.jpeg": b"x"}, r"unexpected train/OTHER/; expected only NORMAL/, PNEUMONIA/"),
    (layout_files() | {"train/NORMAL/notes.docx": b"x"}, r"notes.docx: not an image file"),
    (layout_files() | {"extras/x.jpeg": b"x"}, r"extras: unexpected folder beside the split folders"),
    (layout_files() | {"train/normal/x.jpeg": jpeg_bytes(9)}, r"both NORMAL/ and normal/ found"),
    (layout_files(counts={"train": {"NORMAL": 2}}), r"train: no PNEUMONIA images"),
])
def test_wrong_layouts_refused_with_what_was_found(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    src = write_tree(tmp_path / "src", files)
    with pytest.raises(FetchError, match=message) as err:
        plan(src)
    assert "expected" in str(err.value)
