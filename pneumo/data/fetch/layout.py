"""Normalise the layouts real copies of the data set come in, into the Kaggle layout.

Accepted: `{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg` at the top, or under a `chest_xray/`
folder (or any single wrapper folder); the Kaggle zip's nested `chest_xray/chest_xray`
duplicate and its `__MACOSX` junk; split and class names in any case. Anything else is refused
with what was found and what was expected.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pneumo.core.constants import IMAGE_SUFFIXES, LABELS, SPLITS, SYNTHETIC_MARKER
from pneumo.data.fetch.errors import FetchError

_JUNK = {"__macosx", ".ds_store", "thumbs.db", "desktop.ini"}
# Top-level files that copies carry beside the data (documentation, manifests): left out of data/raw.
_DOC_SUFFIXES = (".md", ".txt", ".csv", ".rst", ".html", ".pdf")
_EXPECTED = (
    "train/ (and optionally val/, test/), each holding NORMAL/ and PNEUMONIA/ folders of "
    ".jpeg images, at the top or under chest_xray/"
)


@dataclass(frozen=True)
class Entry:
    src: Path
    split: str
    label: str
    name: str


@dataclass
class Plan:
    """What goes where: the source files, their canonical split/label, and what was left out."""

    root: Path
    entries: list[Entry] = field(default_factory=list)
    marker: Path | None = None
    ignored: list[str] = field(default_factory=list)


def is_junk(path: Path) -> bool:
    return path.name.lower() in _JUNK or path.name.startswith("._")


def _kids(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not is_junk(p))


def _describe(paths: list[Path], top: Path) -> str:
    if not paths:
        return "nothing"
    shown = [f"{p.relative_to(top)}{'/' if p.is_dir() else ''}" for p in paths[:8]]
    more = f" and {len(paths) - 8} more" if len(paths) > 8 else ""
    return ", ".join(shown) + more


def _canonical(folder: Path, names: tuple[str, ...], what: str, top: Path) -> dict[str, Path]:
    """Map canonical names (any case on disk) to folders; two spellings of one name are refused."""
    found: dict[str, Path] = {}
    for kid in _kids(folder):
        key = next((n for n in names if n.lower() == kid.name.lower()), None)
        if key is None or not kid.is_dir():
            continue
        if key in found:
            raise FetchError(
                f"{folder}: both {found[key].name}/ and {kid.name}/ found; expected one {what} folder {key}/"
            )
        found[key] = kid
    return found


def find_root(top: Path) -> Path:
    """The folder that holds the split folders, descending through wrapper folders."""
    cur = top
    for _ in range(8):
        kids = _kids(cur)
        if _canonical(cur, SPLITS, "split", top):
            return cur
        dirs = [k for k in kids if k.is_dir()]
        named = [d for d in dirs if d.name.lower() == "chest_xray"]
        if len(named) == 1:
            cur = named[0]
        elif len(dirs) == 1 and all(k.is_dir() or k.suffix.lower() in _DOC_SUFFIXES for k in kids):
            cur = dirs[0]
        else:
            break
    raise FetchError(f"{cur}: no split folders found; found {_describe(_kids(cur), top)}; expected {_EXPECTED}")


def check_links(top: Path, follow: bool = False) -> None:
    """Refuse a symbolic link under `top` that leads out of it (unless `follow`), or nowhere.

    A link out of the folder would copy a file from elsewhere (a private one, say) into data/raw
    and the DVC cache, from where `dvc push` uploads it; archives refuse such links too.
    """
    root = Path(top).resolve()
    for folder, dirs, files in os.walk(root):  # followlinks=False: a linked folder is checked, not entered
        for name in dirs + files:
            link = Path(folder) / name
            if not link.is_symlink():
                continue
            try:
                real = link.resolve(strict=True)
            except (OSError, RuntimeError):  # dangling, or a loop
                raise FetchError(
                    f"{link}: a symbolic link to {os.readlink(link)!r}, which does not resolve to a "
                    "file or folder; refused"
                ) from None
            if not follow and real != root and root not in real.parents:
                raise FetchError(
                    f"{link}: a symbolic link to {real}, outside {root}; refused (pass "
                    "--follow-symlinks to copy what links point to)"
                )


def plan(top: Path, label: str | None = None, follow_symlinks: bool = False) -> Plan:
    """Check the layout under `top` and list every image with its canonical split and label.

    `label` names the source in messages instead of our temporary folder (e.g. the archive name).
    Symbolic links out of `top` are refused unless `follow_symlinks`.
    """
    top = Path(top)
    try:
        if top.is_dir():
            check_links(top, follow_symlinks)
        return _plan(top)
    except FetchError as exc:
        if label is None:
            raise
        raise FetchError(str(exc).replace(str(top), label)) from None


def _plan(top: Path) -> Plan:
    if not top.is_dir():
        raise FetchError(f"{top}: not a folder")
    root = find_root(top)
    result = Plan(root=root)
    splits = _canonical(root, SPLITS, "split", top)
    if "train" not in splits:
        raise FetchError(f"{root}: no train/ folder; found {_describe(_kids(root), top)}; expected {_EXPECTED}")
    for kid in _kids(root):
        if kid in splits.values():
            continue
        if kid.is_dir() and kid.name.lower() == "chest_xray":
            result.ignored.append(f"{kid.relative_to(top)}/ (the Kaggle zip's duplicate copy)")
        elif kid.is_file() and kid.name.lower() == SYNTHETIC_MARKER.lower():
            result.marker = kid
        elif kid.is_file() and kid.suffix.lower() in _DOC_SUFFIXES:
            result.ignored.append(str(kid.relative_to(top)))
        else:
            raise FetchError(
                f"{kid}: unexpected {'folder' if kid.is_dir() else 'file'} beside the split folders; "
                f"expected {_EXPECTED}"
            )
    for split, split_dir in splits.items():
        labels = _canonical(split_dir, LABELS, "class", top)
        strays = [k for k in _kids(split_dir) if k not in labels.values()]
        if strays:
            raise FetchError(
                f"{split_dir}: unexpected {_describe(strays, top)}; expected only "
                f"{'/, '.join(LABELS)}/ folders (any case)"
            )
        for label, label_dir in labels.items():
            for item in _kids(label_dir):
                if not item.is_file() or item.suffix.lower() not in IMAGE_SUFFIXES:
                    raise FetchError(
                        f"{item}: not an image file; expected only {', '.join(IMAGE_SUFFIXES)} "
                        f"files in {label_dir.relative_to(top)}/"
                    )
                result.entries.append(Entry(item, split, label, item.name))
    for label in LABELS:
        if not any(e.split == "train" and e.label == label for e in result.entries):
            raise FetchError(
                f"{root / 'train'}: no {label} images; expected train/NORMAL/ and train/PNEUMONIA/ to hold images"
            )
    return result


def materialise(layout: Plan, dest: Path, move: bool) -> Path:
    """Write the planned files into the new folder `dest` (moved when they are our temporaries)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=False)
    for entry in layout.entries:
        out = dest / entry.split / entry.label / entry.name
        out.parent.mkdir(parents=True, exist_ok=True)
        if move:
            os.replace(entry.src, out)
        else:
            shutil.copyfile(entry.src, out)
    if layout.marker is not None:
        shutil.copyfile(layout.marker, dest / SYNTHETIC_MARKER)
    return dest
