"""The promotion gate: a challenger replaces the champion only if, on validation, it is not worse.

Validation only: clean validation and the shifted validation the experiments choose on
(`val_shift`). Test is shown in the table as information, never judged (choosing on test every
week would leak it). Each gated metric is a non-inferiority test on a paired patient-level
bootstrap: both models' per-image validation predictions (eval/predictions.csv, which the champion
folder keeps) over the same images, resampled by patient; the metric passes when the lower end of
the one-sided 95% interval of (challenger - champion) is above -tolerance (the sign flipped where
lower is better). When the two were not scored on the same validation images (new data), or a
champion predates per-image predictions, the gate falls back to comparing the point values and
says so. A null, NaN or missing gated metric in the challenger always refuses.

No Prefect, no TensorFlow. The champion folder is replaced as a whole by one rename, so a refused
challenger leaves every byte of it as it was.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pneumo.core import paths
from pneumo.core.config import GateParams
from pneumo.core.constants import LABELS
from pneumo.core.io import atomic_dir
from pneumo.core.paths import METRICS_FILE, PREDICTIONS_FILE, SHIFT_COLUMN
from pneumo.core.tables import fmt, lookup_number, markdown_table

DEFAULT_METRICS = GateParams().metrics
DEFAULT_TOLERANCE = GateParams().tolerance
DEFAULT_BOOTSTRAP = GateParams().bootstrap
DEFAULT_SEED = GateParams().seed
# Shown beside the gated metrics, never judged.
INFO_METRICS = ("test.roc_auc", "test.pr_auc", "test.at_operating.recall", "test.at_operating.specificity")
# Where a lower number is better (by the metric's last dotted component).
LOWER_IS_BETTER = frozenset({"brier", "loss", "fp", "fn"})
CONFIDENCE = 0.95  # one-sided

CHAMPION_DIR = "champion"
PROVENANCE_FILE = "champion.json"
# The deployable set, and what the gate needs to judge the next challenger against it:
# champion file name -> where the pipeline writes the challenger's copy (workspace-relative).
CHAMPION_SOURCES = {Path(src).name: src for src in (*paths.DEPLOYABLE, paths.METRICS, paths.PREDICTIONS)}


def lower_is_better(dotted: str) -> bool:
    return dotted.rsplit(".", 1)[-1] in LOWER_IS_BETTER


# ---------------------------------------------------------------- validation predictions and the bootstrap


@dataclass(frozen=True)
class Scored:
    """One model's validation predictions: images (paths) in a fixed order, their labels and patients."""

    paths: tuple[str, ...]
    y: np.ndarray
    patients: np.ndarray
    clean: np.ndarray
    shifted: dict[str, np.ndarray]
    threshold: float


def read_predictions(predictions_csv: str | Path, threshold: float | None) -> Scored | None:
    """The validation rows of evaluate's predictions.csv, or None if the file or the threshold is absent."""
    path = Path(predictions_csv)
    if not path.is_file() or threshold is None:
        return None
    frame = pd.read_csv(path)
    val = frame[frame["split"] == "val"].sort_values("path", kind="mergesort")
    patients = val["patient"].astype("string").fillna(val["path"].astype("string"))  # unnamed: its own patient
    shift_cols = [c for c in val.columns if c.startswith(SHIFT_COLUMN) and val[c].notna().all()]
    return Scored(
        tuple(val["path"]),
        (val["label"] == LABELS[1]).to_numpy(int),
        patients.to_numpy(str),
        val["probability"].to_numpy(float),
        {c[len(SHIFT_COLUMN) :]: val[c].to_numpy(float) for c in shift_cols},
        float(threshold),
    )


def _tie_groups(p: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-p if descending else p, kind="mergesort")
    _, starts = np.unique((-p if descending else p)[order], return_index=True)
    return order, starts


