"""package: copy the exported model into the Python package (`pneumo/assets/model/`), so that
`pip install` gives a model that answers out of the box.

What ships: the int8 LiteRT file (what `pneumo predict` and `pneumo serve` run by default), the
Keras `.h5` of the same training run (the Keras backend, and the head weights LiteRT heat maps
need), the input gate's statistics and the model card, plus a README that says where they came
from and credits the CC BY 4.0 data. Nothing is believed unchecked: every file's sha256 must be
the one the card records, and the card's metrics must be those of `eval/metrics.json`, so the
packaged card can only describe the packaged model. The folder is replaced atomically.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pneumo.core import paths
from pneumo.core.io import atomic_dir, read_json, sha256_file

PACKAGED_FILES = (paths.INT8_FILE, paths.MODEL_H5, paths.OOD_STATS_FILE, paths.MODEL_CARD)
README = "README.md"
# card["metrics"] section -> metrics.json section: the numbers the card shows must be evaluate's.
METRIC_SECTIONS = {"validation": "val", "test": "test"}
METRIC_KEYS = ("images", "roc_auc", "pr_auc", "brier")


def recorded_sha256(card: dict, name: str) -> str | None:
    """The sha256 the card records for one of its files (the .h5, the statistics, or a LiteRT file)."""
    if name in card.get("files", {}):
        return card["files"][name].get("sha256")
    for entry in card.get("litert", {}).get("files", {}).values():
        if entry.get("file") == name:
            return entry.get("sha256")
    return None


def metric_mismatches(card: dict, metrics: dict) -> list[str]:
    """Where the card's metrics differ from evaluate's (empty when the card describes these metrics)."""
    out = []
    if card.get("operating_threshold") != metrics.get("operating_threshold"):
        out.append(f"operating_threshold {card.get('operating_threshold')} != {metrics.get('operating_threshold')}")
    for card_key, metrics_key in METRIC_SECTIONS.items():
        ours, theirs = card.get("metrics", {}).get(card_key), metrics.get(metrics_key)
        if ours is None and theirs is None:
            continue
        if ours is None or theirs is None:
            out.append(f"{card_key}: present in only one of the two files")
            continue
        out += [
            f"{card_key}.{k}: {ours.get(k)} != {theirs.get(k)}" for k in METRIC_KEYS if ours.get(k) != theirs.get(k)
        ]
    return out


def readme_text(card: dict) -> str:
    """The packaged folder's README: what the files are, where they came from, whose data."""
    test = card.get("metrics", {}).get("test") or {}
    attribution = card.get("attribution", {})
    lines = [
        "# The model pneumo ships",
        "",
        "Written by `dvc repro` (stage `package`, `pneumo/stages/package.py`); do not edit.",
        "",
        f"- `{paths.INT8_FILE}`: LiteRT, int8 (what `pneumo predict` and `pneumo serve` run when no --model is given)",
        f"- `{paths.MODEL_H5}`: the Keras model of the same training run",
        f"- `{paths.OOD_STATS_FILE}`: the input gate's statistics",
        f"- `{paths.MODEL_CARD}`: the model card (operating threshold, decision policy, metrics, limits)",
        "",
        f"Synthetic training data: {str(card.get('synthetic_data')).lower()}. "
        + (
            f"Test split ({test.get('images')} images): ROC-AUC {test['roc_auc']:.3f}."
            if "roc_auc" in test
            else "No test metrics."
        ),
        "",
        "Assistive only, not a diagnosis: a qualified clinician reads every image.",
        "",
        "## Data attribution",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in attribution.items()] or [f"- {card.get('license', '')}"]
    return "\n".join(lines) + "\n"


def package(models_dir: str | Path, metrics_path: str | Path, out_dir: str | Path) -> dict:
    """Copy the checked files into `out_dir` (replaced atomically); returns {file: sha256}."""
    models_dir, out_dir = Path(models_dir), Path(out_dir)
    card_path = models_dir / paths.MODEL_CARD
    card, metrics = read_json(card_path), read_json(metrics_path)
    problems = metric_mismatches(card, metrics)
    if problems:
        raise ValueError(
            f"{card_path}: its metrics are not those of {metrics_path} ({'; '.join(problems[:3])}): "
            "re-run export before packaging"
        )
    shas: dict[str, str] = {}
    for name in PACKAGED_FILES:
        source = models_dir / name
        if not source.is_file():
            raise FileNotFoundError(f"{source}: missing (run `pneumo export`)")
        shas[name] = sha256_file(source)
        expected = recorded_sha256(card, name)
        if name != paths.MODEL_CARD and shas[name] != expected:
            raise ValueError(f"{source}: sha256 {shas[name][:12]} is not the {expected} that {card_path} records")
    with atomic_dir(out_dir) as tmp:
        for name in PACKAGED_FILES:
            shutil.copyfile(models_dir / name, Path(tmp) / name)
        (Path(tmp) / README).write_text(readme_text(card))
    return shas
