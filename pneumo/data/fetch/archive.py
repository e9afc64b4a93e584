"""Safe extraction of zip and tar archives.

Archives come from the network, so every member is checked before a byte is written: no
absolute paths, no `..`, no links that leave the target, no special files, and bounded total
size, compression ratio and member count (the declared sizes are checked first, the bytes
actually written are counted too, because headers can lie).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from tqdm import tqdm

from pneumo.data.fetch.errors import FetchError

ArchiveKind = Literal["zip", "tar"]
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds on what one archive may expand to (archive bombs)."""

    max_bytes: int = 20 * 10**9  # total uncompressed bytes
    max_ratio: float = 200.0  # total uncompressed bytes / archive bytes
    max_members: int = 200_000  # the Kaggle zip holds ~17,600 entries (with its duplicate tree)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes = {self.max_bytes!r}: expected a positive number of bytes")
        if self.max_ratio < 1:
            raise ValueError(f"max_ratio = {self.max_ratio!r}: expected a number >= 1")
        if self.max_members <= 0:
            raise ValueError(f"max_members = {self.max_members!r}: expected a positive integer")


def detect_kind(path: Path) -> ArchiveKind | None:
    """'zip' or 'tar' (plain, gz, bz2, xz) by content, not by name; None for anything else."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, EOFError, zlib.error, tarfile.TarError):
        # A truncated .tar.gz makes is_tarfile itself raise: it is a (broken) tar all the same.
        return "tar"
    head = b""
    if path.is_file():
        with open(path, "rb") as fh:  # the header only: the file may be gigabytes
            head = fh.read(6)
    # Compressed streams whose tar header could not be read are still tars, just broken ones.
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return "tar"
    if head[:2] == b"PK":
        return "zip"
    return None


def safe_member_path(name: str, archive: Path) -> PurePosixPath:
    """The member's path relative to the target, or FetchError for absolute/escaping names."""
    if "\x00" in name:
        raise FetchError(f"{archive.name}: member {name!r} has a NUL byte in its name; refused")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise FetchError(f"{archive.name}: member {name!r} is an absolute path; refused")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FetchError(f"{archive.name}: member {name!r} escapes the target (path traversal, zip-slip); refused")
    return PurePosixPath(*parts)


def _link_target(link: PurePosixPath, target: str, archive: Path, hard: bool) -> PurePosixPath:
    """Where a link points, relative to the target root; FetchError if it leaves it."""
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise FetchError(
            f"{archive.name}: link {str(link)!r} -> {target!r} points outside the target (absolute); refused"
        )
    # Hard links in tar name an archive path; symlinks are relative to the link's folder.
    joined = target if hard else posixpath.join(str(link.parent), target)
    norm = posixpath.normpath(joined)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise FetchError(f"{archive.name}: link {str(link)!r} -> {target!r} points outside the target; refused")
    return PurePosixPath(norm)


class _Budget:
    """Counts members and bytes against the limits, declared and actual."""

    def __init__(self, archive: Path, limits: Limits) -> None:
        self.archive, self.limits = archive, limits
        self.size = max(archive.stat().st_size, 1)
        self.members = 0
        self.written = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise FetchError(
                f"{self.archive.name}: more than {self.limits.max_members} members "
                "(max_members); refused as a possible archive bomb"
            )

    def check_total(self, total: int, what: str) -> None:
        if total > self.limits.max_bytes:
            raise FetchError(
                f"{self.archive.name}: {what} uncompressed size {total} bytes exceeds the limit "
                f"of {self.limits.max_bytes} bytes (max_bytes); refused as a possible archive bomb"
            )
        if total / self.size > self.limits.max_ratio:
            raise FetchError(
                f"{self.archive.name}: {what} compression ratio {total / self.size:.0f} exceeds "
                f"the limit of {self.limits.max_ratio:g} (max_ratio); refused as a possible archive bomb"
            )

    def copy(self, src: IO[bytes], dst: Path, bar: tqdm) -> None:
        with open(dst, "wb") as out:
            while block := src.read(_CHUNK):
                self.written += len(block)
                self.check_total(self.written, "actual")
                out.write(block)
                bar.update(len(block))


