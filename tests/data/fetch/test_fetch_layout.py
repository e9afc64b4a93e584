"""Layout normalisation on real folders: the variants real copies have, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from fetch_helpers import jpeg_bytes, layout_files, tree_hashes, write_tree

from pneumo.data.fetch.errors import FetchError
from pneumo.data.fetch.layout import SYNTHETIC_MARKER, materialise, plan


def _result(src: Path, tmp_path: Path) -> dict[str, str]:
    return tree_hashes(materialise(plan(src), tmp_path / "result", move=False))


def test_kaggle_zip_shape_normalised(tmp_path: Path) -> None:
    """chest_xray/ on top, the chest_xray/chest_xray duplicate and __MACOSX junk, as in the Kaggle zip."""
    files = layout_files("chest_xray/")
    files |= {k.replace("chest_xray/", "chest_xray/chest_xray/", 1): v for k, v in layout_files("chest_xray/").items()}
    files |= {
        "__MACOSX/chest_xray/train/NORMAL/._img000.jpeg": b"junk",
        "chest_xray/.DS_Store": b"junk",
        "chest_xray/train/NORMAL/._img000.jpeg": b"junk",
        "chest_xray/__MACOSX/x": b"junk",
    }
    src = write_tree(tmp_path / "src", files)
    p = plan(src)
    assert any("chest_xray/chest_xray" in note for note in p.ignored)
    expected = {
        k.removeprefix("chest_xray/"): v for k, v in tree_hashes(write_tree(tmp_path / "plain", layout_files())).items()
    }
    assert _result(src, tmp_path) == expected


def test_case_variants_normalised(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "src",
        {
            "Train/normal/a.jpeg": jpeg_bytes(1),
            "Train/Pneumonia/b.JPG": jpeg_bytes(2),
            "TEST/NORMAL/c.jpeg": jpeg_bytes(3),
            "val/pneumonia/d.png": jpeg_bytes(4),
        },
    )
    assert sorted(_result(src, tmp_path)) == [
        "test/NORMAL/c.jpeg",
        "train/NORMAL/a.jpeg",
        "train/PNEUMONIA/b.JPG",
        "val/PNEUMONIA/d.png",
    ]


def test_single_wrapper_folder_and_docs_left_out(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "src",
        layout_files("chest-xray-pneumonia/")
        | {"chest-xray-pneumonia/README.md": b"doc", "chest-xray-pneumonia/MANIFEST.csv": b"a,b"},
    )
    p = plan(src)
    assert len(p.entries) == 11
    assert sorted(Path(n).name for n in p.ignored) == ["MANIFEST.csv", "README.md"]


def test_synthetic_marker_kept(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", layout_files() | {SYNTHETIC_MARKER: b"synthetic"})
    out = materialise(plan(src), tmp_path / "out", move=False)
    assert (out / SYNTHETIC_MARKER).read_bytes() == b"synthetic"


@pytest.mark.parametrize(
    "files, message",
    [
        (
            {"images/a.jpeg": b"x", "images/b.jpeg": b"y"},
            "images: no split folders found; found images/a.jpeg, images/b.jpeg",
        ),
        (layout_files(counts={"test": {"NORMAL": 1, "PNEUMONIA": 1}}), "no split folders found|no train/ folder"),
        (layout_files() | {"train/OTHER/x.jpeg": b"x"}, r"unexpected train/OTHER/; expected only NORMAL/, PNEUMONIA/"),
        (layout_files() | {"train/NORMAL/notes.docx": b"x"}, r"notes.docx: not an image file"),
        (layout_files() | {"extras/x.jpeg": b"x"}, r"extras: unexpected folder beside the split folders"),
        (layout_files() | {"train/normal/x.jpeg": jpeg_bytes(9)}, r"both NORMAL/ and normal/ found"),
        (layout_files(counts={"train": {"NORMAL": 2}}), r"train: no PNEUMONIA images"),
    ],
)
def test_wrong_layouts_refused_with_what_was_found(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    src = write_tree(tmp_path / "src", files)
    with pytest.raises(FetchError, match=message) as err:
        plan(src)
    assert "expected" in str(err.value)


# --- symbolic links in a local folder ---------------------------------------------------------


def _with_link(tmp_path: Path, link: str, to: Path) -> Path:
    src = write_tree(tmp_path / "src", layout_files())
    (src / link).symlink_to(to)
    return src


@pytest.mark.parametrize("link", ["train/NORMAL/x.jpeg", "test/PNEUMONIA"])
def test_link_out_of_the_folder_refused_by_fetch_and_cli(tmp_path: Path, link: str) -> None:
    """A link to a private file (or folder) elsewhere never reaches data/raw; the error names it."""
    from typer.testing import CliRunner

    from pneumo.cli import fetch as fetch_cli

    private = write_tree(tmp_path / "private", {"secret.jpeg": jpeg_bytes(99), "PNEUMONIA/s.jpeg": jpeg_bytes(98)})
    target = private / ("secret.jpeg" if link.endswith(".jpeg") else "PNEUMONIA")
    src = write_tree(tmp_path / "src", layout_files())
    if not link.endswith(".jpeg"):
        for f in (src / link).iterdir():
            f.unlink()
        (src / link).rmdir()
    (src / link).symlink_to(target)
    result = CliRunner().invoke(
        fetch_cli.make_app(),
        ["fetch", "--source", "local", "--path", str(src), "--repo", str(tmp_path / "ws"), "--no-dvc", "--no-progress"],
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {src / link}: a symbolic link to {target}, outside {src}; refused "
        "(pass --follow-symlinks to copy what links point to) (previous data/raw "
        "left unchanged)"
    )
    assert not (tmp_path / "ws" / "data" / "raw").exists()
    followed = CliRunner().invoke(
        fetch_cli.make_app(),
        [
            "fetch",
            "--source",
            "local",
            "--path",
            str(src),
            "--follow-symlinks",
            "--repo",
            str(tmp_path / "ws"),
            "--no-dvc",
            "--no-progress",
        ],
    )
    assert followed.exit_code == 0, followed.output
    copied = tree_hashes(tmp_path / "ws" / "data" / "raw")
    assert (
        copied[link if link.endswith(".jpeg") else f"{link}/s.jpeg"]
        == tree_hashes(private)["secret.jpeg" if link.endswith(".jpeg") else "PNEUMONIA/s.jpeg"]
    )


def test_links_inside_the_folder_are_copied(tmp_path: Path) -> None:
    src = _with_link(tmp_path, "test/NORMAL/again.jpeg", Path("../../train/NORMAL/img000.jpeg"))
    result = _result(src, tmp_path)
    assert result["test/NORMAL/again.jpeg"] == result["train/NORMAL/img000.jpeg"]


@pytest.mark.parametrize("follow", [False, True])
def test_broken_link_refused(tmp_path: Path, follow: bool) -> None:
    src = _with_link(tmp_path, "train/NORMAL/gone.jpeg", tmp_path / "nowhere.jpeg")
    with pytest.raises(
        FetchError,
        match=r"train/NORMAL/gone.jpeg: a symbolic link to .*nowhere.jpeg.*, which "
        r"does not resolve",
    ):
        plan(src, follow_symlinks=follow)
