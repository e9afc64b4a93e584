"""evaluate's pure functions, checked against brute force and hand-computed figures."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from pneumo.core.config import EvaluateParams
from pneumo.core.decision import Policy, sigmoid
from pneumo.core.tables import lookup_number
from pneumo.stages.evaluate import (
    binary_metrics,
    bootstrap_intervals,
    calibration_summary,
    curves,
    decision_figures,
    decisions_summary,
    fit_policy,
    ranking_metrics,
    summarize,
    threshold_for_sensitivity,
)


def _sensitivity(y, p, t) -> float:
    return float(((p >= t) & (y == 1)).sum() / (y == 1).sum())


def _brute_force_threshold(y, p, target) -> float:
    """The highest candidate (a positive's score) whose sensitivity still reaches target."""
    candidates = sorted(set(p[y == 1].tolist()), reverse=True)
    for t in candidates:
        if _sensitivity(y, p, t) >= target - 1e-12:
            return t
    raise AssertionError("unreachable: the lowest positive score gives sensitivity 1")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 0.99])
def test_threshold_reaches_target_and_is_highest(seed, target):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    y = rng.integers(0, 2, n)
    y[0] = 1
    # Coarse rounding on some seeds, so tied scores are exercised.
    p = np.round(rng.random(n), 2 if seed % 2 else 6)
    t = threshold_for_sensitivity(y, p, target)
    assert _sensitivity(y, p, t) >= target
    higher = np.unique(p[(y == 1) & (p > t)])
    if len(higher):
        assert _sensitivity(y, p, higher.min()) < target
    assert t == _brute_force_threshold(y, p, target)


@pytest.mark.parametrize("n_pos", [1, 2, 3, 7, 10, 19, 20, 21, 100])
@pytest.mark.parametrize("target", [0.9, 0.95])
def test_threshold_exact_fractions(n_pos, target):
    # Distinct positive scores 1..n: the float rounding of (1 - target) * n must not cost a positive.
    y = np.ones(n_pos, int)
    p = np.arange(1, n_pos + 1) / (n_pos + 1)
    t = threshold_for_sensitivity(y, p, target)
    assert t == _brute_force_threshold(y, p, target)


def test_threshold_by_hand():
    y = np.array([1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.2, 0.5, 0.1])
    assert threshold_for_sensitivity(y, p, 0.75) == 0.4  # 3 of 4 positives kept
    assert threshold_for_sensitivity(y, p, 0.76) == 0.2  # needs all 4
    assert threshold_for_sensitivity(y, p, 0.5) == 0.6


def test_threshold_without_positives_refused():
    with pytest.raises(ValueError, match="no PNEUMONIA"):
        threshold_for_sensitivity(np.zeros(4, int), np.linspace(0, 1, 4), 0.9)