def weighted_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC-AUC (ties count half) for each row of image weights `w` (B, N); NaN where a class is absent."""
    order, starts = _tie_groups(p, descending=False)
    pos = np.add.reduceat((w * (y == 1))[:, order], starts, axis=1)
    neg = np.add.reduceat((w * (y == 0))[:, order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    den = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (pos * (below + 0.5 * neg)).sum(1) / den, np.nan)


def weighted_average_precision(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision (sklearn's step definition) for each row of image weights `w` (B, N)."""
    order, starts = _tie_groups(p, descending=True)
    tp = np.cumsum(np.add.reduceat((w * (y == 1))[:, order], starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat((w * (y == 0))[:, order], starts, axis=1), axis=1)
    total = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall_step = np.diff(np.concatenate([np.zeros_like(total), tp], axis=1), axis=1) / total
        # A tie group the resample left out adds no recall (and has no precision).
        ap = np.where(recall_step > 0, recall_step * tp / (tp + fp), 0.0).sum(1)
    return np.where(total[:, 0] > 0, ap, np.nan)


def weighted_rates(y: np.ndarray, p: np.ndarray, threshold: float, w: np.ndarray) -> dict[str, np.ndarray]:
    """Threshold figures (PNEUMONIA positive, p >= threshold) for each row of image weights `w` (B, N)."""
    called = p >= threshold
    tp, fn = (w * ((y == 1) & called)).sum(1), (w * ((y == 1) & ~called)).sum(1)
    tn, fp = (w * ((y == 0) & ~called)).sum(1), (w * ((y == 0) & called)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return {
        "accuracy": (tp + tn) / w.sum(1),
        "precision": precision,
        "recall": recall,
        "specificity": specificity,
        "f1": f1,
        "balanced_accuracy": (recall + specificity) / 2,
    }


def metric_samples(name: str, s: Scored, w: np.ndarray) -> np.ndarray | None:
    """A gateable validation metric of `s` under each row of image weights (B, N); None if `s` cannot."""
    split, _, rest = name.partition(".")
    if split == "val":
        if rest == "roc_auc":
            return weighted_auc(s.y, s.clean, w)
        if rest == "pr_auc":
            return weighted_average_precision(s.y, s.clean, w)
        if rest == "brier":
            return (w * (s.clean - s.y) ** 2).sum(1) / w.sum(1)
        at, _, rate = rest.partition(".")
        if at in ("at_0.5", "at_operating"):
            return weighted_rates(s.y, s.clean, 0.5 if at == "at_0.5" else s.threshold, w).get(rate)
        return None
    if split != "val_shift" or not s.shifted:
        return None
    if rest in ("roc_auc", "worst_roc_auc"):
        aucs = np.stack([weighted_auc(s.y, p, w) for p in s.shifted.values()])
        return aucs.mean(0) if rest == "roc_auc" else aucs.min(0)
    if rest in ("recall", "specificity", "balanced_accuracy"):
        return np.stack([weighted_rates(s.y, p, s.threshold, w)[rest] for p in s.shifted.values()]).mean(0)
    return None


def patient_weights(patients: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(n, images) multiplicities of a patient-level bootstrap: each resample draws patients with replacement."""
    uniq, inverse = np.unique(patients, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq)) for _ in range(n)])
    return counts[:, inverse].astype(float)


def same_images(a: Scored, b: Scored) -> bool:
    return a.paths == b.paths and np.array_equal(a.y, b.y) and np.array_equal(a.patients, b.patients)


def lower_bound(name: str, challenger: Scored, champion: Scored, weights: np.ndarray) -> float | None:
    """Lower end of the one-sided 95% bootstrap interval of the improvement (challenger - champion,
    sign flipped where lower is better); None when either model cannot be resampled on `name`."""
    new, old = metric_samples(name, challenger, weights), metric_samples(name, champion, weights)
    if new is None or old is None:
        return None
    diff = (old - new) if lower_is_better(name) else (new - old)
    diff = diff[np.isfinite(diff)]  # a resample that lost a class has no AUC
    return float(np.quantile(diff, 1 - CONFIDENCE)) if len(diff) else None


# ---------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Row:
    metric: str
    champion: float | None
    challenger: float | None
    change: float | None  # challenger - champion
    worse_by: float | None  # how much worse the challenger's point value is (negative: better)
    ok: bool
    bound: float | None = None  # lower 95% bound of the improvement (bootstrap); None: point comparison
    gated: bool = True


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    tolerance: float
    rows: list[Row] = field(default_factory=list)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.gated and not r.ok]

    def as_dict(self) -> dict:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "tolerance": self.tolerance,
            "rows": [r.__dict__ for r in self.rows],
        }

    def _verdict(self, r: Row) -> str:
        if not r.gated:
            return "not gated (test: information only)"
        if r.challenger is None:
            return "missing in the challenger"
        if r.champion is None:
            return "ok (no champion value)"
        if r.bound is not None:
            return (
                f"{'ok' if r.ok else 'worse'}: 95% lower bound of the improvement {r.bound:+.4f} "
                f"{'>=' if r.ok else '<'} -{self.tolerance}"
            )
        return "ok" if r.ok else f"worse by {r.worse_by:.4f} > {self.tolerance}"

    def table(self) -> list[dict]:
        """Rows for a table artifact (strings, so missing numbers read as "-")."""
        return [
            {
                "metric": r.metric + (" (lower is better)" if lower_is_better(r.metric) else ""),
                "champion": fmt(r.champion, 4, missing="-"),
                "challenger": fmt(r.challenger, 4, missing="-"),
                "change": fmt(r.change, 4, signed=True, missing="-"),
                "verdict": self._verdict(r),
            }
            for r in self.rows
        ]

    def markdown(self) -> str:
        head = f"**{'PROMOTED' if self.promote else 'REFUSED'}**: {self.reason}\n\n"
        columns = ["metric", "champion", "challenger", "change", "verdict"]
        return head + markdown_table(columns, [[t[c] for c in columns] for t in self.table()], "lrrrl") + "\n"


def compare(
    challenger: dict,
    champion: dict | None,
    metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS,
    tolerance: float = DEFAULT_TOLERANCE,
    challenger_predictions: Scored | None = None,
    champion_predictions: Scored | None = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
) -> Decision:
    """Promote unless some gated metric is, beyond `tolerance`, worse than the champion's.

    With both models' validation predictions over the same images, each metric is judged on the
    paired patient bootstrap; otherwise on the point values of metrics.json (the reason says
    which). No champion: promote, unless a gated metric of the challenger is null or missing.
    """
    GateParams(tuple(metrics), tolerance, bootstrap, seed).validate("gate")
    paired = (
        challenger_predictions is not None
        and champion_predictions is not None
        and same_images(challenger_predictions, champion_predictions)
    )
    weights = patient_weights(challenger_predictions.patients, bootstrap, seed) if paired else None
    rows = []
    for name in metrics:
        new = lookup_number(challenger, name)
        old = lookup_number(champion, name) if champion is not None else None
        if new is None or old is None:
            rows.append(Row(name, old, new, None, None, new is not None))
            continue
        worse_by = (new - old) if lower_is_better(name) else (old - new)
        bound = lower_bound(name, challenger_predictions, champion_predictions, weights) if paired else None
        ok = bound >= -tolerance - 1e-12 if bound is not None else worse_by <= tolerance + 1e-12
        rows.append(Row(name, old, new, new - old, worse_by, ok, bound))
    for name in INFO_METRICS:
        new, old = lookup_number(challenger, name), lookup_number(champion, name) if champion is not None else None
        rows.append(Row(name, old, new, None if new is None or old is None else new - old, None, True, gated=False))
    gated = [r for r in rows if r.gated]
    missing = [r.metric for r in gated if r.challenger is None]
    if champion is None:
        if missing:
            return Decision(
                False,
                f"no champion yet, but the challenger lacks {', '.join(missing)} (null or "
                "missing: the model cannot be judged)",
                tolerance,
                rows,
            )
        return Decision(True, "no champion yet: the first model is promoted", tolerance, rows)
    how = _method(gated, paired, challenger_predictions, champion_predictions)
    bad = [r for r in gated if not r.ok]
    if bad:
        what = ", ".join(
            f"{r.metric} " + ("missing" if r.challenger is None else f"{r.champion:.4f} -> {r.challenger:.4f}")
            for r in bad
        )
        return Decision(False, f"worse than the champion beyond tolerance {tolerance} ({how}): {what}", tolerance, rows)
    return Decision(
        True,
        f"not worse than the champion beyond tolerance {tolerance} on {len(gated)} validation metric(s) ({how})",
        tolerance,
        rows,
    )


def _method(rows: list[Row], paired: bool, new: Scored | None, old: Scored | None) -> str:
    if not paired:
        why = (
            "the champion keeps no validation predictions"
            if old is None
            else "the challenger has no validation predictions"
            if new is None
            else "the two were scored on different validation images (new data)"
        )
        return f"point comparison: {why}"
    point = [r.metric for r in rows if r.bound is None and r.champion is not None and r.challenger is not None]
    return f"paired patient bootstrap on validation, one-sided {CONFIDENCE:.0%}" + (
        f"; point comparison for {', '.join(point)} (no per-image predictions)" if point else ""
    )


# ---------------------------------------------------------------- the champion folder


def read_champion(champion_dir: str | Path) -> dict | None:
    """The champion's metrics, or None when there is no champion yet."""
    path = Path(champion_dir) / METRICS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def judge(workspace: str | Path, champion_dir: str | Path, params: GateParams) -> Decision:
    """The workspace's challenger (eval/) against the champion folder, as `params` says."""
    workspace, champion_dir = Path(workspace), Path(champion_dir)
    new = json.loads((workspace / paths.METRICS).read_text())
    old = read_champion(champion_dir)
    return compare(
        new,
        old,
        params.metrics,
        params.tolerance,
        read_predictions(workspace / paths.PREDICTIONS, lookup_number(new, "operating_threshold")),
        read_predictions(champion_dir / PREDICTIONS_FILE, lookup_number(old or {}, "operating_threshold")),
        params.bootstrap,
        params.seed,
    )


def promote(workspace: str | Path, champion_dir: str | Path = CHAMPION_DIR, provenance: dict | None = None) -> Path:
    """Replace the champion folder with the workspace's deployable set and predictions, in one rename.

    The new folder is assembled beside the old one; the old one is moved aside and deleted only
    after the new one is in place, so a crash leaves either champion whole.
    """
    workspace = Path(workspace)
    target = Path(champion_dir) if Path(champion_dir).is_absolute() else workspace / champion_dir
    missing = [str(workspace / src) for src in CHAMPION_SOURCES.values() if not (workspace / src).is_file()]
    if missing:
        raise FileNotFoundError(f"promote: challenger files missing: {', '.join(missing)} (did export run?)")
    with atomic_dir(target) as tmp:
        for name, src in CHAMPION_SOURCES.items():
            shutil.copy2(workspace / src, tmp / name)
        info = {"promoted_at": datetime.now(UTC).isoformat(timespec="seconds"), **(provenance or {})}
        (tmp / PROVENANCE_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
    return target
