"""Safe extraction: real zip/tar files built here, real extraction."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from fetch_helpers import jpeg_bytes, targz_bytes, zip_bytes

from pneumo.data.fetch.archive import Limits, extract
from pneumo.data.fetch.errors import FetchError


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_zip_and_targz_extract_same_files(tmp_path: Path) -> None:
    files = {"a/b.jpeg": jpeg_bytes(1), "c.jpeg": jpeg_bytes(2)}
    for name, data in (("x.zip", zip_bytes(files)), ("x.tgz", targz_bytes(files))):
        (tmp_path / name).write_bytes(data)
        out = extract(tmp_path / name, tmp_path / f"out-{name}")
        assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


@pytest.mark.parametrize(
    "name, message",
    [
        ("../evil.jpeg", "path traversal"),
        ("a/../../evil.jpeg", "path traversal"),
        ("/etc/evil.jpeg", "absolute path"),
        ("C:/evil.jpeg", "absolute path"),
    ],
)
def test_zip_slip_and_absolute_members_refused(tmp_path: Path, name: str, message: str) -> None:
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.jpeg", b"x")
        zf.writestr(zipfile.ZipInfo(name), b"evil")
    with pytest.raises(FetchError, match=message) as err:
        extract(archive, tmp_path / "out")
    assert "slip.zip" in str(err.value) and name in str(err.value)
    assert not (tmp_path / "evil.jpeg").exists()


@pytest.mark.parametrize(
    "link",
    [
        _link("a/l.jpeg", "../../outside.jpeg", tarfile.SYMTYPE),
        _link("a/l.jpeg", "/etc/passwd", tarfile.SYMTYPE),
        _link("l.jpeg", "../outside.jpeg", tarfile.LNKTYPE),
        _link("l.jpeg", "/etc/passwd", tarfile.LNKTYPE),
    ],
)
def test_links_out_of_target_refused(tmp_path: Path, link: tarfile.TarInfo) -> None:
    archive = _tar(tmp_path / "links.tar.gz", [(link, None)])
    with pytest.raises(FetchError, match="points outside the target") as err:
        extract(archive, tmp_path / "out")
    assert link.name in str(err.value)


def test_links_inside_target_become_plain_copies(tmp_path: Path) -> None:
    data = jpeg_bytes(3)
    info = tarfile.TarInfo("d/real.jpeg")
    info.size = len(data)
    archive = _tar(
        tmp_path / "ok.tgz",
        [
            (info, data),
            (_link("d/sym.jpeg", "real.jpeg", tarfile.SYMTYPE), None),
            (_link("hard.jpeg", "d/real.jpeg", tarfile.LNKTYPE), None),
        ],
    )
    out = extract(archive, tmp_path / "out")
    for name in ("d/sym.jpeg", "hard.jpeg"):
        assert not (out / name).is_symlink() and (out / name).read_bytes() == data


def test_zip_symlink_out_of_target_refused(tmp_path: Path) -> None:
    archive = tmp_path / "zl.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("train/evil.jpeg")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "../../../etc/passwd")
    with pytest.raises(FetchError, match="points outside the target"):
        extract(archive, tmp_path / "out")


def test_special_file_refused(tmp_path: Path) -> None:
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(FetchError, match="special file"):
        extract(_tar(tmp_path / "f.tgz", [(fifo, None)]), tmp_path / "out")


def test_bomb_refused_by_total_size(tmp_path: Path) -> None:
    archive = tmp_path / "big.zip"
    archive.write_bytes(zip_bytes({"a.bin": os.urandom(5000), "b.bin": os.urandom(5000)}))
    with pytest.raises(
        FetchError, match=r"uncompressed size 10000 bytes exceeds the limit of 6000 bytes \(max_bytes\)"
    ):
        extract(archive, tmp_path / "out", Limits(max_bytes=6000))


@pytest.mark.parametrize("maker, name", [(zip_bytes, "bomb.zip"), (targz_bytes, "bomb.tar.gz")])
def test_bomb_refused_by_ratio(tmp_path: Path, maker, name: str) -> None:
    archive = tmp_path / name
    archive.write_bytes(maker({"zeros.bin": b"\0" * 2_000_000}))
    with pytest.raises(FetchError, match=r"compression ratio \d+ exceeds the limit of 50 \(max_ratio\)") as err:
        extract(archive, tmp_path / "out", Limits(max_ratio=50))
    assert name in str(err.value)
    assert not (tmp_path / "out" / "zeros.bin").exists() or (tmp_path / "out" / "zeros.bin").stat().st_size < 2_000_000


def test_member_count_limit(tmp_path: Path) -> None:
    archive = tmp_path / "many.tgz"
    archive.write_bytes(targz_bytes({f"f{i}.txt": b"x" for i in range(20)}))
    with pytest.raises(FetchError, match=r"more than 10 members \(max_members\)"):
        extract(archive, tmp_path / "out", Limits(max_members=10))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"PK\x03\x04" + b"garbage" * 50, "corrupt or truncated zip"),
        (b"<html>not found</html>", "not a zip or tar archive"),
    ],
)
def test_corrupt_or_foreign_file_refused(tmp_path: Path, data: bytes, message: str) -> None:
    archive = tmp_path / "bad.zip"
    archive.write_bytes(data)
    with pytest.raises(FetchError, match=message) as err:
        extract(archive, tmp_path / "out")
    assert "bad.zip" in str(err.value)


def test_truncated_targz_refused(tmp_path: Path) -> None:
    whole = targz_bytes({f"f{i}.jpeg": jpeg_bytes(i, size=64) for i in range(10)})
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(FetchError, match="cut.tar.gz: corrupt or truncated tar"):
        extract(archive, tmp_path / "out")


def test_limits_validated() -> None:
    with pytest.raises(ValueError, match="max_ratio"):
        Limits(max_ratio=0.5)


def test_detect_kind_reads_only_the_header(tmp_path: Path) -> None:
    """A 512 MB (sparse) file that is no archive: judged from its first bytes, not loaded whole."""
    import tracemalloc

    from pneumo.data.fetch.archive import detect_kind

    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.write(b"NOTANARCHIVE")
        fh.truncate(512 * 2**20)
    tracemalloc.start()
    try:
        assert detect_kind(big) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20
