"""report: an offline HTML page and a markdown twin of what the pipeline measured.

Reads only files the stages wrote (eval/metrics.json, eval/predictions.csv,
models/train/history.csv, the model card and the prepared test images) and writes
`index.html`, `report.md` and `figures/*.png` into one folder. Figures are matplotlib PNGs
(Agg) referenced by relative path; no script, font or style is fetched from anywhere, so the
page renders offline. Every number shown is read from those files, not typed here, and so is
what the data was (synthetic, the official test split or a carved one): prepare's summary,
the metrics and the card say it. On request (`single_file`) `report.html` is written too: the
same page with every figure inlined as a data: URI, one file to mail or attach.

"Safe answers" (what the four decisions mean, the policy chosen on validation, calibration with
a reliability diagram, the referral and rejection rates with the figures among the images
answered, the out-of-distribution set) is shown where metrics.json holds those figures; an older
metrics file gives the page without it.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window: before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn import metrics as skm  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402

from pneumo.core import paths  # noqa: E402
from pneumo.core.cache import data_statement, load_split  # noqa: E402
from pneumo.core.constants import LABELS  # noqa: E402
from pneumo.core.decision import GATE_CANNOT_CATCH, REFER_MEANING, REJECTED_MEANING, sigmoid  # noqa: E402
from pneumo.core.images import to_rgb  # noqa: E402
from pneumo.core.io import atomic_dir, read_json  # noqa: E402
from pneumo.core.overlay import overlay  # noqa: E402
from pneumo.core.tables import fmt, lookup, markdown_table  # noqa: E402

log = logging.getLogger(__name__)

FIGURES = "figures"
SINGLE_FILE = paths.REPORT_SINGLE_FILE
SYNTHETIC_BANNER = "SYNTHETIC demo data: these numbers say nothing about chest X-rays."
ASSISTIVE = "Assistive heat maps, not a diagnosis: each must be read by a qualified person."
SPLIT_NAMES = {"val": "validation", "test": "test"}
THRESHOLD_FIGURES = (
    ("accuracy", "Accuracy"),
    ("recall", "Sensitivity"),
    ("specificity", "Specificity"),
    ("precision", "Precision"),
    ("f1", "F1"),
)
RANKING_FIGURES = (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("brier", "Brier score"))
NO_CARD_LIMITS = GATE_CANNOT_CATCH
GROUPS = (
    ("tp", "True positives (PNEUMONIA, called PNEUMONIA)"),
    ("fp", "False positives (NORMAL, called PNEUMONIA)"),
    ("fn", "False negatives (PNEUMONIA, called NORMAL)"),
)


def metric_rows(metrics: dict) -> list[tuple[str, dict[str, str | None]]]:
    """(row name, {column: dotted key into metrics.json or None}) for the metrics table."""
    t = metrics["operating_threshold"]
    rows = []
    for key, name in RANKING_FIGURES:
        rows.append((name, {"val": f"val/{key}", "test": f"test/{key}", "ci": f"test/ci95/at_operating/{key}"}))
    for key, name in THRESHOLD_FIGURES:
        rows.append(
            (
                f"{name} at {t:.3f}",
                {
                    "val": f"val/at_operating/{key}",
                    "test": f"test/at_operating/{key}",
                    "ci": f"test/ci95/at_operating/{key}",
                },
            )
        )
    for key, name in THRESHOLD_FIGURES[:3]:
        rows.append((f"{name} at 0.5", {"val": f"val/at_0.5/{key}", "test": f"test/at_0.5/{key}", "ci": None}))
    return rows


def describe_data(metrics: dict, card: dict | None, prep: dict | None) -> dict[str, Any]:
    """{"synthetic", "statement", "warning"} from prepare's summary, the metrics and the card.

    Synthetic if any of them says so: a demo model must never pass for a real one.
    """
    synthetic = any(
        bool(source and source.get(key))
        for source, key in ((prep, "synthetic"), (metrics, "synthetic"), (card, "synthetic_data"))
    )
    test_source = next(
        (
            src
            for src in (
                (prep or {}).get("test_source"),
                metrics.get("test_source"),
                lookup(card or {}, "metrics/test_source", sep="/"),
            )
            if src
        ),
        None,
    )
    warning = ((card or {}).get("warning") or SYNTHETIC_BANNER) if synthetic else None
    return {"synthetic": synthetic, "statement": data_statement(synthetic, test_source), "warning": warning}


# ---- figures -------------------------------------------------------------------------------------


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"{FIGURES}/{path.name}"


def fig_metrics(metrics: dict, out: Path) -> str:
    keys = [k for k, _ in RANKING_FIGURES[:2]] + [k for k, _ in THRESHOLD_FIGURES]
    names = [n for _, n in RANKING_FIGURES[:2]] + [n for _, n in THRESHOLD_FIGURES]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    x = np.arange(len(keys))
    for offset, split, colour in ((-0.15, "val", "tab:blue"), (0.15, "test", "tab:orange")):
        if split not in metrics:
            continue
        vals = [
            lookup(metrics, f"{split}/{k}" if k in ("roc_auc", "pr_auc") else f"{split}/at_operating/{k}", sep="/")
            for k in keys
        ]
        ys = np.array([np.nan if v is None else v for v in vals], float)
        ci = [lookup(metrics, f"{split}/ci95/at_operating/{k}", sep="/") for k in keys]
        err = np.array([[y - c[0], c[1] - y] if c else [0, 0] for y, c in zip(ys, ci)], float).T
        ax.errorbar(
            x + offset,
            ys,
            yerr=np.clip(err, 0, None) if split == "test" else None,
            fmt="o",
            color=colour,
            capsize=4,
            label=SPLIT_NAMES[split] + (" (95% CI)" if split == "test" else ""),
        )
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"At the operating threshold {metrics['operating_threshold']:.3f}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _save(fig, out / "metrics.png")


def fig_curves(pred: pd.DataFrame, metrics: dict, out: Path) -> dict[str, str]:
    bins = int(lookup(metrics, "params/calibration_bins", sep="/") or 10)
    figs = {name: plt.subplots(figsize=(4.6, 4.2)) for name in ("roc", "pr", "calibration")}
    for split, part in pred.groupby("split", sort=False):
        y = (part["label"] == LABELS[1]).to_numpy().astype(int)
        p = part["probability"].to_numpy()
        if len(np.unique(y)) < 2:
            continue
        name = SPLIT_NAMES.get(split, split)
        fpr, tpr, _ = skm.roc_curve(y, p)
        figs["roc"][1].plot(fpr, tpr, label=f"{name} (AUC {fmt(lookup(metrics, f'{split}/roc_auc', sep='/'))})")
        precision, recall, _ = skm.precision_recall_curve(y, p)
        figs["pr"][1].plot(recall, precision, label=f"{name} (AP {fmt(lookup(metrics, f'{split}/pr_auc', sep='/'))})")
        frac, mean = calibration_curve(y, p, n_bins=bins, strategy="uniform")
        figs["calibration"][1].plot(
            mean, frac, "o-", label=f"{name} (Brier {fmt(lookup(metrics, f'{split}/brier', sep='/'))})"
        )
    labels = {
        "roc": ("False positive rate", "Sensitivity", "ROC"),
        "pr": ("Recall (sensitivity)", "Precision", "Precision-recall"),
        "calibration": ("Mean predicted probability", "Fraction PNEUMONIA", f"Calibration ({bins} bins)"),
    }
    paths = {}
    for name, (fig, ax) in figs.items():
        if name != "pr":
            ax.plot([0, 1], [0, 1], ":", color="grey")
        xl, yl, title = labels[name]
        ax.set(xlabel=xl, ylabel=yl, title=title, xlim=(-0.01, 1.01), ylim=(-0.01, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if name != "pr" else "lower left")
        paths[name] = _save(fig, out / f"{name}.png")
    return paths


def fig_confusion(metrics: dict, out: Path) -> str:
    splits = [s for s in ("val", "test") if s in metrics]
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.8), squeeze=False)
    for ax, split in zip(axes[0], splits):
        m = metrics[split]["at_operating"]
        grid = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        ax.imshow(grid, cmap="Blues")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(
                j, i, str(v), ha="center", va="center", fontsize=14, color="white" if v > grid.max() / 2 else "black"
            )
        ax.set_xticks([0, 1], [f"called {LABELS[0]}", f"called {LABELS[1]}"])
        ax.set_yticks([0, 1], LABELS)
        ax.set_title(f"{SPLIT_NAMES[split]} at {metrics['operating_threshold']:.3f}")
    return _save(fig, out / "confusion.png")


def fig_training(history: pd.DataFrame, out: Path) -> str:
    pairs = [(k, f"val_{k}") for k in ("loss", "auc", "accuracy") if k in history and f"val_{k}" in history]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.4 * len(pairs), 3.6), squeeze=False)
    for ax, (train_key, val_key) in zip(axes[0], pairs):
        ax.plot(history["epoch"], history[train_key], "o-", label=f"train {train_key}")
        ax.plot(history["epoch"], history[val_key], "s-", label=f"validation {train_key}")
        if "phase" in history:
            for phase, part in history.groupby("phase", sort=False):
                if phase == "finetune":
                    ax.axvspan(
                        part["epoch"].min() - 0.5,
                        part["epoch"].max() + 0.5,
                        color="grey",
                        alpha=0.12,
                        label="fine-tuning",
                    )
        ax.set(xlabel="epoch", title=train_key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out / "training.png")


def reliability_bins(y: np.ndarray, p: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean probability, observed PNEUMONIA rate and image count of each non-empty equal-width bin
    (the bins the evaluate stage's ECE uses)."""
    keep = np.isfinite(p)
    y, p = np.asarray(y, np.float64)[keep], np.clip(np.asarray(p, np.float64)[keep], 0.0, 1.0)
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    full = count > 0
    mean = np.bincount(which, weights=p, minlength=bins)[full] / count[full]
    rate = np.bincount(which, weights=y, minlength=bins)[full] / count[full]
    return mean, rate, count[full]


