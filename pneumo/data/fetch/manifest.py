"""What was fetched: one row per image (file, split, label, sha256, bytes), and a summary with
counts, byte-identical duplicate groups and files PIL cannot decode."""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pneumo.core.constants import LABELS, SPLITS
from pneumo.data.fetch.archive import progress_off
from pneumo.data.fetch.layout import SYNTHETIC_MARKER

FIELDS = ("file", "split", "label", "sha256", "bytes")


@dataclass(frozen=True)
class Row:
    file: str  # relative to the data folder, POSIX separators
    split: str
    label: str
    sha256: str
    bytes: int
    error: str | None = None  # why PIL could not decode it; None when it could


def _decode_error(data: bytes) -> str | None:
    """None if PIL opens and fully decodes the image, else a short reason."""
    from PIL import Image  # inside: only checking image bytes needs PIL (start-up)

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError...)
        return f"{type(exc).__name__}: {exc}"
    return None


def scan(tree: Path, progress: bool | None = None) -> list[Row]:
    """Hash and decode every image under `tree` (the Kaggle layout), in a stable order."""
    files = sorted(p for split in SPLITS for label in LABELS for p in (tree / split / label).glob("*") if p.is_file())
    rows = []
    for path in tqdm(files, unit="img", desc="check images", disable=progress_off(progress)):
        data = path.read_bytes()
        rel = path.relative_to(tree)
        rows.append(
            Row(
                rel.as_posix(),
                rel.parts[0],
                rel.parts[1],
                hashlib.sha256(data).hexdigest(),
                len(data),
                _decode_error(data),
            )
        )
    return rows


def summarise(rows: list[Row], tree: Path) -> dict:
    """Counts per split and class, duplicate groups (and those that cross splits), unreadable files."""
    counts: dict[str, dict[str, int]] = {}
    by_hash: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        counts.setdefault(row.split, {label: 0 for label in LABELS})[row.label] += 1
        by_hash[row.sha256].append(row)
    groups = [[r.file for r in group] for group in by_hash.values() if len(group) > 1]
    crossing = [g for g in by_hash.values() if len(g) > 1 and len({r.split for r in g}) > 1]
    conflicting = [g for g in by_hash.values() if len({r.label for r in g}) > 1]
    return {
        "counts": {s: counts[s] for s in SPLITS if s in counts},
        "total": len(rows),
        "bytes": sum(r.bytes for r in rows),
        "duplicate_groups": len(groups),
        "duplicate_files": sum(len(g) for g in groups),
        "duplicate_groups_across_splits": len(crossing),
        "duplicate_groups_with_two_labels": len(conflicting),
        "duplicate_examples": groups[:5],
        "unreadable": [{"file": r.file, "error": r.error} for r in rows if r.error],
        "synthetic": (tree / SYNTHETIC_MARKER).exists(),
    }


def write_rows(rows: list[Row], path: Path) -> Path:
    """Write the manifest CSV to `path` (fetch writes a temporary file and renames it at the end)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FIELDS)
        for r in rows:
            writer.writerow((r.file, r.split, r.label, r.sha256, r.bytes))
    return Path(path)
