"""Helpers shared by the pneumo.data.fetch tests (a unique module name: tests/ has no packages)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

from PIL import Image


def jpeg_bytes(seed: int, size: int = 16) -> bytes:
    """A tiny real JPEG, different for every seed."""
    img = Image.new("L", (size, size), color=seed % 256)
    img.putpixel((seed % size, (seed // size) % size), 255 - seed % 256)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def layout_files(prefix: str = "", counts: dict[str, dict[str, int]] | None = None, start: int = 0) -> dict[str, bytes]:
    """{relative path: bytes} of a small Kaggle-layout set."""
    counts = counts or {"train": {"NORMAL": 3, "PNEUMONIA": 4}, "test": {"NORMAL": 2, "PNEUMONIA": 2}}
    files, seed = {}, start
    for split, per_label in counts.items():
        for label, n in per_label.items():
            for _ in range(n):
                files[f"{prefix}{split}/{label}/img{seed:03d}.jpeg"] = jpeg_bytes(seed)
                seed += 1
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def targz_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tree_hashes(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root (what 'left intact' is checked against)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
