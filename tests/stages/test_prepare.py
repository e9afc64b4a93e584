"""prepare: Kaggle layout in; checked, patient-grouped, leak-free splits and image caches out."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pneumo.core.cache import load_split
from pneumo.core.config import DataParams, PrepareParams
from pneumo.core.constants import LABELS, SPLITS
from pneumo.core.images import load_image
from pneumo.core.paths import MANIFEST
from pneumo.core.paths import PREPARE_SUMMARY as SUMMARY
from pneumo.stages.prepare import patient_id, prepare
from support import REAL_DATA, needs_real_data, tiny_params

SIZE = 32
DATA = DataParams(image_size=SIZE)
PARAMS = PrepareParams(val_fraction=0.15, test_fraction=0.15, seed=42)


# --------------------------------------------------------------------------- helpers


class Tree:
    """Writes tiny, all-distinct JPEGs into a Kaggle-layout folder."""

    def __init__(self, root: Path, lower: bool = False):
        self.root = root
        self.lower = lower
        self._seed = 0

    def folder(self, split: str, label: str) -> Path:
        folder = self.root / (split.lower() if self.lower else split) / (label.lower() if self.lower else label)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def image(self, split: str, label: str, name: str, side: int = SIZE) -> Path:
        self._seed += 1
        noise = np.random.default_rng(self._seed).integers(0, 256, (side, side), dtype=np.uint8)
        path = self.folder(split, label) / name
        Image.fromarray(noise, mode="L").save(path, quality=90)
        return path

    def patients(self, split: str, label: str, ids, per_patient: int = 2) -> list[Path]:
        paths = []
        for pid in ids:
            for k in range(1, per_patient + 1):
                name = (
                    f"IM-{pid:04d}-{k:04d}.jpeg" if label == "NORMAL" else f"person{pid}_bacteria_{pid * 10 + k}.jpeg"
                )
                paths.append(self.image(split, label, name))
        return paths


def _kaggle(root: Path, *, normal=12, pneumonia=28, test=False, lower=False) -> Tree:
    tree = Tree(root, lower=lower)
    tree.patients("train", "NORMAL", range(1, normal + 1))
    tree.patients("train", "PNEUMONIA", range(1, pneumonia + 1))
    if test:
        tree.patients("test", "NORMAL", range(500, 505))
        tree.patients("test", "PNEUMONIA", range(500, 508))
    return tree


def _manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / MANIFEST)


def _kept(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest[manifest["split"].isin(SPLITS)]


def _assert_no_patient_across_splits(manifest: pd.DataFrame) -> None:
    kept = _kept(manifest)
    per_patient = kept.groupby("patient")["split"].nunique()
    assert (per_patient == 1).all(), per_patient[per_patient > 1]
    # Patients as read from the file names, independently of the manifest's own column.
    names = kept["path"].map(lambda p: patient_id(Path(p).name))
    origin = np.where(kept["official_split"] == "test", "test", "train")
    by_name = pd.DataFrame({"who": [f"{o}:{n}" for o, n in zip(origin, names)], "split": kept["split"]})
    assert (by_name.groupby("who")["split"].nunique() == 1).all()


def _assert_caches_match(out: Path, raw: Path, summary: dict, size: int = SIZE) -> None:
    manifest = _manifest(out)
    for split in SPLITS:
        images, labels, rows = load_split(out, split)
        expected = manifest[manifest["split"] == split]
        assert np.load(out / f"images_{split}.npy").shape == (len(expected), size, size)
        assert len(images) == len(expected) == sum(summary["counts"][split].values())
        assert images.dtype == np.uint8
        assert sorted(rows["path"]) == sorted(expected["path"])
        np.testing.assert_array_equal(labels, (rows["label"] == "PNEUMONIA").to_numpy().astype(int))
        # The cached pixels are the decoded file, in manifest row order.
        for i in range(0, len(rows), max(1, len(rows) // 4)):
            np.testing.assert_array_equal(images[i], load_image(raw / rows["path"][i], size))


# --------------------------------------------------------------------------- patient_id


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("person12_bacteria_3.jpeg", "person12"),
        ("person1_virus_6.jpeg", "person1"),
        ("PERSON7_virus_1.jpeg", "person7"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("NORMAL2-IM-1234-0001.jpeg", "NORMAL2-IM-1234"),
        ("normal2-im-1234-0001.jpeg", "NORMAL2-IM-1234"),
        ("scan_0001.jpeg", None),
        ("personX_bacteria_3.jpeg", None),
        ("IM0115-0001.jpeg", None),
    ],
)
def test_patient_id(name, expected):
    assert patient_id(name) == expected


def test_patient_id_same_child_same_id():
    assert patient_id("person3_bacteria_10.jpeg") == patient_id("person3_virus_11.jpeg")
    assert patient_id("person3_bacteria_10.jpeg") != patient_id("person33_bacteria_10.jpeg")
    assert patient_id("IM-0001-0001.jpeg") == patient_id("IM-0001-0002.jpeg")


# --------------------------------------------------------------------------- carved test, bad files


@pytest.fixture(scope="module")
def carved(tmp_path_factory):
    """Train only, imbalanced, with unreadable files and byte-identical copies."""
    root = tmp_path_factory.mktemp("carved")
    raw = root / "raw"
    tree = _kaggle(raw)
    bad = {}
    empty = tree.folder("train", "NORMAL") / "IM-0900-0001.jpeg"
    empty.write_bytes(b"")
    bad["empty"] = empty
    text = tree.folder("train", "PNEUMONIA") / "person900_virus_1.jpeg"
    text.write_text("not an image at all\n" * 10)
    bad["text"] = text
    big = tree.image("train", "PNEUMONIA", "person901_virus_1.jpeg", side=128)
    data = big.read_bytes()
    big.write_bytes(data[: len(data) // 2])
    bad["truncated"] = big
    notes = tree.folder("train", "NORMAL") / "notes.txt"
    notes.write_text("readme")
    bad["non_image"] = notes
    # Byte-identical copies under another (unrelated) patient's name.
    copies = []
    for i, (label, src) in enumerate(
        [
            ("NORMAL", "IM-0001-0001.jpeg"),
            ("NORMAL", "IM-0005-0002.jpeg"),
            ("PNEUMONIA", "person2_bacteria_21.jpeg"),
            ("PNEUMONIA", "person9_bacteria_91.jpeg"),
            ("PNEUMONIA", "person20_bacteria_201.jpeg"),
        ]
    ):
        folder = tree.folder("train", label)
        name = f"IM-07{i:02d}-0001.jpeg" if label == "NORMAL" else f"person7{i:02d}_virus_1.jpeg"
        shutil.copyfile(folder / src, folder / name)
        copies.append((f"train/{label}/{src}", f"train/{label}/{name}"))
    out = root / "prepared"
    summary = prepare(raw, out, DATA, PARAMS)
    return {"raw": raw, "out": out, "summary": summary, "bad": bad, "copies": copies}


def test_carved_unreadable_reported_and_left_out(carved):
    summary, manifest = carved["summary"], _manifest(carved["out"])
    assert len(summary["unreadable"]) == len(carved["bad"])
    for kind, path in carved["bad"].items():
        assert sum(str(path) in message for message in summary["unreadable"]) == 1, kind
        assert path.relative_to(carved["raw"]).as_posix() not in set(manifest["path"])
    good_files = 12 * 2 + 28 * 2 + len(carved["copies"])
    assert len(manifest) == good_files
    assert sum(sum(c.values()) for c in summary["counts"].values()) == good_files


def test_carved_test_source(carved):
    summary = carved["summary"]
    assert summary["test_source"] == "carved"
    assert summary["synthetic"] is False
    assert all(sum(summary["counts"][s].values()) > 0 for s in SPLITS)
    saved = pd.read_json(carved["out"] / SUMMARY, typ="series")
    assert saved["test_source"] == "carved"


def test_carved_duplicates_share_split(carved):
    manifest = _manifest(carved["out"]).set_index("path")
    for original, copy in carved["copies"]:
        assert manifest.loc[original, "sha256"] == manifest.loc[copy, "sha256"]
        assert manifest.loc[original, "split"] == manifest.loc[copy, "split"], (original, copy)
        assert manifest.loc[original, "patient"] != manifest.loc[copy, "patient"]
    assert carved["summary"]["duplicate_groups"] == len(carved["copies"])
    assert carved["summary"]["duplicate_files"] == 2 * len(carved["copies"])


def test_carved_duplicates_pull_whole_patient_along(carved):
    # A copy ties two patients together: all images of both stay on one side.
    manifest = _manifest(carved["out"])
    for original, copy in carved["copies"]:
        patients = manifest.loc[manifest["path"].isin([original, copy]), "patient"]
        assert manifest.loc[manifest["patient"].isin(patients), "split"].nunique() == 1


def test_carved_no_patient_across_splits(carved):
    _assert_no_patient_across_splits(_manifest(carved["out"]))


def test_carved_splits_stratified_and_sized(carved):
    manifest = _kept(_manifest(carved["out"]))
    overall = (manifest["label"] == "PNEUMONIA").mean()
    for split in ("val", "test"):
        part = manifest[manifest["split"] == split]
        assert set(part["label"]) == set(LABELS), split
        assert abs((part["label"] == "PNEUMONIA").mean() - overall) < 0.15, split
        assert 0.08 <= len(part) / len(manifest) <= 0.25, split


def test_carved_caches_match_manifest(carved):
    _assert_caches_match(carved["out"], carved["raw"], carved["summary"])


def test_load_split_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / MANIFEST)):
        load_split(tmp_path, "train")


def test_stale_cache_refused(carved, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(carved["out"], out)
    np.save(out / "images_val.npy", np.zeros((1, SIZE, SIZE), np.uint8))
    with pytest.raises(ValueError, match="stale"):
        load_split(out, "val")


def test_prepare_is_deterministic(carved, tmp_path):
    again = prepare(carved["raw"], tmp_path / "again", DATA, PARAMS)
    assert again["data_fingerprint"] == carved["summary"]["data_fingerprint"]
    first = _manifest(carved["out"]).set_index("path")["split"]
    second = _manifest(tmp_path / "again").set_index("path")["split"]
    pd.testing.assert_series_equal(first.sort_index(), second.sort_index())


# --------------------------------------------------------------------------- official val/ and test/


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    raw = root / "raw"
    tree = _kaggle(raw, test=True)
    # Official val/: new patients, plus one image of a training patient (person3).
    val_files = tree.patients("val", "NORMAL", range(300, 304), per_patient=1)
    val_files += tree.patients("val", "PNEUMONIA", range(300, 304), per_patient=1)
    val_files.append(tree.image("val", "PNEUMONIA", "person3_virus_99.jpeg"))
    # A training image copied into test/ under a test patient's name: a leak to be removed.
    leak_src = raw / "train" / "PNEUMONIA" / "person5_bacteria_51.jpeg"
    shutil.copyfile(leak_src, raw / "test" / "PNEUMONIA" / "person600_virus_1.jpeg")
    out = root / "prepared"
    summary = prepare(raw, out, DATA, PARAMS)
    return {"raw": raw, "out": out, "summary": summary, "val_files": val_files}


def test_official_test_kept(official):
    summary, manifest = official["summary"], _manifest(official["out"])
    assert summary["test_source"] == "official"
    test_rows = manifest[manifest["split"] == "test"]
    assert (test_rows["official_split"] == "test").all()
    assert len(test_rows) == 5 * 2 + 8 * 2 + 1
    assert summary["counts"]["test"] == {"NORMAL": 10, "PNEUMONIA": 17}
    assert set(manifest.loc[manifest["official_split"] == "test", "split"]) == {"test"}


def test_official_test_leak_dropped_from_train(official):
    summary, manifest = official["summary"], _manifest(official["out"])
    person5 = manifest[manifest["path"].str.contains("/person5_")]
    assert len(person5) == 2
    assert set(person5["split"]) == {"dropped:leak"}
    assert summary["dropped_for_leak"] == 2
    assert (person5["row"] == -1).all()
    _assert_no_patient_across_splits(manifest)


def test_official_val_merged_into_pool(official):
    summary, manifest = official["summary"], _manifest(official["out"])
    pool_files = 12 * 2 + 28 * 2 + len(official["val_files"]) - 2  # person5 left for the leak
    trainval = sum(summary["counts"]["train"].values()) + sum(summary["counts"]["val"].values())
    assert trainval == pool_files
    from_val = manifest[manifest["official_split"] == "val"]
    assert len(from_val) == len(official["val_files"])
    # Carved, not copied: the val split is a fraction of the pool, drawn mostly from train/...
    val_rows = manifest[manifest["split"] == "val"]
    assert 0.08 <= len(val_rows) / pool_files <= 0.25
    assert (val_rows["official_split"] == "train").any()
    # ...and official val/ images land in train as well as (possibly) val.
    assert "train" in set(from_val["split"])
    # The val/ image of training patient person3 stays with person3's training images.
    person3 = manifest[manifest["path"].str.contains("/person3_")]
    assert len(person3) == 3 and person3["split"].nunique() == 1
    assert person3["patient"].nunique() == 1


def test_official_caches_match_manifest(official):
    _assert_caches_match(official["out"], official["raw"], official["summary"])


# --------------------------------------------------------------------------- layout variants and failures


def test_lower_case_folders_found(tmp_path):
    raw = tmp_path / "raw"
    _kaggle(raw, normal=8, pneumonia=8, test=True, lower=True)
    assert (raw / "train" / "normal").is_dir() and not (raw / "train" / "NORMAL").exists()
    summary = prepare(raw, tmp_path / "out", DATA, PARAMS)
    assert summary["test_source"] == "official"
    assert sum(summary["counts"]["train"].values()) + sum(summary["counts"]["val"].values()) == 32
    assert summary["counts"]["test"] == {"NORMAL": 10, "PNEUMONIA": 16}
    manifest = _manifest(tmp_path / "out")
    assert set(manifest["label"]) == set(LABELS)
    for path, label in zip(manifest["path"], manifest["label"]):
        assert path.split("/")[1] == label.lower()
        assert (raw / path).is_file()


def test_conflicting_duplicates_dropped(tmp_path):
    raw = tmp_path / "raw"
    tree = _kaggle(raw, normal=10, pneumonia=10)
    src = raw / "train" / "NORMAL" / "IM-0004-0001.jpeg"
    dst = tree.folder("train", "PNEUMONIA") / "person800_virus_1.jpeg"
    shutil.copyfile(src, dst)
    summary = prepare(raw, tmp_path / "out", DATA, PARAMS)
    manifest = _manifest(tmp_path / "out")
    assert summary["conflicting_label_files"] == 2
    assert "train/NORMAL/IM-0004-0001.jpeg" not in set(manifest["path"])
    assert "train/PNEUMONIA/person800_virus_1.jpeg" not in set(manifest["path"])
    assert "train/NORMAL/IM-0004-0002.jpeg" in set(manifest["path"])  # the patient's other image stays
    assert len(manifest) == 40 - 1


def test_images_over_max_pixels_left_out(tmp_path):
    raw = tmp_path / "raw"
    tree = _kaggle(raw, normal=8, pneumonia=8)
    big = tree.image("train", "NORMAL", "IM-0950-0001.jpeg", side=40)  # 1600 pixels
    summary = prepare(raw, tmp_path / "out", DATA, PrepareParams(max_image_pixels=1500))
    assert len(summary["unreadable"]) == 1
    assert str(big) in summary["unreadable"][0] and "40x40" in summary["unreadable"][0]
    assert sum(sum(c.values()) for c in summary["counts"].values()) == 32


def test_missing_raw_dir_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        prepare(missing, tmp_path / "out", DATA, PARAMS)
    assert not (tmp_path / "out").exists()


def _existing_output(out: Path) -> None:
    out.mkdir()
    (out / MANIFEST).write_text("previous manifest\n")
    (out / "images_train.npy").write_bytes(b"previous")


def _assert_untouched(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "images_train.npy"])
    assert (out / MANIFEST).read_text() == "previous manifest\n"
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_failed_prepare_without_train_leaves_output_intact(tmp_path):
    raw = tmp_path / "raw"
    Tree(raw).patients("test", "NORMAL", range(1, 4))
    out = tmp_path / "out"
    _existing_output(out)
    with pytest.raises(FileNotFoundError, match=str(raw)):
        prepare(raw, out, DATA, PARAMS)
    _assert_untouched(out)


def test_failed_prepare_empty_raw_leaves_output_intact(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    out = tmp_path / "out"
    _existing_output(out)
    with pytest.raises(FileNotFoundError, match="no images"):
        prepare(raw, out, DATA, PARAMS)
    _assert_untouched(out)


def test_too_few_patients_refused_and_output_intact(tmp_path):
    raw = tmp_path / "raw"
    _kaggle(raw, normal=1, pneumonia=2)
    out = tmp_path / "out"
    _existing_output(out)
    with pytest.raises(ValueError, match="patient groups"):
        prepare(raw, out, DATA, PARAMS)
    _assert_untouched(out)


def test_successful_prepare_replaces_old_output(tmp_path):
    raw = tmp_path / "raw"
    _kaggle(raw, normal=8, pneumonia=8)
    out = tmp_path / "out"
    _existing_output(out)
    prepare(raw, out, DATA, PARAMS)
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, SUMMARY] + [f"images_{s}.npy" for s in SPLITS])
    assert "previous" not in (out / MANIFEST).read_text()


# --------------------------------------------------------------------------- synthetic and real data


def test_prepare_synthetic(synthetic_raw, tmp_path):
    params = tiny_params()
    summary = prepare(synthetic_raw, tmp_path / "out", params.data, params.prepare)
    assert summary["synthetic"] is True
    assert summary["test_source"] == "official"
    assert summary["image_size"] == 96
    assert summary["counts"]["test"] == {"NORMAL": 10, "PNEUMONIA": 10}
    assert sum(summary["counts"]["train"].values()) + sum(summary["counts"]["val"].values()) == 60
    _assert_caches_match(tmp_path / "out", synthetic_raw, summary, size=96)
    _assert_no_patient_across_splits(_manifest(tmp_path / "out"))


@pytest.mark.slow
@needs_real_data
def test_prepare_real_data(tmp_path):
    reference = pd.read_csv(REAL_DATA / "MANIFEST.csv")
    labels_per_hash = reference.groupby("sha256")["label"].nunique()
    conflicting = reference["sha256"].isin(labels_per_hash[labels_per_hash > 1].index)
    expected_pool = int(((reference["split"] != "test") & ~conflicting).sum())
    expected_test = reference[(reference["split"] == "test") & ~conflicting]

    summary = prepare(REAL_DATA, tmp_path / "out", DataParams(image_size=224), PrepareParams())
    counts = summary["counts"]
    pool = sum(counts["train"].values()) + sum(counts["val"].values())
    assert summary["unreadable"] == []
    assert summary["test_source"] == "official"
    assert pool == expected_pool - summary["dropped_for_leak"]
    assert pool == 5216 - summary["conflicting_label_files"]
    assert counts["test"] == dict(expected_test["label"].value_counts().reindex(list(LABELS)).items())
    assert counts["test"] == {"NORMAL": 117, "PNEUMONIA": 195}
    assert 0.12 <= sum(counts["val"].values()) / pool <= 0.18
    manifest = _manifest(tmp_path / "out")
    _assert_no_patient_across_splits(manifest)
    # The sha256 the stage computed agrees with the published manifest.
    merged = manifest.merge(reference, on="path", suffixes=("", "_ref"))
    assert len(merged) == len(manifest)
    assert (merged["sha256"] == merged["sha256_ref"]).all()
    images, _, _ = load_split(tmp_path / "out", "test")
    assert images.shape == (312, 224, 224)


# --------------------------------------------------------------------------- refusals: classes, overlap, disk


def _refused(raw: Path, tmp_path: Path, *words: str) -> str:
    """prepare refuses `raw` with a message holding `words`; the earlier output is left as it was."""
    out = tmp_path / "out"
    _existing_output(out)
    with pytest.raises(ValueError) as info:
        prepare(raw, out, DATA, PARAMS)
    message = str(info.value)
    for word in words:
        assert word in message, message
    _assert_untouched(out)
    return message


def test_empty_class_folder_refused_naming_it(tmp_path):
    raw = tmp_path / "raw"
    _kaggle(raw, normal=0)
    tree = Tree(raw)
    tree.folder("train", "NORMAL")  # there, but empty
    _refused(raw, tmp_path, str(raw / "train" / "NORMAL"), "is empty", "train split", "NORMAL")


def test_missing_class_folder_refused_naming_it(tmp_path):
    raw = tmp_path / "raw"
    _kaggle(raw, pneumonia=0)
    _refused(raw, tmp_path, str(raw / "train" / "PNEUMONIA"), "is missing")


def test_wholly_unreadable_class_refused(tmp_path, caplog):
    raw = tmp_path / "raw"
    tree = _kaggle(raw, normal=0)
    for k in range(4):
        (tree.folder("train", "NORMAL") / f"IM-{k:04d}-0001.jpeg").write_text("not a picture\n")
    message = _refused(raw, tmp_path, "train/NORMAL", "no readable image", "all 4 left out")
    assert "IM-0000" not in message  # the folder is named, the files were named in the warnings
    assert sum("left out" in r.getMessage() for r in caplog.records) == 4


def test_official_test_missing_a_class_refused(tmp_path):
    raw = tmp_path / "raw"
    tree = _kaggle(raw)
    tree.patients("test", "PNEUMONIA", range(500, 508))
    _refused(raw, tmp_path, str(raw / "test" / "NORMAL"), "is missing", "the test split")


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_carved_split_without_a_class_refused(tmp_path):
    raw = tmp_path / "raw"
    tree = _kaggle(raw, normal=1, pneumonia=28, test=True)  # one NORMAL child: it cannot be in train and val
    assert len(list(tree.folder("train", "NORMAL").iterdir())) == 2
    _refused(raw, tmp_path, "split has no NORMAL images")


def test_empty_official_val_class_only_warns(tmp_path, caplog):
    raw = tmp_path / "raw"
    tree = _kaggle(raw, normal=8, pneumonia=8)
    tree.patients("val", "PNEUMONIA", range(300, 302))
    tree.folder("val", "NORMAL")
    summary = prepare(raw, tmp_path / "out", DATA, PARAMS)
    assert all(summary["counts"][s]["NORMAL"] > 0 for s in SPLITS)
    assert any(
        str(raw / "val" / "NORMAL") in r.getMessage() and "empty" in r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING"
    )


def test_garbage_scan_jpeg_left_out_and_reported(tmp_path):
    raw = tmp_path / "raw"
    tree = _kaggle(raw, normal=8, pneumonia=8)
    victim = tree.folder("train", "NORMAL") / "IM-0003-0001.jpeg"
    data = victim.read_bytes()
    sos = data.index(b"\xff\xda")
    victim.write_bytes(data[: sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")] + b"\xff\xd9")  # header only
    summary = prepare(raw, tmp_path / "out", DATA, PARAMS)
    assert len(summary["unreadable"]) == 1 and str(victim) in summary["unreadable"][0]
    assert "train/NORMAL/IM-0003-0001.jpeg" not in set(_manifest(tmp_path / "out")["path"])


def test_unnamed_patients_are_warned_about_without_names(tmp_path, caplog):
    raw = tmp_path / "raw"
    tree = _kaggle(raw, normal=8, pneumonia=8)
    for k in range(3):
        tree.image("train", "PNEUMONIA", f"scan_{k:04d}.jpeg")
    summary = prepare(raw, tmp_path / "out", DATA, PARAMS)
    assert summary["unnamed_patients"] == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("3 of 35 images have no patient id" in w and "cannot be grouped by patient" in w for w in warnings)
    assert not any("scan_" in w for w in warnings)  # counts only: file names can carry patient data


def test_named_patients_give_no_unnamed_warning(tmp_path, caplog):
    raw = tmp_path / "raw"
    _kaggle(raw, normal=8, pneumonia=8)
    assert prepare(raw, tmp_path / "out", DATA, PARAMS)["unnamed_patients"] == 0
    assert not any("patient id" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("where", ["same", "inside_raw", "holds_raw"])
def test_output_overlapping_raw_data_refused_and_raw_kept(tmp_path, where):
    raw = tmp_path / "data" / "raw"
    _kaggle(raw, normal=8, pneumonia=8)
    before = sorted(p.relative_to(raw) for p in raw.rglob("*"))
    out = {"same": raw, "inside_raw": raw / "prepared", "holds_raw": tmp_path / "data"}[where]
    with pytest.raises(ValueError, match="overlaps the raw data folder") as info:
        prepare(raw, out, DATA, PARAMS)
    assert str(out) in str(info.value) and str(raw) in str(info.value)
    assert sorted(p.relative_to(raw) for p in raw.rglob("*")) == before


def test_full_disk_gives_one_line_and_keeps_the_earlier_output(tmp_path, monkeypatch):
    import errno

    import pneumo.stages.prepare as prepare_mod

    raw = tmp_path / "raw"
    _kaggle(raw, normal=8, pneumonia=8)
    out = tmp_path / "out"
    _existing_output(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepare_mod, "write_json", full)  # the last write, after the caches
    with pytest.raises(OSError) as info:
        prepare(raw, out, DATA, PARAMS)
    message = str(info.value)
    assert "\n" not in message and str(out) in message and "No space left on device" in message
    assert "left as they were" in message
    assert info.value.__cause__.errno == errno.ENOSPC
    _assert_untouched(out)
