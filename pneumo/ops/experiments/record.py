"""Reading runs into the committed record: `dvc exp show` and git, into `experiments/records.json`.

DVC keeps experiments as git refs that a clone does not fetch and `dvc exp gc` removes, so the
record copies what `dvc exp show --json` reports: each run's params (its own commit's params.yaml)
and its metrics file, read whole from the run's git revision. A run is identified by the hash of
its metrics (`run_id`); records are only ever added, never lost.

A run's params are what its own params.yaml said. A key added to params.yaml after a run is absent
from its record (the rules then count it as unknown), unless it was filled once with the value
the run's code behaved as: those keys are listed in the record's `params_filled` (`fill_params`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pneumo.core.io import read_json, sha256_json, write_json
from pneumo.core.paths import METRICS
from pneumo.core.proc import CommandError, dvc_json, git
from pneumo.core.tables import flatten

RECORDS = Path("experiments") / "records.json"
SHIFT = "val_shift"  # the metrics section a run may gain after it was recorded (see `run_id`)
NOTE = (
    "written by `pneumo experiments`; one entry per scored run. `params` are the run's own "
    "params.yaml; `params_filled` lists keys added to params.yaml after the run, filled once with "
    "the value its code behaved as"
)


def _record(entry: dict, name: str | None, baseline: str | None) -> dict | None:
    data = entry.get("data") or {}
    metrics = ((data.get("metrics") or {}).get(METRICS) or {}).get("data")
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data")
    if not metrics or not params or metrics.get("synthetic") or "test" not in metrics:
        return None  # unscored, failed, or a demo run: nothing to report
    if data.get("rev") in (None, "workspace"):
        return None
    return {
        "name": name or data["rev"][:7],
        "rev": data["rev"],
        "baseline": baseline,
        "timestamp": data.get("timestamp"),
        "params": flatten(params),
        "metrics": metrics,
    }


def from_exp_show(show: list[dict]) -> list[dict]:
    """Records from `dvc exp show --json`: each baseline commit and each of its experiments."""
    records = []
    for commit in show:
        if commit.get("rev") == "workspace":
            continue
        base = _record(commit, f"commit {(commit.get('rev') or '')[:7]}", None)
        if base:
            records.append(base)
        for exp in commit.get("experiments") or []:
            if (exp.get("executor") or {}).get("state") not in (None, "success"):
                continue  # queued or running: what it shows is still the baseline's
            for rev in exp.get("revs") or []:
                rec = _record(rev, exp.get("name") or rev.get("name"), commit.get("rev"))
                if rec:
                    records.append(rec)
    return records


def run_id(metrics: dict) -> str:
    """A run's identity: the hash of its metrics, leaving out `val_shift`, which a run evaluated
    before it existed gains when its model is scored again (same model, same run)."""
    return sha256_json({k: v for k, v in metrics.items() if k != SHIFT})


def complete(repo: Path, rec: dict) -> dict:
    """The run's whole metrics file from git (`dvc exp show` drops lists, such as the 95% intervals),
    and `run`, the run's identity."""
    try:
        metrics = json.loads(git(repo, "show", f"{rec['rev']}:{METRICS}"))
    except (CommandError, ValueError):
        metrics = rec["metrics"]
    return {**rec, "metrics": metrics, "run": run_id(metrics)}


def merge(old: Iterable[dict], new: Iterable[dict]) -> list[dict]:
    """One record per run (same metrics file), in first-seen order.

    A run carried unchanged through later commits appears once, under the oldest name it had
    (`dvc exp show` lists newest first, so the new records are read oldest first).
    """
    merged: dict[str, dict] = {}
    for rec in [*old, *reversed(list(new))]:
        merged.setdefault(rec["run"], rec)
    return list(merged.values())


def record(repo: str | Path = ".", out: str | Path | None = None) -> list[dict]:
    """Add what `dvc exp show` knows to the committed record (atomically); returns all records."""
    repo = Path(repo)
    out = Path(out) if out else repo / RECORDS
    old = [{**r, "run": run_id(r["metrics"])} for r in (read_json(out)["records"] if out.exists() else [])]
    show = dvc_json(repo, "exp", "show", "--all-commits", "--no-fetch")
    new = [complete(repo, rec) for rec in from_exp_show(show if isinstance(show, list) else [])]
    return save(out, merge(old, new))


def save(path: Path, records: list[dict]) -> list[dict]:
    """Write `records` to `path` (atomically); returns them."""
    write_json(path, {"note": NOTE, "records": records})
    return records


def load(root: Path) -> list[dict]:
    """The committed record of the project at `root`."""
    path = root / RECORDS
    if not path.exists():
        raise FileNotFoundError(f"{path}: no experiment record yet (run `pneumo experiments` after `dvc exp run`)")
    return read_json(path)["records"]


def default_params(root: Path) -> dict[str, Any]:
    """Today's params.yaml at `root`, flat: what every run's changes are stated against."""
    return flatten(yaml.safe_load((root / "params.yaml").read_text()))


def fill_params(records: Iterable[dict], values: Mapping[str, Any]) -> list[dict]:
    """Records with each key of `values` they lack set to its value and listed in `params_filled`.

    For a key added to params.yaml after some runs, done once, with the value those runs' code
    behaved as; the record then never depends on today's defaults.
    """
    out = []
    for rec in records:
        missing = {k: v for k, v in values.items() if k not in rec["params"]}
        if missing:
            rec = {
                **rec,
                "params": {**rec["params"], **missing},
                "params_filled": sorted({*rec.get("params_filled", []), *missing}),
            }
        out.append(rec)
    return out