def test_binary_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.7, 0.3, 0.8, 0.2, 0.1, 0.5, 0.5])
    # threshold 0.5 (>=): predicted 1 at indices 0, 1, 3, 6, 7
    tp, fn, fp, tn = 3, 1, 2, 2
    m = binary_metrics(y, p, 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (tp, fn, fp, tn)
    assert m["threshold"] == 0.5
    assert m["accuracy"] == pytest.approx((tp + tn) / 8)
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert m["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


def test_binary_metrics_no_predicted_positive_is_zero_not_error():
    m = binary_metrics(np.array([0, 1, 1]), np.array([0.1, 0.2, 0.3]), 0.9)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (0, 0, 2, 1)
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["recall"] == 0.0
    assert m["specificity"] == 1.0


def _auc_by_pairs(y, p) -> float:
    pos, neg = p[y == 1], p[y == 0]
    score = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return score / (len(pos) * len(neg))


def _average_precision(y, p) -> float:
    """Sum over distinct thresholds (high to low) of (recall step) * precision."""
    ap, last_recall = 0.0, 0.0
    for t in sorted(set(p.tolist()), reverse=True):
        pred = p >= t
        tp = (pred & (y == 1)).sum()
        recall = tp / (y == 1).sum()
        ap += (recall - last_recall) * tp / pred.sum()
        last_recall = recall
    return ap


@pytest.mark.parametrize("seed", range(4))
def test_ranking_metrics_match_independent_computations(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    y[:2] = [0, 1]
    p = np.round(np.clip(0.3 * y + 0.7 * rng.random(60), 0, 1), 2)  # ties included
    m = ranking_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(_auc_by_pairs(y, p))
    assert m["pr_auc"] == pytest.approx(_average_precision(y, p))
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))


@pytest.mark.parametrize("label", [0, 1])
def test_missing_class_gives_none_auc(label):
    y = np.full(5, label)
    p = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    m = ranking_metrics(y, p)
    assert m["roc_auc"] is None and m["pr_auc"] is None
    assert m["brier"] == pytest.approx(np.mean((p - label) ** 2))


def test_bootstrap_interval_contains_point_estimate():
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    groups = np.arange(n) // 3
    ci = bootstrap_intervals(y, p, groups, 0.5, n=150, seed=1)
    point = {**binary_metrics(y, p, 0.5), **ranking_metrics(y, p)}
    for key in ("accuracy", "recall", "specificity", "roc_auc", "brier"):
        low, high = ci[key]
        assert low <= point[key] <= high, key
        assert low < high, key


def test_bootstrap_is_deterministic_and_zero_means_none():
    rng = np.random.default_rng(5)
    y, p = rng.integers(0, 2, 50), rng.random(50)
    groups = np.arange(50)
    a = bootstrap_intervals(y, p, groups, 0.5, n=15, seed=7)
    assert a == bootstrap_intervals(y, p, groups, 0.5, n=15, seed=7)
    assert a != bootstrap_intervals(y, p, groups, 0.5, n=15, seed=8)
    assert bootstrap_intervals(y, p, groups, 0.5, n=0, seed=7) == {}


def test_bootstrap_single_group_collapses_to_point():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.2, 0.6, 0.7, 0.4, 0.9, 0.1])
    ci = bootstrap_intervals(y, p, np.zeros(6, int), 0.5, n=25, seed=0)
    point = {**binary_metrics(y, p, 0.5), **ranking_metrics(y, p)}
    assert set(ci) >= {"accuracy", "roc_auc", "f1"}
    for key, (low, high) in ci.items():
        assert low == pytest.approx(point[key]) and high == pytest.approx(point[key]), key


def test_bootstrap_resamples_groups_not_images():
    # 10 patients of 20 images each; a patient's images share label and prediction, and 6 of
    # the 10 are right. Resampling patients has 10 draws of variance; images would have 200.
    rng = np.random.default_rng(3)
    y = np.repeat(np.array([0, 1] * 5), 20)
    right = np.repeat(np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])[rng.permutation(10)], 20)
    p = np.where(right == 1, np.where(y == 1, 0.9, 0.1), np.where(y == 1, 0.1, 0.9))
    patients = np.repeat(np.arange(10), 20)
    by_patient = bootstrap_intervals(y, p, patients, 0.5, n=120, seed=0)["accuracy"]
    by_image = bootstrap_intervals(y, p, np.arange(200), 0.5, n=120, seed=0)["accuracy"]
    width_patient, width_image = np.diff(by_patient)[0], np.diff(by_image)[0]
    # Normal approximation: 1.96 * 2 * sqrt(0.24 / n) -> 0.61 for 10 draws, 0.14 for 200.
    assert width_patient > 0.4
    assert width_image < 0.2


def test_curves_roc_is_monotone_and_spans_corners():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    y[:2] = [0, 1]
    p = np.clip(0.3 * y + 0.7 * rng.random(120), 0, 1)
    out = curves(y, p, bins=10)
    roc = out["roc"]
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)
    assert (roc["fpr"].iloc[0], roc["tpr"].iloc[0]) == (0.0, 0.0)
    assert (roc["fpr"].iloc[-1], roc["tpr"].iloc[-1]) == (1.0, 1.0)
    assert roc["threshold"].max() <= 1.0 and np.isfinite(roc["threshold"]).all()
    # Trapezoid area under the returned curve is the AUC.
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(_auc_by_pairs(y, p))
    pr = out["pr"]
    assert len(pr["recall"]) == len(pr["precision"]) == len(pr["threshold"])
    assert pr["recall"].between(0, 1).all() and pr["precision"].between(0, 1).all()
    cal = out["calibration"]
    assert len(cal) <= 10
    assert cal["mean_predicted"].between(0, 1).all() and cal["fraction_positive"].between(0, 1).all()
    assert np.all(np.diff(cal["mean_predicted"]) > 0)


def _predictions(rng, n_val=80, n_test=60) -> pd.DataFrame:
    rows = []
    for split, n in (("val", n_val), ("test", n_test)):
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        p = np.clip(0.4 * y + 0.6 * rng.random(n), 0, 1)
        for i in range(n):
            rows.append(
                {
                    "split": split,
                    "patient": f"{split}:p{i // 2}",
                    "y": int(y[i]),
                    "label": "PNEUMONIA" if y[i] else "NORMAL",
                    "probability": float(p[i]),
                }
            )
    return pd.DataFrame(rows)


