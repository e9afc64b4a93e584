"""prepare: Kaggle layout in, checked manifest and decoded image cache out.

Reads `{train,val,test}/{NORMAL,PNEUMONIA}/` under the raw folder, checks every file, groups
images by patient and by identical bytes, carves a patient-grouped, label-stratified
validation split (and a test split when the raw data has none), and decodes every image once
into a uint8 array per split, because decoding JPEGs every epoch costs more than the frozen
network.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from pneumo.core.config import DataParams, PrepareParams, as_dict, paths_overlap
from pneumo.core.constants import LABELS, SPLITS, SYNTHETIC_MARKER
from pneumo.core.images import ImageError, load_image
from pneumo.core.io import atomic_dir, sha256_file, sha256_json, write_json
from pneumo.core.paths import MANIFEST, PREPARE_SUMMARY

log = logging.getLogger(__name__)


_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),
    re.compile(r"^(NORMAL2-IM-\d+)-", re.IGNORECASE),
    re.compile(r"^(IM-\d+)-", re.IGNORECASE),
)


def patient_id(filename: str) -> str | None:
    """The patient a Kermany file name belongs to, or None when the name has no known pattern."""
    for pattern in _PATIENT_PATTERNS:
        if m := pattern.match(filename):
            return m.group(1).upper().replace("PERSON", "person")
    return None


def _find_dir(parent: Path, name: str) -> Path | None:
    """`parent/name`, matching the name's case loosely (normal/, Normal/, NORMAL/)."""
    if not parent.is_dir():
        return None
    for child in sorted(parent.iterdir()):
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return None


def scan(raw_dir: Path) -> pd.DataFrame:
    """List every file under the class folders: path, official split, label, patient."""
    if not raw_dir.is_dir():
        raise FileNotFoundError(
            f"prepare: raw data folder {raw_dir} does not exist: put the Kaggle layout "
            "{train,val,test}/{NORMAL,PNEUMONIA}/ there (`pneumo fetch`; `--source synthetic` for the demo set)"
        )
    rows = []
    for split in SPLITS:
        split_dir = _find_dir(raw_dir, split)
        for label in LABELS:
            class_dir = _find_dir(split_dir, label) if split_dir else None
            if class_dir is None:
                continue
            for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
                # The official val/ images come from training patients: same patient namespace.
                origin = "test" if split == "test" else "train"
                pid = patient_id(path.name)
                rows.append(
                    {
                        "path": path.relative_to(raw_dir).as_posix(),
                        "official_split": split,
                        "label": label,
                        "patient": f"{origin}:{pid}" if pid else f"{origin}:file:{path.stem}",
                        "named_patient": pid is not None,
                    }
                )
    if not rows:
        raise FileNotFoundError(
            f"prepare: no images under {raw_dir}: expected train/NORMAL and train/PNEUMONIA folders "
            f"(found: {', '.join(sorted(p.name for p in raw_dir.iterdir())) or 'nothing'})"
        )
    frame = pd.DataFrame(rows)
    if not (frame["official_split"] == "train").any():
        raise FileNotFoundError(f"prepare: {raw_dir} has no train/NORMAL or train/PNEUMONIA images")
    return frame


@dataclass(frozen=True)
class _Decoded:
    pixels: np.ndarray | None
    sha256: str | None
    error: str | None


def _decode(path: Path, size: int, max_pixels: int) -> _Decoded:
    try:
        pixels = load_image(path, size, max_pixels)
    except ImageError as exc:
        return _Decoded(None, None, str(exc))
    return _Decoded(pixels, sha256_file(path), None)


def _class_dirs(raw_dir: Path, splits: tuple[str, ...], label: str) -> list[Path]:
    """The existing `<split>/<label>` folders of `splits`, matched as `scan` matches them."""
    return [d for s in splits if (parent := _find_dir(raw_dir, s)) and (d := _find_dir(parent, label))]