def fig_reliability(pred: pd.DataFrame, metrics: dict, out: Path) -> str:
    """Per split, observed PNEUMONIA rate against mean predicted probability: calibrated (solid) and
    uncalibrated, sigmoid(logit) (dashed); marker area follows the bin's image count."""
    bins = int(lookup(metrics, "calibration/bins", sep="/") or 10)
    splits = [s for s in SPLIT_NAMES if (pred["split"] == s).any()]
    fig, axes = plt.subplots(1, len(splits), figsize=(4.6 * len(splits), 4.4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        part = pred[pred["split"] == split]
        y = (part["label"] == LABELS[1]).to_numpy()
        series = [("calibrated", part["probability"].to_numpy(float), "-", "tab:blue")]
        if "logit" in part:
            series.append(("uncalibrated", sigmoid(part["logit"].to_numpy(float)), "--", "tab:orange"))
        for name, p, style, colour in series:
            mean, rate, count = reliability_bins(y, p, bins)
            ax.plot(mean, rate, style, color=colour, label=name)
            ax.scatter(mean, rate, s=15 + 250 * count / max(1, count.max()), color=colour, alpha=0.5)
        ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
        ece = fmt(lookup(metrics, f"calibration/{split}/ece", sep="/"))
        raw = fmt(lookup(metrics, f"calibration/{split}/ece_uncalibrated", sep="/"))
        ax.set(
            xlabel="Mean predicted probability",
            ylabel="Observed PNEUMONIA rate",
            title=f"{SPLIT_NAMES[split]}: ECE {ece} (uncalibrated {raw})",
            xlim=(-0.01, 1.01),
            ylim=(-0.01, 1.02),
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, title=f"{bins} bins; marker area: images", title_fontsize=8)
    return _save(fig, out / "reliability.png")


def select_cases(test: pd.DataFrame, threshold: float, per_group: int) -> dict[str, pd.DataFrame]:
    """The most confident true positives and false positives, and the most missed false negatives."""
    y, p = test["label"] == LABELS[1], test["probability"]
    called = p >= threshold
    return {
        "tp": test[y & called].sort_values("probability", ascending=False).head(per_group),
        "fp": test[~y & called].sort_values("probability", ascending=False).head(per_group),
        "fn": test[y & ~called].sort_values("probability", ascending=True).head(per_group),
    }


def fig_gradcam(
    model_path: Path,
    prepared_dir: Path,
    pred: pd.DataFrame,
    threshold: float,
    per_group: int,
    out: Path,
    warning: str | None = None,
) -> tuple[str, dict[str, int]]:
    # inside: TensorFlow loads only when heat maps are drawn (a report with none never loads it)
    from pneumo.nn.gradcam import gradcam
    from pneumo.nn.model import load

    images, _, rows = load_split(prepared_dir, "test")
    test = pred[pred["split"] == "test"].reset_index(drop=True)
    # evaluate writes the test rows in cache order: row i is images[i].
    if list(test["path"]) != list(rows["path"]):
        raise ValueError(
            f"report: eval/predictions.csv test rows do not match {prepared_dir} (manifest "
            "order): the predictions are stale, rerun `dvc repro evaluate`"
        )
    cases = select_cases(test, threshold, per_group)
    model = load(model_path)
    cols = max(1, per_group)
    fig, axes = plt.subplots(len(GROUPS), cols, figsize=(2.4 * cols, 2.7 * len(GROUPS)), squeeze=False)
    for r, (key, title) in enumerate(GROUPS):
        chosen = cases[key]
        heat = gradcam(model, to_rgb(images[chosen.index.to_numpy()])) if len(chosen) else []
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(chosen):
                i = chosen.index[c]
                ax.imshow(overlay(images[i], heat[c]))
                p = test.loc[i, "probability"]
                ax.set_title(f"{key.upper()}: called {LABELS[int(p >= threshold)]}\np = {p:.3f}", fontsize=9)
            elif c == 0:
                ax.text(
                    0.5,
                    0.5,
                    f"no {title.split(' (')[0].lower()}",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    fontsize=9,
                )
    fig.suptitle(f"Grad-CAM on the test split (threshold {threshold:.3f})")
    fig.text(0.5, 0.0, ASSISTIVE, ha="center", va="top", fontsize=10)
    if warning:
        fig.text(0.5, -0.03, f"WARNING: {warning}", ha="center", va="top", fontsize=10, color="#c00", fontweight="bold")
    metadata = {"Description": ASSISTIVE, **({"Warning": warning} if warning else {})}
    fig.savefig(out / "gradcam.png", dpi=110, bbox_inches="tight", metadata=metadata)
    plt.close(fig)
    return f"{FIGURES}/gradcam.png", {k: int(len(v)) for k, v in cases.items()}


# ---- the safe answers section --------------------------------------------------------------------
# Built once as blocks of text pieces that know which metrics.json value they show; the markdown
# and the HTML page are two renderings of the same blocks.


@dataclass(frozen=True)
class Shown:
    """A piece of text; `key` is the metrics.json path (sep "/") of the value it shows, as a
    fraction, or with `percent` as 100 times it with a % sign."""

    text: str
    key: str | None = None
    percent: bool = False


Cell = tuple[Shown, ...]
Block = tuple[str, Any]  # ("h3", title), ("p", Cell), ("table", (head, rows, align)), ("figure", (key, caption))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def shown(metrics: dict, key: str, percent: bool = False) -> Shown:
    """The value at `key` as text ("n/a" where absent); a [low, high] pair as "low–high"."""
    value = lookup(metrics, key, sep="/")
    if value is None:
        return Shown("n/a")
    if isinstance(value, list):
        text = f"{_pct(value[0])}–{_pct(value[1])}%" if percent else f"{fmt(value[0])}–{fmt(value[1])}"
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        text = f"{_pct(value)}%" if percent else fmt(value)
    return Shown(text, key, percent)


def with_ci(metrics: dict, key: str, ci_key: str | None, percent: bool = False) -> Cell:
    """The value, and its 95% interval in brackets where metrics.json holds one."""
    if ci_key is None or not lookup(metrics, ci_key, sep="/"):
        return (shown(metrics, key, percent),)
    return (shown(metrics, key, percent), Shown(" ("), shown(metrics, ci_key, percent), Shown(")"))


def _text(text: str) -> Cell:
    return (Shown(text),)


def safe_intro(metrics: dict, cannot_catch: str | None) -> Cell:
    """What the four decisions mean, that none is a diagnosis, and what the input gate cannot catch."""
    threshold = (
        "policy/threshold" if lookup(metrics, "policy/threshold", sep="/") is not None else "operating_threshold"
    )
    return (
        Shown(
            "Every image gets one of four decisions. normal or pneumonia: the calibrated probability of PNEUMONIA "
            "is below, or at or above, the operating threshold "
        ),
        shown(metrics, threshold),
        Shown(
            f", outside the refer band. {REFER_MEANING[0].upper()}{REFER_MEANING[1:]}. "
            f"{REJECTED_MEANING[0].upper()}{REJECTED_MEANING[1:]}. Every answer is assistive, never a diagnosis: "
            f"a qualified person reads each image. {cannot_catch or NO_CARD_LIMITS}"
        ),
    )


def policy_table(metrics: dict) -> tuple[list[str], list[list[Cell]], str]:
    """What was chosen on validation (and the training split), and by which rule."""
    policy = metrics["policy"]
    calibration, refer, gate, dicom = (policy.get(k) or {} for k in ("calibration", "refer", "ood", "dicom"))
    band: Cell = (shown(metrics, "policy/refer/band"),) if refer.get("band") else _text("off")
    rows = [
        [
            _text("Operating threshold"),
            (shown(metrics, "policy/threshold"),),
            _text(policy.get("threshold_rule", "")),
        ],
        [
            _text("Calibration"),
            (Shown(f"{calibration.get('method')}, T = "), shown(metrics, "policy/calibration/temperature")),
            _text(f"fitted on {calibration.get('fitted_on')}"),
        ],
        [
            _text("Refer band"),
            band + (Shown(" at coverage "), shown(metrics, "policy/refer/coverage")),
            _text(f"{refer.get('rule')} (fitted on {refer.get('fitted_on')})"),
        ],
    ]
    if gate:
        kept = (Shown(", keeps "), shown(metrics, "policy/ood/keep"), Shown(" of validation"))
        rows.append(
            [
                _text("Input gate (image content)"),
                (Shown("rejected above "), shown(metrics, "policy/ood/threshold"), *kept),
                _text(
                    f"{gate.get('method')}; {gate.get('dims')} features, shrinkage {fmt(gate.get('shrinkage'))}; "
                    f"fitted on {gate.get('fitted_on')}, threshold on {gate.get('threshold_on')}"
                ),
            ]
        )
    else:
        rows.append([_text("Input gate (image content)"), _text("none"), _text("the model gives no features")])
    if dicom:
        listed = {k: ", ".join(map(str, dicom.get(k) or [])) or "none" for k in dicom}
        rows.append(
            [
                _text("Input gate (DICOM header)"),
                _text(
                    f"modality {listed.get('modalities')}; body part {listed.get('body_parts')}; "
                    f"lateral views rejected ({listed.get('lateral_views')})"
                ),
                _text("fixed: anything else is rejected before the model runs"),
            ]
        )
    return ["", "value", "chosen by"], rows, "lll"


def calibration_table(metrics: dict) -> tuple[list[str], list[list[Cell]], str]:
    """ECE and Brier score per split, calibrated and not."""
    keys = ("ece", "brier", "ece_uncalibrated", "brier_uncalibrated")
    rows = [
        [_text(SPLIT_NAMES[s])] + [(shown(metrics, f"calibration/{s}/{k}"),) for k in keys]
        for s in SPLIT_NAMES
        if lookup(metrics, f"calibration/{s}", sep="/")
    ]
    return ["", "ECE", "Brier", "ECE uncalibrated", "Brier uncalibrated"], rows, "lrrrr"


DECISION_COLUMNS = (
    ("referred", "answered/referral_rate", "referral_rate", True),
    ("rejected", "answered/rejection_rate", "rejection_rate", True),
    ("accuracy (answered)", "answered/accuracy", "accuracy", False),
    ("sensitivity (answered)", "answered/sensitivity", "sensitivity", False),
    ("specificity (answered)", "answered/specificity", "specificity", False),
    ("accuracy (all)", "all/accuracy", None, False),
    ("sensitivity (all)", "all/sensitivity", None, False),
    ("specificity (all)", "all/specificity", None, False),
)


def decisions_table(metrics: dict) -> tuple[list[str], list[list[Cell]], str]:
    """Per split: images, referral and rejection rates, the figures among the images answered, and
    the threshold alone over every image (test with its 95% intervals)."""
    rows = []
    for s in SPLIT_NAMES:
        if not lookup(metrics, f"decisions/{s}", sep="/"):
            continue
        d = f"decisions/{s}/"
        rows.append(
            [_text(SPLIT_NAMES[s]), (shown(metrics, d + "images"),)]
            + [with_ci(metrics, d + key, ci and d + "ci95/" + ci, pct) for _, key, ci, pct in DECISION_COLUMNS]
        )
    return ["", "images"] + [name for name, *_ in DECISION_COLUMNS], rows, "lrrrrrrrrr"


def ood_table(metrics: dict) -> tuple[list[str], list[list[Cell]], str]:
    """The out-of-distribution set per kind: images and the share rejected."""
    kinds = lookup(metrics, "ood/per_kind", sep="/") or {}
    rows = [
        [
            _text(kind),
            (shown(metrics, f"ood/per_kind/{kind}/images"),),
            (shown(metrics, f"ood/per_kind/{kind}/rejected", True),),
        ]
        for kind in kinds
    ]
    return ["kind", "images", "rejected"], rows, "lrr"


def ood_line(metrics: dict) -> Cell:
    """AUROC against validation, the overall rejection rate, by gate, and the false rejections of X-rays."""
    ood = metrics["ood"]
    parts: list[Shown] = []
    if "images" in ood:
        parts += [
            Shown("AUROC of the gate's distance against validation X-rays: "),
            shown(metrics, "ood/auroc_vs_val"),
            Shown(". Rejected: "),
            shown(metrics, "ood/rejected", True),
            Shown(" of "),
            shown(metrics, "ood/images"),
            Shown(" images ("),
            shown(metrics, "ood/errors"),
            Shown(" unreadable)"),
        ]
        for gate in ood.get("by_gate") or {}:
            rejected = shown(metrics, f"ood/by_gate/{gate}/rejected", True)
            parts += [Shown(f"; {gate} gate: "), rejected, Shown(" of "), shown(metrics, f"ood/by_gate/{gate}/images")]
        parts.append(Shown(". "))
    rates = {s: v for s, v in (ood.get("false_rejection") or {}).items() if v is not None and s in SPLIT_NAMES}
    parts.append(Shown("X-rays rejected by mistake: "))
    for i, split in enumerate(rates):
        parts += [
            Shown(", " * bool(i) + f"{SPLIT_NAMES[split]} "),
            shown(metrics, f"ood/false_rejection/{split}", True),
        ]
    parts.append(Shown("." if rates else "n/a."))
    return tuple(parts)


def safe_answers(metrics: dict, figures: dict[str, str], cannot_catch: str | None) -> list[Block]:
    """The "Safe answers" section; empty for a metrics file older than the decisions (no policy,
    calibration, decisions or out-of-distribution figures in it)."""
    if not any(key in metrics for key in ("policy", "calibration", "decisions", "ood")):
        return []
    blocks: list[Block] = [("p", safe_intro(metrics, cannot_catch))]
    if "policy" in metrics:
        blocks += [("h3", "Policy"), ("table", policy_table(metrics))]
    if "calibration" in metrics:
        blocks += [
            ("h3", "Calibration"),
            (
                "p",
                (
                    Shown("Method: "),
                    Shown(str(metrics["calibration"].get("method"))),
                    Shown("; ECE over "),
                    shown(metrics, "calibration/bins"),
                    Shown(" equal-width bins; uncalibrated: sigmoid(logit)."),
                ),
            ),
            ("table", calibration_table(metrics)),
        ]
        if "reliability" in figures:
            blocks.append(("figure", ("reliability", "Reliability: calibrated (solid), uncalibrated (dashed)")))
    if "decisions" in metrics:
        blocks += [
            ("h3", "Decisions"),
            (
                "p",
                _text(
                    "Answered: the images given a label (neither referred nor rejected). All: the operating "
                    "threshold alone on every image (refer band and input gate off). Test with patient-bootstrap "
                    "95% intervals in brackets."
                ),
            ),
            ("table", decisions_table(metrics)),
        ]
    if metrics.get("ood"):
        blocks.append(("h3", "Out-of-distribution set"))
        if lookup(metrics, "ood/per_kind", sep="/"):
            blocks.append(("table", ood_table(metrics)))
        blocks.append(("p", ood_line(metrics)))
    return blocks


def _md_cell(cell: Cell) -> str:
    return "".join(piece.text for piece in cell)


def blocks_markdown(blocks: Sequence[Block], figures: dict[str, str]) -> list[str]:
    lines: list[str] = []
    for kind, body in blocks:
        if kind == "h3":
            lines += [f"### {body}", ""]
        elif kind == "p":
            lines += [_md_cell(body), ""]
        elif kind == "table":
            head, rows, align = body
            lines += [markdown_table(head, [[_md_cell(c) for c in row] for row in rows], align), ""]
        elif kind == "figure":
            lines += [f"![{body[0]}]({figures[body[0]]})", ""]
    return lines


def _html_cell(cell: Cell) -> str:
    e = html.escape
    return "".join(
        f'<span {"data-pct-key" if p.percent else "data-key"}="{e(p.key)}">{e(p.text)}</span>' if p.key else e(p.text)
        for p in cell
    )


def blocks_html(blocks: Sequence[Block], img: Callable[[str, str], str]) -> list[str]:
    parts: list[str] = []
    for kind, body in blocks:
        if kind == "h3":
            parts.append(f"<h3>{html.escape(body)}</h3>")
        elif kind == "p":
            parts.append(f"<p>{_html_cell(body)}</p>")
        elif kind == "table":
            head, rows, _ = body
            parts.append(
                "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
            )
            parts += [
                f"<tr><th>{_html_cell(row[0])}</th>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row[1:]) + "</tr>"
                for row in rows
            ]
            parts.append("</tbody></table>")
        elif kind == "figure":
            parts.append(img(*body))
    return parts


# ---- pages ---------------------------------------------------------------------------------------


def _outputs(check: dict) -> str:
    """What a LiteRT file returns: its named outputs (older cards name one `output`)."""
    return ", ".join(check.get("outputs") or [check.get("output", "probability")])


def _auc_diff(check: dict | None) -> str:
    return "n/a" if not check or check.get("roc_auc_diff") is None else f"{check['roc_auc_diff']:+.4f}"


def _agreement(check: dict | None) -> str:
    return "n/a" if not check or "label_agreement" not in check else f"{check['label_agreement']:.1%}"


def _litert_rows(card: dict | None) -> list[dict]:
    files = (lookup(card, "litert/files", sep="/") if card else None) or {}
    return [{"kind": kind, **f} for kind, f in files.items()]


def render_markdown(
    metrics: dict,
    figures: dict[str, str],
    litert: list[dict],
    counts: dict[str, int] | None,
    sources: dict[str, str],
    data: dict[str, Any],
    safe: Sequence[Block] = (),
) -> str:
    t = metrics["operating_threshold"]
    lines = ["# pneumo report", ""]
    if data["warning"]:
        lines += [f"> **WARNING: {data['warning']}**", ""]
    lines += [
        f"Data: {data['statement']}",
        "",
        f"Operating threshold **{t:.3f}** (highest with validation sensitivity >= "
        f"{metrics.get('target_sensitivity')}). Images: "
        + ", ".join(
            f"{SPLIT_NAMES[s]} {metrics[s]['images']} ({metrics[s]['positives']} PNEUMONIA)"
            for s in ("val", "test")
            if s in metrics
        )
        + ".",
        "",
        "## Metrics",
        "",
    ]
    rows = []
    for name, keys in metric_rows(metrics):
        ci = lookup(metrics, keys["ci"], sep="/") if keys["ci"] else None
        rows.append(
            [
                name,
                fmt(lookup(metrics, keys["val"], sep="/")),
                fmt(lookup(metrics, keys["test"], sep="/")),
                f"{fmt(ci[0])}–{fmt(ci[1])}" if ci else "",
            ]
        )
    lines.append(markdown_table(["", "validation", "test", "test 95% CI"], rows))
    lines += ["", f"![metrics]({figures['metrics']})", ""]
    if safe:
        lines += ["## Safe answers", "", *blocks_markdown(safe, figures)]
    lines += ["## Curves", ""]
    lines += [f"![{k}]({figures[k]})" for k in ("roc", "pr", "calibration", "confusion")]
    lines += ["", "## Training", "", f"![training]({figures['training']})", ""]
    if litert:
        head = [
            "file",
            "MB",
            "outputs",
            "max abs diff vs Keras (val)",
            "val AUC diff",
            "test AUC diff",
            "test labels as Keras",
        ]
        rows = [
            [
                f["file"],
                f"{f['bytes'] / 1e6:.2f}",
                _outputs(f),
                f"{f['max_abs_diff']:.4f}",
                _auc_diff(f),
                _auc_diff(f.get("test")),
                _agreement(f.get("test")),
            ]
            for f in litert
        ]
        lines += ["## Deployable files", "", markdown_table(head, rows), ""]
    if "gradcam" in figures:
        lines += ["## Grad-CAM (test split)", "", f"![gradcam]({figures['gradcam']})", "", ASSISTIVE, ""]
    lines += ["---", "Generated by `pneumo report` from: " + ", ".join(f"`{v}`" for v in sources.values()), ""]
    return "\n".join(lines)


def render_html(
    metrics: dict,
    figures: dict[str, str],
    litert: list[dict],
    counts: dict[str, int] | None,
    sources: dict[str, str],
    data: dict[str, Any],
    safe: Sequence[Block] = (),
) -> str:
    e = html.escape
    t = metrics["operating_threshold"]

    def cell(key: str | None) -> str:
        if key is None:
            return "<td></td>"
        value = lookup(metrics, key, sep="/")
        if isinstance(value, list):
            return f'<td data-key="{e(key)}">{fmt(value[0])}–{fmt(value[1])}</td>'
        return f'<td data-key="{e(key)}">{fmt(value)}</td>'

    rows = "\n".join(
        f"<tr><th>{e(name)}</th>{cell(k['val'])}{cell(k['test'])}"
        f"{cell(k['ci'] if k['ci'] and lookup(metrics, k['ci'], sep='/') else None)}</tr>"
        for name, k in metric_rows(metrics)
    )

    def img(key: str, alt: str) -> str:
        return f'<figure><img src="{e(figures[key])}" alt="{e(alt)}"><figcaption>{e(alt)}</figcaption></figure>'

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>pneumo report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:1.5em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;"
        "text-align:right}th:first-child{text-align:left}img{max-width:100%}figure{display:inline-block;"
        "margin:.5em;vertical-align:top}.warn{background:#fee;border:2px solid #c00;padding:.6em}"
        "figcaption{font-size:.85em;color:#555}</style></head><body>",
        "<h1>pneumo report</h1>",
    ]
    if data["warning"]:
        parts.append(f'<p class="warn" data-role="warning"><strong>WARNING: {e(data["warning"])}</strong></p>')
    images = ", ".join(
        f'{SPLIT_NAMES[s]} <span data-key="{s}/images">{metrics[s]["images"]}</span> '
        f'(<span data-key="{s}/positives">{metrics[s]["positives"]}</span> PNEUMONIA)'
        for s in ("val", "test")
        if s in metrics
    )
    parts += [
        f'<p data-role="data">Data: {e(data["statement"])}</p>',
        f'<p>Operating threshold <strong data-key="operating_threshold">{t:.3f}</strong> (highest with '
        f"validation sensitivity &ge; {e(str(metrics.get('target_sensitivity')))}). Images: {images}.</p>",
        "<h2>Metrics</h2>",
        "<table><thead><tr><th></th><th>validation</th><th>test</th><th>test 95% CI</th></tr></thead><tbody>",
        rows,
        "</tbody></table>",
        img("metrics", "Validation and test at the operating threshold (test with 95% bootstrap intervals)"),
        *(["<h2>Safe answers</h2>", *blocks_html(safe, img)] if safe else []),
        "<h2>Curves</h2>",
        img("roc", "ROC"),
        img("pr", "Precision-recall"),
        img("calibration", "Calibration"),
        img("confusion", "Confusion matrices at the operating threshold"),
        "<h2>Training</h2>",
        img("training", "Training curves (grey: fine-tuning phase)"),
    ]
    if litert:
        parts.append(
            "<h2>Deployable files</h2><table><thead><tr><th>file</th><th>MB</th><th>outputs</th>"
            "<th>max |&Delta;p| vs Keras (val)</th><th>val AUC diff</th><th>test AUC diff</th>"
            "<th>test labels as Keras</th></tr></thead><tbody>"
        )
        for f in litert:
            parts.append(
                f"<tr><th>{e(f['file'])}</th><td>{f['bytes'] / 1e6:.2f}</td>"
                f"<td>{e(_outputs(f))}</td><td>{f['max_abs_diff']:.4f}</td>"
                f"<td>{_auc_diff(f)}</td><td>{_auc_diff(f.get('test'))}</td>"
                f"<td>{_agreement(f.get('test'))}</td></tr>"
            )
        parts.append("</tbody></table>")
    if "gradcam" in figures:
        parts += [
            "<h2>Grad-CAM (test split)</h2>",
            img(
                "gradcam",
                "Rows: true positives, false positives, false negatives"
                + (f" ({counts['tp']}, {counts['fp']}, {counts['fn']} shown)" if counts else ""),
            ),
            f"<p>{e(ASSISTIVE)}</p>",
        ]
    parts += [
        "<hr><p><small>Generated by <code>pneumo report</code> from "
        + ", ".join(f"<code>{e(v)}</code>" for v in sources.values())
        + ".</small></p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def report(
    metrics_path: str | Path = paths.METRICS,
    predictions_path: str | Path = paths.PREDICTIONS,
    history_path: str | Path = paths.HISTORY,
    prepared_dir: str | Path = "data/prepared",
    model_path: str | Path | None = paths.SHIPPED_H5,
    out_dir: str | Path = paths.REPORTS_DIR,
    card_path: str | Path | None = paths.SHIPPED_CARD,
    gradcam_per_group: int = 4,
    single_file: bool = False,
) -> dict:
    """Write index.html, report.md and figures/ into `out_dir` (replaced whole, atomically).

    With `single_file`, also report.html: the page with every figure inlined, to mail or attach.
    """
    metrics = read_json(metrics_path)
    pred = pd.read_csv(predictions_path)
    history = pd.read_csv(history_path)
    card = read_json(card_path) if card_path and Path(card_path).exists() else None
    prep_path = Path(prepared_dir) / paths.PREPARE_SUMMARY
    prep = read_json(prep_path) if prep_path.exists() else None
    data = describe_data(metrics, card, prep)
    sources = {"metrics": str(metrics_path), "predictions": str(predictions_path), "history": str(history_path)}
    with atomic_dir(out_dir) as tmp:
        fig_dir = tmp / FIGURES
        fig_dir.mkdir()
        figures = {
            "metrics": fig_metrics(metrics, fig_dir),
            **fig_curves(pred, metrics, fig_dir),
            "confusion": fig_confusion(metrics, fig_dir),
            "training": fig_training(history, fig_dir),
        }
        if "calibration" in metrics:
            figures["reliability"] = fig_reliability(pred, metrics, fig_dir)
        counts = None
        if model_path and gradcam_per_group > 0 and "test" in set(pred["split"]):
            figures["gradcam"], counts = fig_gradcam(
                Path(model_path),
                Path(prepared_dir),
                pred,
                metrics["operating_threshold"],
                gradcam_per_group,
                fig_dir,
                data["warning"],
            )
            sources["model"], sources["images"] = str(model_path), str(prepared_dir)
        if card:
            sources["card"] = str(card_path)
        if prep:
            sources["prepare"] = str(prep_path)
        litert = _litert_rows(card)
        safe = safe_answers(metrics, figures, lookup(card or {}, "decision/input_gate/cannot_catch", sep="/"))
        (tmp / paths.REPORT_MD).write_text(render_markdown(metrics, figures, litert, counts, sources, data, safe))
        (tmp / paths.REPORT_HTML).write_text(render_html(metrics, figures, litert, counts, sources, data, safe))
        if single_file:
            inlined = {key: _data_uri(tmp / rel) for key, rel in figures.items()}
            (tmp / SINGLE_FILE).write_text(render_html(metrics, inlined, litert, counts, sources, data, safe))
    log.info("report: %s", Path(out_dir) / paths.REPORT_HTML)
    return {
        "html": str(Path(out_dir) / paths.REPORT_HTML),
        "markdown": str(Path(out_dir) / paths.REPORT_MD),
        "figures": sorted(figures.values()),
        "gradcam_cases": counts,
        "data": data,
        **({"single_file": str(Path(out_dir) / SINGLE_FILE)} if single_file else {}),
    }


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