def test_summarize_threshold_from_val_only():
    rng = np.random.default_rng(11)
    preds = _predictions(rng)
    params = EvaluateParams(target_sensitivity=0.9, bootstrap=10, seed=0)
    first = summarize(preds, params)
    val = preds[preds["split"] == "val"]
    assert first["operating_threshold"] == threshold_for_sensitivity(
        val["y"].to_numpy(), val["probability"].to_numpy(), 0.9
    )

    changed = preds.copy()
    test = changed["split"] == "test"
    changed.loc[test, "probability"] = rng.random(int(test.sum()))
    second = summarize(changed, params)
    assert second["operating_threshold"] == first["operating_threshold"]
    assert second["test"]["roc_auc"] != first["test"]["roc_auc"]
    assert second["val"] == first["val"]

    shifted = preds.copy()
    shifted.loc[shifted["split"] == "val", "probability"] *= 0.5
    assert summarize(shifted, params)["operating_threshold"] == pytest.approx(first["operating_threshold"] * 0.5)


def test_summarize_structure_and_consistency():
    rng = np.random.default_rng(12)
    preds = _predictions(rng)
    params = EvaluateParams(target_sensitivity=0.95, bootstrap=20, seed=0)
    out = summarize(preds, params)
    assert out["target_sensitivity"] == 0.95
    assert out["val"]["at_operating"]["recall"] >= 0.95
    for split in ("val", "test"):
        part = preds[preds["split"] == split]
        assert out[split]["images"] == len(part)
        assert out[split]["positives"] == int(part["y"].sum())
        assert out[split]["at_0.5"]["threshold"] == 0.5
    assert "ci95" in out["test"] and "ci95" not in out["val"]
    low, high = out["test"]["ci95"]["at_operating"]["accuracy"]
    assert low <= out["test"]["at_operating"]["accuracy"] <= high


def test_summarize_without_test_split():
    preds = _predictions(np.random.default_rng(13))
    out = summarize(preds[preds["split"] == "val"], EvaluateParams(bootstrap=0))
    assert "test" not in out and "val" in out


def test_decision_figures_by_hand():
    y = np.array([1, 1, 0, 0, 1, 0])
    decisions = np.array(["pneumonia", "refer", "normal", "pneumonia", "rejected", "normal"])
    f = decision_figures(y, decisions)
    assert f["referral_rate"] == pytest.approx(1 / 6) and f["rejection_rate"] == pytest.approx(1 / 6)
    assert f["answered_rate"] == pytest.approx(4 / 6)
    # Answered: 0 (PNEUMONIA, right), 2 (NORMAL, right), 3 (NORMAL called pneumonia), 5 (NORMAL, right).
    assert f["accuracy"] == pytest.approx(3 / 4)
    assert f["sensitivity"] == 1.0 and f["specificity"] == pytest.approx(2 / 3)
    nothing = decision_figures(np.array([1, 0]), np.array(["refer", "rejected"]))
    assert nothing["answered_rate"] == 0.0 and nothing["accuracy"] is None and nothing["sensitivity"] is None


def test_decisions_summary_counts_and_the_threshold_alone_over_everything():
    part = pd.DataFrame(
        {
            "y": [1, 1, 0, 0, 1, 0],
            "probability": [0.9, 0.55, 0.1, 0.7, 0.8, 0.3],
            "decision": ["pneumonia", "refer", "normal", "pneumonia", "rejected", "normal"],
            "patient": ["a", "a", "b", "c", "d", "e"],
        }
    )
    out = decisions_summary(part, threshold=0.5)
    assert (out["images"], out["referred"], out["rejected"]) == (6, 1, 1)
    assert out["answered"] == decision_figures(part["y"].to_numpy(), part["decision"].to_numpy())
    # `all`: the threshold alone on every image: 0.9, 0.55, 0.7, 0.8 called PNEUMONIA; 0.7 is a NORMAL.
    assert out["all"] == {"accuracy": pytest.approx(5 / 6), "sensitivity": 1.0, "specificity": pytest.approx(2 / 3)}
    assert "ci95" not in out
    with_ci = decisions_summary(part, 0.5, bootstrap=40, seed=1)
    low, high = with_ci["ci95"]["referral_rate"]
    assert 0.0 <= low <= high <= 1.0 and with_ci["ci95"] == decisions_summary(part, 0.5, 40, 1)["ci95"]