def _require_both_classes(raw_dir: Path, frame: pd.DataFrame, ok: np.ndarray) -> None:
    """Refuse a training pool, or an official test split, that lacks a readable class.

    A model that never sees a class still trains and scores (its AUC is merely undefined), so
    this is caught here, where the folder can be named. An empty official val/ class folder
    only warns: val/ is merged into the training pool.
    """
    pools = {"train": ("train", "val")}
    if _find_dir(raw_dir, "test") is not None:
        pools["test"] = ("test",)
    for split, official in pools.items():
        for label in LABELS:
            files = frame["official_split"].isin(official).to_numpy() & (frame["label"] == label).to_numpy()
            folders = _class_dirs(raw_dir, official, label)
            if (files & ok).any():
                for folder in folders:
                    if not (frame["path"].str.startswith(folder.relative_to(raw_dir).as_posix() + "/")).any():
                        log.warning("prepare: %s is empty", folder)
                continue
            if not folders:
                where, why = raw_dir / split / label, "is missing"
            else:
                where = " and ".join(str(f) for f in folders)
                why = (
                    "is empty"
                    if not files.any()
                    else f"has no readable image (all {int(files.sum())} left out: see the warnings above)"
                )
            raise ValueError(
                f"prepare: {where} {why}: the {split} split needs both {LABELS[0]} and {LABELS[1]} "
                f"images (a model that never sees {label} can neither learn it nor be scored on it)"
            )


def _require_classes_in_splits(frame: pd.DataFrame) -> None:
    """Refuse splits that came out of carving or leak removal without one of the classes."""
    for split in SPLITS:
        labels = set(frame.loc[frame["split"] == split, "label"])
        for label in LABELS:
            if label not in labels:
                raise ValueError(
                    f"prepare: the {split} split has no {label} images (too few {label} patients to carve "
                    f"it, or all left out as duplicates of test images): add {label} images to train/{label}"
                )


def _warn_unnamed(frame: pd.DataFrame) -> None:
    """Say how many files have no patient id in their name: those cannot be grouped by patient."""
    kept = frame["split"].isin(SPLITS)
    unnamed = kept & ~frame["named_patient"]
    if unnamed.any():
        per_split = {s: int((unnamed & (frame["split"] == s)).sum()) for s in SPLITS}
        log.warning(
            "prepare: %d of %d images have no patient id in their file name (per split: %s): each counts as "
            "its own patient, so the splits cannot be grouped by patient for them (images of one child may "
            "land on both sides)",
            int(unnamed.sum()),
            int(kept.sum()),
            per_split,
        )


def _group_ids(frame: pd.DataFrame) -> pd.Series:
    """Connected components of 'same patient' and 'same bytes': what must stay on one side."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for pid, digest in zip(frame["patient"], frame["sha256"]):
        a, b = find(f"p:{pid}"), find(f"h:{digest}")
        if a != b:
            parent[a] = b
    return frame["patient"].map(lambda pid: find(f"p:{pid}"))


def _carve(frame: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a patient-grouped, label-stratified `fraction` of `frame`."""
    n_splits = max(2, round(1.0 / fraction))
    y = (frame["label"] == LABELS[1]).to_numpy()
    groups = frame["group"].to_numpy()
    if len(set(groups)) < n_splits:
        raise ValueError(f"prepare: only {len(set(groups))} patient groups; cannot carve a {fraction:.0%} split")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(folds.split(np.zeros(len(frame)), y, groups))
    mask = np.zeros(len(frame), dtype=bool)
    mask[held] = True
    return mask


def assign_splits(frame: pd.DataFrame, params: PrepareParams) -> tuple[pd.DataFrame, str]:
    """Add `split`: official test kept when present, else carved; validation carved from train."""
    frame = frame.copy()
    frame["group"] = _group_ids(frame)
    frame["split"] = np.where(frame["official_split"] == "test", "test", "train")
    test_source = "official" if (frame["split"] == "test").any() else "carved"

    if test_source == "official":
        # A group that reaches the official test split leaves train: no leak through duplicates.
        test_groups = set(frame.loc[frame["split"] == "test", "group"])
        leaked = (frame["split"] == "train") & frame["group"].isin(test_groups)
        frame.loc[leaked, "split"] = "dropped:leak"
    else:
        train = frame["split"] == "train"
        mask = _carve(frame[train], params.test_fraction, params.seed)
        frame.loc[frame.index[train][mask], "split"] = "test"

    train = frame["split"] == "train"
    # Share of what is left, so val_fraction stays a fraction of the original train pool.
    remaining = params.val_fraction / (1.0 - (params.test_fraction if test_source == "carved" else 0.0))
    mask = _carve(frame[train], remaining, params.seed + 1)
    frame.loc[frame.index[train][mask], "split"] = "val"
    return frame, test_source


