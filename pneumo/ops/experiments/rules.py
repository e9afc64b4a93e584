"""The selection rule: which recorded run validation chooses, and what each lever did.

Pre-registered in experiments/preregistration.md: recipes, not single runs, compared on
validation only. A recipe is a run's params with the seed removed; recipes with at least
`MIN_RUNS` runs are compared on the mean over their runs of the mean ROC-AUC over the shifted
copies of validation that no compared recipe trains on (`TRAINED_SHIFTS`: noise augmentation
trains on the noise copy). Recipes within the tie width (the largest spread between two runs of
one compared recipe, at least `FIRST_TIE`) tie, and the highest mean balanced accuracy at each
run's clean operating threshold under the same shifts wins. The shipped model is the chosen
recipe's run at the default seed. Until some recipe has `MIN_RUNS` runs, the single-run rule
(`select_run`) decides. Test figures are never used to choose.

`default` below is today's params.yaml, flat (`record.default_params`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pneumo.core.tables import lookup_number
from pneumo.ops.experiments.record import SHIFT

# Params that do not change what is trained or scored: never listed as a difference.
# The answer's policy (calibration, refer band, input gate) and its out-of-distribution set are chosen after
# the model: temperature scaling is monotone, so no ranking or threshold figure the experiments compare moves.
POLICY_PARAMS = ("oodset.", "evaluate.calibration", "evaluate.refer_coverage", "evaluate.ood_keep")
IGNORED_PARAMS = ("gate.", "schedule.", "report.", "export.", "data.raw_dir", "data.prepared_dir", *POLICY_PARAMS)
# Another draw of the same recipe, not a lever: runs that differ in these alone are replicates. A seed
# picks the draw; deterministic kernels make the draw repeatable without changing what is trained.
SEEDS = ("train.seed", "train.deterministic")
FIRST_TIE = 0.002  # the tie width first committed, before any replicate was scored under shift
MIN_RUNS = 3  # runs (seeds) a recipe needs before the comparison ranks it
# Shifted copies of validation (`pneumo/stages/shift.py`) that a training param produces itself when
# its value is truthy: a run trained with it would be scored there on its own training distribution.
TRAINED_SHIFTS: dict[str, tuple[str, ...]] = {"train.augment.noise": ("noise_10",)}
# Params moved together count as one lever.
LEVER_GROUPS = {
    f"train.augment.{k}": "augmentation strength" for k in ("rotation", "zoom", "translation", "contrast", "brightness")
}
EFFECTS = (
    ("val AUC", "val.roc_auc"),
    ("val shift AUC", f"{SHIFT}.roc_auc"),
    ("test AUC", "test.roc_auc"),
    ("test acc", "test.at_operating.accuracy"),
    ("test spec", "test.at_operating.specificity"),
)
REPLICATE = "(none: replicate)"


def trains(key: str) -> bool:
    """Whether a param changes what is trained or scored."""
    return not key.startswith(IGNORED_PARAMS)


def changes(params: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    """The params of a run that differ from `default` (both flat), ignoring non-training ones.

    A key the run's params.yaml did not have is unknown (None): a difference, until its value
    is filled in the record (`record.fill_params`).
    """
    keys = sorted(k for k in {*params, *default} if trains(k))
    return {k: params.get(k) for k in keys if k not in default or params.get(k) != default[k]}


def figures(rec: dict) -> dict:
    """The run's metrics, with `val_shift` from the record when the run's own file predates it."""
    if SHIFT in rec["metrics"] or SHIFT not in rec:
        return rec["metrics"]
    return {**rec["metrics"], SHIFT: rec[SHIFT]}


def recipe(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A run's recipe, as a hashable key: its training params, seeds aside."""
    return tuple(sorted((k, _hashable(v)) for k, v in params.items() if trains(k) and k not in SEEDS))


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def replicate_spread(records: list[dict]) -> float | None:
    """The largest difference in shifted validation ROC-AUC between two runs of the same params
    (replicates, seeds aside): how far apart chance alone puts two runs on the selection metric."""
    gaps = [
        abs(row["delta"]["val shift AUC"])
        for row in effects(records)
        if row["lever"] == REPLICATE and row["delta"]["val shift AUC"] is not None
    ]
    return max(gaps) if gaps else None


def tie_width(records: list[dict]) -> float:
    """Differences within the replicate spread are not evidence: they tie (never below FIRST_TIE)."""
    return max(FIRST_TIE, replicate_spread(records) or 0.0)


def select_run(records: list[dict], tie: float | None = None) -> dict | None:
    """The single-run rule. Validation only: highest mean ROC-AUC under simulated shift; among runs
    within `tie` of it (default: `tie_width`, the replicate spread), the highest mean balanced
    accuracy at the run's operating threshold under the same shifts."""
    tie = tie_width(records) if tie is None else tie
    auc, balanced = f"{SHIFT}.roc_auc", f"{SHIFT}.balanced_accuracy"
    scored = [r for r in records if lookup_number(figures(r), auc) is not None]
    if not scored:
        return None
    top = max(lookup_number(figures(r), auc) for r in scored)
    close = [r for r in scored if lookup_number(figures(r), auc) >= top - tie]
    return max(close, key=lambda r: lookup_number(figures(r), balanced) or 0.0)


def trained_shifts(params: dict[str, Any]) -> set[str]:
    """The shifted copies this run's training augmentation produces itself."""
    return {s for key, shifts in TRAINED_SHIFTS.items() if params.get(key) for s in shifts}