def test_calibration_summary_reports_both_probabilities():
    y = np.array([0, 1, 1, 0])
    raw, calibrated = np.array([0.1, 0.99, 0.6, 0.45]), np.array([0.2, 0.9, 0.7, 0.4])
    out = calibration_summary(y, raw, calibrated, bins=2)
    assert out["brier"] == pytest.approx(np.mean((calibrated - y) ** 2))
    assert out["brier_uncalibrated"] == pytest.approx(np.mean((raw - y) ** 2))
    assert 0.0 <= out["ece"] <= 1.0 and 0.0 <= out["ece_uncalibrated"] <= 1.0


def _overconfident(rng, n: int, scale: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and logits whose true log-odds are a quarter of what they say (so T ~ 4)."""
    true_logit = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < sigmoid(true_logit)).astype(int)
    return y, true_logit * scale


def test_fit_policy_calibrates_thresholds_and_gates_on_validation_alone():
    rng = np.random.default_rng(4)
    y, logits = _overconfident(rng, 600)
    train_features, val_features = rng.normal(size=(200, 6)), rng.normal(size=(600, 6))
    params = EvaluateParams(target_sensitivity=0.9, refer_coverage=0.9, ood_keep=0.99)
    policy = fit_policy(logits, y, val_features, train_features, params)
    assert 2.5 < policy.temperature < 6.0  # an overconfident model is cooled
    p = policy.probability(logits)
    assert policy.threshold == threshold_for_sensitivity(y, p, 0.9)
    assert policy.refer is not None and policy.refer[0] <= policy.threshold <= policy.refer[1]
    assert np.mean(policy.gate.score(val_features) <= policy.gate.threshold) >= 0.99
    assert np.mean(policy.gate.score(val_features + 8.0) > policy.gate.threshold) == 1.0  # far away: refused
    off = fit_policy(logits, y, None, None, EvaluateParams(calibration="none", refer_coverage=0.0))
    assert off == Policy(off.threshold, 1.0, None, None)
    assert off.threshold == threshold_for_sensitivity(y, sigmoid(logits), EvaluateParams().target_sensitivity)


@pytest.mark.slow
def test_stage_scores_validation_under_every_simulated_shift(trained):
    """The evaluate stage records `val_shift`: each perturbation of pneumo.stages.shift, at the clean threshold."""
    from pneumo.stages import shift

    metrics = trained["metrics"]
    shifted = metrics["val_shift"]
    assert set(shifted["perturbations"]) == set(shift.PERTURBATIONS)
    assert shifted["threshold"] == metrics["operating_threshold"]
    per = shifted["perturbations"].values()
    assert shifted["roc_auc"] == pytest.approx(np.mean([v["roc_auc"] for v in per]))
    assert shifted["worst_roc_auc"] == min(v["roc_auc"] for v in per)
    assert all(0.0 <= v["balanced_accuracy"] <= 1.0 for v in per)
    written = json.loads((trained["root"] / "eval" / "metrics.json").read_text())
    assert written["val_shift"] == shifted


@pytest.mark.slow
def test_stage_writes_per_image_shifted_probabilities_the_gate_reproduces(trained):
    """predictions.csv holds each shift's validation probabilities, so the gate can resample val_shift:
    at unit weights the gate's figures are exactly the stage's."""
    from pneumo.ops import gate
    from pneumo.stages import shift
    from pneumo.stages.evaluate import SHIFT_COLUMN

    metrics = trained["metrics"]
    frame = pd.read_csv(trained["root"] / "eval" / "predictions.csv")
    columns = [SHIFT_COLUMN + name for name in shift.PERTURBATIONS]
    assert frame.loc[frame["split"] == "val", columns].notna().all().all()
    assert frame.loc[frame["split"] == "test", columns].isna().all().all()
    s = gate.read_predictions(trained["root"] / "eval" / "predictions.csv", metrics["operating_threshold"])
    assert set(s.shifted) == set(shift.PERTURBATIONS)
    unit = np.ones((1, len(s.y)))
    for name in (
        "val.roc_auc",
        "val.pr_auc",
        "val.brier",
        "val.at_operating.specificity",
        "val_shift.roc_auc",
        "val_shift.worst_roc_auc",
        "val_shift.balanced_accuracy",
    ):
        assert gate.metric_samples(name, s, unit)[0] == pytest.approx(lookup_number(metrics, name), abs=1e-6), name


@pytest.mark.slow
def test_the_note_says_synthetic_data_and_claims_no_kermany_split(trained):
    note = trained["metrics"]["note"]
    assert note.startswith("SYNTHETIC") and "Kermany" in note and "no Kermany split is involved" in note
    assert "official Kermany" not in note
