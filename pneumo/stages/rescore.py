"""Re-scoring recorded runs: validation under simulated shift, for runs evaluated before the
evaluate stage measured it, from the model DVC cached for each run (loads Keras)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import dvc.api

from pneumo.core.config import as_dict, load_params
from pneumo.core.paths import TRAINED_MODEL
from pneumo.core.tables import flatten
from pneumo.nn.model import load
from pneumo.stages.evaluate import shifted_validation

log = logging.getLogger(__name__)
SHIFT = "val_shift"  # the metrics section evaluate writes for validation under shift


def backfill_shift(repo: Path, records: list[dict], prepared_dir: Path, model_path: str = TRAINED_MODEL) -> list[dict]:
    """Records whose metrics lack `val_shift`, scored now from the run's model in the DVC cache.

    The validation images come from `prepared_dir` (prepared with `repo`'s params.yaml); a run
    prepared with other data params is left alone, and so is a run whose model is no longer cached
    (it stays in the table, unchosen). The run's identity (`run`) and its metrics stay as they were:
    the figures are added beside them, as `val_shift`.
    """
    params = load_params(repo / "params.yaml")
    prepare = flatten({"prepare": as_dict(params.prepare), "data": {"image_size": params.data.image_size}})
    out = []
    for rec in records:
        if SHIFT in rec["metrics"] or SHIFT in rec or any(rec["params"].get(k) != v for k, v in prepare.items()):
            out.append(rec)
            continue
        try:
            data = dvc.api.read(model_path, repo=str(repo), rev=rec["rev"], mode="rb")
        except Exception as exc:  # noqa: BLE001 - any DVC failure means: this run cannot be rescored
            log.warning("experiments: %s: model not available (%s); not rescored", rec["name"], exc)
            out.append(rec)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(model_path).name
            path.write_bytes(data)
            shifted = shifted_validation(load(path), prepared_dir, rec["metrics"]["operating_threshold"])
        log.info("experiments: %s: validation under shift scored from its cached model", rec["name"])
        out.append({**rec, SHIFT: {**shifted, "source": "backfilled from the run's cached model"}})
    return out