def shift_names(records: Iterable[dict]) -> list[str]:
    """Every shifted copy of validation some run was scored on, in the order the metrics name them
    (the evaluate stage writes the set `pneumo/stages/shift.py` defines)."""
    names: dict[str, None] = {}
    for rec in records:
        names.update(dict.fromkeys((figures(rec).get(SHIFT) or {}).get("perturbations") or {}))
    return list(names)


def shift_scores(rec: dict, shifts: Iterable[str]) -> tuple[float, float] | None:
    """The run's mean ROC-AUC and mean balanced accuracy over `shifts`; None if any is unscored."""
    per = (figures(rec).get(SHIFT) or {}).get("perturbations") or {}
    rows = [per.get(s) or {} for s in shifts]
    if not rows or any(r.get("roc_auc") is None or r.get("balanced_accuracy") is None for r in rows):
        return None
    return (sum(r["roc_auc"] for r in rows) / len(rows), sum(r["balanced_accuracy"] for r in rows) / len(rows))


def compare_recipes(records: list[dict], default: dict[str, Any], min_runs: int = MIN_RUNS) -> dict | None:
    """The pre-registered comparison (experiments/preregistration.md), validation only.

    Runs count when they were scored on every shifted copy any run was scored on. Returns None
    until some recipe has `min_runs` such runs; else `shifts` (the held-out ones), `tie`, `recipes`
    (best first: `recipe`, `runs`, `roc_auc`, `balanced_accuracy`, their means over the runs, and
    `spread`), `chosen` (one of them) and `shipped` (its run at the default seed, the latest such;
    None if it has none).
    """
    every = shift_names(records)
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        if "params" in rec and shift_scores(rec, every) is not None:
            groups.setdefault(recipe(rec["params"]), []).append(rec)
    eligible = {key: runs for key, runs in groups.items() if len(runs) >= min_runs}
    trained = {s for runs in eligible.values() for r in runs for s in trained_shifts(r["params"])}
    shifts = [s for s in every if s not in trained]
    if not eligible or not shifts:
        return None
    rows = []
    for key, runs in eligible.items():
        aucs, bals = zip(*(shift_scores(r, shifts) for r in runs))
        rows.append(
            {
                "recipe": key,
                "runs": runs,
                "roc_auc": sum(aucs) / len(aucs),
                "balanced_accuracy": sum(bals) / len(bals),
                "spread": max(aucs) - min(aucs),
            }
        )
    rows.sort(key=lambda r: -r["roc_auc"])
    tie = max(FIRST_TIE, max(r["spread"] for r in rows))
    chosen = max((r for r in rows if r["roc_auc"] >= rows[0]["roc_auc"] - tie), key=lambda r: r["balanced_accuracy"])
    at_seed = at_default_seed(chosen["runs"], default)
    return {
        "shifts": shifts,
        "tie": tie,
        "recipes": rows,
        "chosen": chosen,
        "shipped": at_seed[-1] if at_seed else None,
    }


def at_default_seed(runs: list[dict], default: dict[str, Any]) -> list[dict]:
    """The runs trained with the default seed (the one `dvc repro` reproduces the params of)."""
    return [r for r in runs if all(r["params"].get(k) == default.get(k) for k in SEEDS)]


def select(records: list[dict], default: dict[str, Any]) -> dict | None:
    """The run validation chooses: the shipped run of the recipe comparison once it can be made,
    else `select_run`."""
    comparison = compare_recipes(records, default)
    if comparison is not None and comparison["shipped"] is not None:
        return comparison["shipped"]
    return select_run(records)


def best_on_test(records: list[dict]) -> dict | None:
    """The run with the highest test ROC-AUC: reported beside the choice, never used to make it."""
    scored = [r for r in records if lookup_number(r["metrics"], "test.roc_auc") is not None]
    return max(scored, key=lambda r: lookup_number(r["metrics"], "test.roc_auc")) if scored else None


def levers(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[str]]:
    """The levers two runs' params differ in: lever -> keys. A seed is listed under "seed" but is
    not a lever (see `effects`)."""
    out: dict[str, list[str]] = {}
    for k in sorted(k for k in {*a, *b} if trains(k)):
        if a.get(k) != b.get(k):
            out.setdefault("seed" if k in SEEDS else LEVER_GROUPS.get(k, k.removeprefix("train.")), []).append(k)
    return out


def effects(records: list[dict]) -> list[dict]:
    """Every pair of runs that differ in exactly one lever (or in none: replicates, which measure
    run-to-run noise; a seed alone is no lever), with the change in each figure from the first run
    to the second."""
    rows = []
    records = [r for r in records if "params" in r]
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            diff = levers(a["params"], b["params"])
            seeds = diff.pop("seed", [])
            if len(diff) > 1:
                continue
            lever, keys = next(iter(diff.items()), (REPLICATE, []))
            delta = {}
            for heading, dotted in EFFECTS:
                x, y = lookup_number(figures(a), dotted), lookup_number(figures(b), dotted)
                delta[heading] = None if x is None or y is None else y - x
            change = "; ".join(
                f"{k.removeprefix('train.')} {a['params'].get(k)} → {b['params'].get(k)}" for k in [*keys, *seeds]
            )
            rows.append({"lever": lever, "change": change, "runs": (a["name"], b["name"]), "delta": delta})
    return sorted(rows, key=lambda r: (r["lever"].startswith("("), r["lever"]))