def _finish_links(dest: Path, links: list[tuple[PurePosixPath, PurePosixPath]], archive: Path) -> None:
    """Materialise in-target links as copies (DVC and image readers want plain files)."""
    for link, target in links:
        src = dest / target
        if not src.is_file():
            raise FetchError(
                f"{archive.name}: link {str(link)!r} -> {str(target)!r} does not point to a "
                "file in the archive; refused"
            )
        out = dest / link
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)


def _extract_zip(archive: Path, dest: Path, budget: _Budget, progress: bool | None) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > budget.limits.max_members:
            budget.members = len(infos) - 1
            budget.member()
        budget.check_total(sum(i.file_size for i in infos), "declared")
        links: list[tuple[PurePosixPath, PurePosixPath]] = []
        with tqdm(
            total=sum(i.file_size for i in infos),
            unit="B",
            unit_scale=True,
            disable=progress_off(progress),
            desc=f"extract {archive.name}",
        ) as bar:
            for info in infos:
                budget.member()
                rel = safe_member_path(info.filename, archive)
                mode = info.external_attr >> 16
                if not rel.parts:
                    continue
                if info.is_dir() or stat.S_ISDIR(mode):
                    (dest / rel).mkdir(parents=True, exist_ok=True)
                elif stat.S_ISLNK(mode):
                    target = zf.read(info)[:4096].decode("utf-8", "replace")
                    links.append((rel, _link_target(rel, target, archive, hard=False)))
                elif mode and not stat.S_ISREG(mode) and stat.S_IFMT(mode):
                    raise FetchError(f"{archive.name}: member {info.filename!r} is a special file; refused")
                else:
                    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src:
                        budget.copy(src, dest / rel, bar)
        _finish_links(dest, links, archive)


def _extract_tar(archive: Path, dest: Path, budget: _Budget, progress: bool | None) -> None:
    declared = 0
    links: list[tuple[PurePosixPath, PurePosixPath]] = []
    # Stream mode: one pass, and a bomb is refused as soon as its declared sizes exceed the limits.
    with (
        tarfile.open(archive, "r|*") as tf,
        tqdm(unit="B", unit_scale=True, disable=progress_off(progress), desc=f"extract {archive.name}") as bar,
    ):
        for member in tf:
            budget.member()
            rel = safe_member_path(member.name, archive)
            if not rel.parts:
                continue
            if member.isdir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
            elif member.issym():
                links.append((rel, _link_target(rel, member.linkname, archive, hard=False)))
            elif member.islnk():
                links.append((rel, _link_target(rel, member.linkname, archive, hard=True)))
            elif member.isreg():
                declared += member.size
                budget.check_total(declared, "declared")
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                assert src is not None  # a regular member always has a file object
                budget.copy(src, dest / rel, bar)
            else:
                raise FetchError(f"{archive.name}: member {member.name!r} is a special file (device, fifo); refused")
    _finish_links(dest, links, archive)


def progress_off(progress: bool | None) -> bool | None:
    """tqdm's `disable`: None lets tqdm show bars only on a terminal."""
    return None if progress is None else not progress


def extract(archive: Path, dest: Path, limits: Limits = Limits(), progress: bool | None = None) -> Path:
    """Extract `archive` (zip or tar) into the new folder `dest`, refusing anything unsafe."""
    archive, dest = Path(archive), Path(dest)
    kind = detect_kind(archive)
    if kind is None:
        with open(archive, "rb") as fh:
            head = fh.read(8)
        raise FetchError(f"{archive.name}: not a zip or tar archive (starts with {head!r})")
    dest.mkdir(parents=True, exist_ok=False)
    budget = _Budget(archive, limits)
    try:
        if kind == "zip":
            _extract_zip(archive, dest, budget, progress)
        else:
            _extract_tar(archive, dest, budget, progress)
    except FetchError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, ValueError) as exc:
        raise FetchError(f"{archive.name}: corrupt or truncated {kind} archive ({exc})") from None
    except OSError as exc:
        raise FetchError(f"{archive.name}: extraction failed ({exc})") from None
    return dest


def is_archive_name(name: str) -> bool:
    """A file name that looks like an archive (for deciding what to unpack in a downloaded folder)."""
    lower = name.lower()
    return lower.endswith((".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz"))


def remove_tree(path: Path) -> None:
    """Remove a folder or file if present (used on temporaries only)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        os.unlink(path)
