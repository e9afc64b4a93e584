"""Atomic writes and fingerprints: a failed run never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """A stable fingerprint of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def temp_beside(target: str | Path, suffix: str = ".tmp") -> Path:
    """A new empty file beside `target` with the mode an ordinary open() would give.

    Beside it, so one rename moves it into place: a rename needs no free space and cannot leave
    half a file, which is what makes the atomic writes and the rollbacks here atomic.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp forces 0600
    return Path(tmp)


@contextlib.contextmanager
def restorable(paths: Iterable[str | Path]) -> Iterator[None]:
    """Undo what the block does to `paths` (files) if it fails.

    Each existing file is copied beside itself first (if that fails, nothing was changed); on
    failure each copy is renamed back and files that did not exist are removed, so the rollback
    itself writes nothing and works on a full disk.
    """
    backups: dict[Path, Path | None] = {}
    try:
        for path in map(Path, paths):
            backups[path] = None
            if path.exists():
                backups[path] = temp_beside(path, ".bak")
                shutil.copy2(path, backups[path])
    except BaseException:
        _drop(backups)
        raise
    try:
        yield
    except BaseException:
        for path, copy in backups.items():
            if copy is None:
                path.unlink(missing_ok=True)
            else:
                os.replace(copy, path)
        raise
    finally:
        _drop(backups)


def _drop(backups: dict[Path, Path | None]) -> None:
    for copy in backups.values():
        if copy is not None:
            with contextlib.suppress(OSError):
                copy.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; move it over `target` only if the block succeeds."""
    target = Path(target)
    tmp_path = temp_beside(target)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_json(target: str | Path, obj: Any) -> Path:
    return write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (run the stage that writes it first)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def swap(new: Path, target: Path, keep: Path) -> Path | None:
    """Move `target` (if any) to `keep`, then `new` to `target`; returns where the old one went.

    If the second move fails, the old one is put back before the error propagates.
    """
    old = None
    if target.exists():
        os.replace(target, keep)
        old = keep
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    return old


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; it replaces `target` only on success.

    The previous folder is kept until the new one is complete, so a failed stage leaves the
    earlier outputs intact.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp forces 0700
    try:
        yield tmp
        keep = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.rmdir(keep)
        old = swap(tmp, target, keep)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