def prepare(
    raw_dir: str | Path, out_dir: str | Path, data: DataParams, params: PrepareParams, workers: int = 2
) -> dict:
    """Run the stage: write manifest.csv, images_<split>.npy and prepare.json into `out_dir`."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if paths_overlap(raw_dir, out_dir):
        # The output folder is replaced whole: overlapping the raw data would delete it.
        raise ValueError(
            f"prepare: output folder {out_dir} overlaps the raw data folder {raw_dir}: "
            "they must be apart (not the same, neither inside the other)"
        )
    frame = scan(raw_dir)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(
            pool.map(lambda p: _decode(raw_dir / p, data.image_size, params.max_image_pixels), frame["path"])
        )
    frame["sha256"] = [d.sha256 for d in decoded]
    errors = [d.error for d in decoded if d.error]
    for message in errors:
        log.warning("prepare: left out %s", message)
    ok = np.array([d.error is None for d in decoded])
    _require_both_classes(raw_dir, frame, ok)
    good = frame[ok].copy()
    pixels = [d.pixels for d in decoded if d.error is None]

    # Identical bytes under two labels cannot both be right: leave every copy out.
    labels_per_hash = good.groupby("sha256")["label"].nunique()
    conflicting = set(labels_per_hash[labels_per_hash > 1].index)
    keep = ~good["sha256"].isin(conflicting).to_numpy()
    good, pixels = good[keep], [p for p, k in zip(pixels, keep) if k]
    good = good.reset_index(drop=True)

    good, test_source = assign_splits(good, params)
    _require_classes_in_splits(good)
    _warn_unnamed(good)
    dup_sizes = good.groupby("sha256").size()
    summary = {
        "raw_dir": str(raw_dir),
        "synthetic": (raw_dir / SYNTHETIC_MARKER).exists(),
        "image_size": data.image_size,
        "test_source": test_source,
        "counts": {
            split: {label: int(((good["split"] == split) & (good["label"] == label)).sum()) for label in LABELS}
            for split in SPLITS
        },
        "patients": {split: int(good.loc[good["split"] == split, "patient"].nunique()) for split in SPLITS},
        "unreadable": errors,
        "duplicate_groups": int((dup_sizes > 1).sum()),
        "duplicate_files": int(dup_sizes[dup_sizes > 1].sum()),
        "conflicting_label_files": int((~keep).sum()),
        "dropped_for_leak": int((good["split"] == "dropped:leak").sum()),
        "unnamed_patients": int((~good["named_patient"]).sum()),
        "data_fingerprint": sha256_json(sorted(zip(good["path"], good["sha256"]))),
        "params": {"data": as_dict(data), "prepare": as_dict(params)},
    }
    try:
        with atomic_dir(out_dir) as tmp:
            manifest = good.drop(columns=["named_patient"])
            for split in SPLITS:
                index = np.flatnonzero((good["split"] == split).to_numpy())
                stack = (
                    np.stack([pixels[i] for i in index])
                    if len(index)
                    else np.zeros((0, data.image_size, data.image_size), np.uint8)
                )
                np.save(tmp / f"images_{split}.npy", stack)
                manifest.loc[good.index[index], "row"] = np.arange(len(index))
            manifest["row"] = manifest["row"].fillna(-1).astype(int)
            manifest.to_csv(tmp / MANIFEST, index=False)
            write_json(tmp / PREPARE_SUMMARY, summary)
    except OSError as exc:  # a full disk, mostly: atomic_dir swaps in only a complete folder
        raise OSError(
            f"prepare: could not write {out_dir} ({exc.strerror or exc}); "
            f"the previous contents of {out_dir} are left as they were"
        ) from exc
    log.info("prepare: %s", {s: summary["counts"][s] for s in SPLITS})
    return summary
