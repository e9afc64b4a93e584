"""The promotion gate: a challenger replaces the champion only if it is not worse beyond a tolerance.

Pure comparison of two metrics.json dicts (no Prefect, no TensorFlow), plus the champion
folder's file operations: it is read, and on promotion replaced as a whole by one rename, so a
refused challenger leaves every byte of it as it was.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumo.config import GateParams
from pneumo.io import atomic_dir

DEFAULT_METRICS = GateParams().metrics
DEFAULT_TOLERANCE = GateParams().tolerance
# Where a lower number is better (by the metric's last dotted component).
LOWER_IS_BETTER = frozenset({"brier", "loss", "fp", "fn"})

CHAMPION_DIR = "champion"
METRICS_FILE = "metrics.json"
PROVENANCE_FILE = "champion.json"
# What a champion holds and where the pipeline writes the challenger's copy (workspace-relative).
CHAMPION_SOURCES = {"model.h5": "models/model.h5", "model_card.json": "models/model_card.json",
                    METRICS_FILE: "eval/metrics.json"}


def lookup(metrics: dict, dotted: str) -> float | None:
    """`metrics["test"]["at_operating"]["recall"]` for "test.at_operating.recall"; None if absent."""
    node: Any = metrics
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return None
    return float(node)


def lower_is_better(dotted: str) -> bool:
    return dotted.rsplit(".", 1)[-1] in LOWER_IS_BETTER


@dataclass(frozen=True)
class Row:
    metric: str
    champion: float | None
    challenger: float | None
    change: float | None  # challenger - champion
    worse_by: float | None  # how much worse the challenger is (negative: better)
    ok: bool


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    tolerance: float
    rows: list[Row] = field(default_factory=list)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.ok]

    def as_dict(self) -> dict:
        return {"promote": self.promote, "reason": self.reason, "tolerance": self.tolerance,
                "rows": [r.__dict__ for r in self.rows]}

    def table(self) -> list[dict]:
        """Rows for a table artifact (strings, so missing numbers read as "-")."""
        return [{"metric": r.metric + (" (lower is better)" if lower_is_better(r.metric) else ""),
                 "champion": _fmt(r.champion), "challenger": _fmt(r.challenger), "change": _fmt(r.change, True),
                 "verdict": "ok" if r.ok else ("missing in the challenger" if r.challenger is None
                                               else f"worse by {r.worse_by:.4f} > {self.tolerance}")}
                for r in self.rows]

    def markdown(self) -> str:
        head = f"**{'PROMOTED' if self.promote else 'REFUSED'}**: {self.reason}\n\n"
        lines = ["| metric | champion | challenger | change | verdict |", "|---|---:|---:|---:|---|"]
        lines += [f"| {t['metric']} | {t['champion']} | {t['challenger']} | {t['change']} | {t['verdict']} |"
                  for t in self.table()]
        return head + "\n".join(lines) + "\n"


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def compare(challenger: dict, champion: dict | None, metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS,
            tolerance: float = DEFAULT_TOLERANCE) -> Decision:
    """Promote unless some gated metric is worse than the champion's by more than `tolerance`.

    No champion: promote. A metric the challenger lacks (or has as null) fails; one the champion
    lacks passes (nothing to compare against).
    """
    if not metrics:
        raise ValueError("gate.metrics: empty; name at least one metric (e.g. test.roc_auc)")
    if not 0 <= tolerance < 1:
        raise ValueError(f"gate.tolerance = {tolerance!r}: expected a number in [0, 1)")
    rows = []
    for name in metrics:
        new = lookup(challenger, name)
        old = lookup(champion, name) if champion is not None else None
        if new is None:
            rows.append(Row(name, old, None, None, None, False))
            continue
        if old is None:
            rows.append(Row(name, None, new, None, None, True))
            continue
        worse_by = (new - old) if lower_is_better(name) else (old - new)
        rows.append(Row(name, old, new, new - old, worse_by, worse_by <= tolerance + 1e-12))
    if champion is None:
        missing = [r.metric for r in rows if r.challenger is None]
        if missing:
            return Decision(False, f"no champion yet, but the challenger lacks {', '.join(missing)}", tolerance, rows)
        return Decision(True, "no champion yet: the first model is promoted", tolerance, rows)
    bad = [r for r in rows if not r.ok]
    if bad:
        what = ", ".join(f"{r.metric} " + ("missing" if r.challenger is None else
                                            f"{r.champion:.4f} -> {r.challenger:.4f}") for r in bad)
        return Decision(False, f"worse than the champion beyond tolerance {tolerance}: {what}", tolerance, rows)
    return Decision(True, f"not worse than the champion beyond tolerance {tolerance} on {len(rows)} metric(s)",
                    tolerance, rows)


def read_champion(champion_dir: str | Path) -> dict | None:
    """The champion's metrics, or None when there is no champion yet."""
    path = Path(champion_dir) / METRICS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def promote(workspace: str | Path, champion_dir: str | Path = CHAMPION_DIR, provenance: dict | None = None) -> Path:
    """Replace the champion folder with the workspace's challenger files, in one rename.

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
        info = {"promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                **(provenance or {})}
        (tmp / PROVENANCE_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
    return target
