"""The answer about one image: calibration, the split-conformal refer band, the input gate, and their order."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from pneumo.core.decision import (
    ANSWERED,
    DECISIONS,
    NORMAL,
    PNEUMONIA,
    REFER,
    REJECTED,
    Answer,
    Policy,
    conformal_band,
    conformal_quantile,
    fit_temperature,
    refer_band,
    rejected_before_model,
)
from pneumo.core.ood import OodGate, fit

DIMS = 5


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@pytest.fixture(scope="module")
def gate() -> OodGate:
    rng = np.random.default_rng(0)
    return fit(rng.normal(size=(300, DIMS)), rng.normal(size=(100, DIMS)), keep=0.99)


@pytest.fixture()
def inside(gate) -> np.ndarray:
    """Features at the training mean: distance 0, always kept."""
    return gate.mean.astype(np.float64).copy()


@pytest.fixture()
def far(gate) -> np.ndarray:
    return gate.mean.astype(np.float64) + 50.0


# --- calibration -------------------------------------------------------------------------------


@pytest.mark.parametrize("t0", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_with(t0):
    rng = np.random.default_rng(7)
    z = rng.normal(0.0, 3.0, size=20_000)
    y = (rng.random(z.shape) < 1.0 / (1.0 + np.exp(-z / t0))).astype(int)
    assert fit_temperature(z, y) == pytest.approx(t0, rel=0.10)


def test_fit_temperature_leaves_the_logit_alone_without_both_classes():
    z = np.linspace(-3, 3, 50)
    assert fit_temperature(z, np.ones(50)) == 1.0
    assert fit_temperature(z, np.zeros(50)) == 1.0
    assert fit_temperature(np.array([]), np.array([])) == 1.0


def test_probability_divides_the_logit_by_the_temperature_without_overflow():
    policy = Policy(threshold=0.5, temperature=2.0)
    z = np.array([-4.0, 0.0, 3.0])
    np.testing.assert_allclose(policy.probability(z), 1.0 / (1.0 + np.exp(-z / 2.0)))
    with np.errstate(over="raise", invalid="raise"):  # no overflow at extreme logits
        extreme = policy.probability(np.array([-1e4, 1e4]))
    assert extreme.tolist() == [0.0, 1.0]


# --- split-conformal band ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, 9, 50, 101])
@pytest.mark.parametrize("coverage", [0.1, 0.5, 0.9, 0.95])
def test_conformal_quantile_is_the_ceil_n_plus_1_c_th_order_statistic(n, coverage):
    scores = np.random.default_rng(n).random(n)
    k = math.ceil((n + 1) * coverage)
    expected = np.sort(scores)[k - 1] if k <= n else math.inf
    assert conformal_quantile(scores, coverage) == expected


def test_conformal_quantile_by_hand():
    scores = np.array([0.4, 0.1, 0.3, 0.2])
    assert conformal_quantile(scores, 0.5) == 0.3  # ceil(5 * 0.5) = 3rd smallest
    assert conformal_quantile(scores, 0.8) == 0.4  # ceil(4.0) = 4th
    assert conformal_quantile(scores, 0.81) == math.inf  # ceil(4.05) = 5th: past the end
    assert conformal_quantile(np.array([]), 0.5) == math.inf


def test_conformal_band_by_hand():
    # NORMAL: p = 0.1 0.2 0.3 0.4; at coverage 0.5 the 3rd smallest p is 0.3: NORMAL in the set iff p <= 0.3.
    # PNEUMONIA: 1 - p = 0.05 0.15 0.8 0.9; the 3rd smallest is 0.8: PNEUMONIA in the set iff p >= 0.2.
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.95, 0.85, 0.2, 0.1])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    low, high = conformal_band(p, y, 0.5)
    assert low == pytest.approx(0.2) and high == pytest.approx(0.3)
    # Coverage 0.81 needs the 5th of 4 scores for each class: both sets always hold both labels.
    assert conformal_band(p, y, 0.81) == (0.0, 1.0)


def test_conformal_band_is_none_when_off_or_when_no_set_holds_both_labels():
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.95, 0.85, 0.2, 0.1])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert conformal_band(p, y, 0.0) is None
    assert refer_band(p, y, 0.0, 0.5) is None
    separated = np.array([0.05, 0.1, 0.15, 0.2, 0.8, 0.85, 0.9, 0.95])
    assert conformal_band(separated, y, 0.5) is None  # NORMAL iff p <= 0.15, PNEUMONIA iff p >= 0.85
    assert refer_band(separated, y, 0.5, 0.5) is None


def beta_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping calibrated-looking probabilities: NORMAL ~ Beta(2, 3), PNEUMONIA ~ Beta(3, 2)."""
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.beta(2, 3, n), rng.beta(3, 2, n)])
    return p, np.repeat([0, 1], n)


@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_split_conformal_sets_cover_each_class_on_fresh_data(coverage):
    p_cal, y_cal = beta_scores(3000, seed=1)
    p_test, y_test = beta_scores(20_000, seed=2)
    low, high = conformal_band(p_cal, y_cal, coverage)
    assert 0.0 < low < high < 1.0  # a real band, not everything
    normal, pneumonia = p_test[y_test == 0], p_test[y_test == 1]
    covered_normal = np.mean(normal <= high)  # NORMAL in the set
    covered_pneumonia = np.mean(pneumonia >= low)  # PNEUMONIA in the set
    assert covered_normal >= coverage - 0.02 and covered_pneumonia >= coverage - 0.02
    assert covered_normal <= coverage + 0.02 and covered_pneumonia <= coverage + 0.02  # not trivially wide

    # Through the policy: an image is never labelled against its prediction set, so the share
    # of each class given its own label or `refer` is at least the coverage too.
    threshold = 0.5
    policy = Policy(threshold=threshold, refer=refer_band(p_cal, y_cal, coverage, threshold))
    decided = policy.decisions(p_test, np.full(len(p_test), np.nan))
    assert np.mean(np.isin(decided[y_test == 0], [NORMAL, REFER])) >= coverage - 0.02
    assert np.mean(np.isin(decided[y_test == 1], [PNEUMONIA, REFER])) >= coverage - 0.02
    assert 0.0 < np.mean(decided == REFER) < 1.0


@pytest.mark.parametrize("seed", range(20))
def test_refer_band_always_contains_the_threshold_and_the_conformal_band(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    p, y = rng.random(n), rng.integers(0, 2, n)
    coverage, threshold = float(rng.uniform(0.5, 0.99)), float(rng.random())
    band, widened = conformal_band(p, y, coverage), refer_band(p, y, coverage, threshold)
    assert (band is None) == (widened is None)
    if widened is not None:
        assert widened[0] <= threshold <= widened[1]
        assert widened[0] <= band[0] <= band[1] <= widened[1]
        assert widened[0] == min(band[0], threshold) and widened[1] == max(band[1], threshold)


# --- one image's answer ------------------------------------------------------------------------


def test_refer_band_answer_names_both_ends(gate, inside):
    policy = Policy(threshold=0.6, refer=(0.45, 0.78), gate=gate)
    answer = policy.answer(logit(0.62), inside)
    assert answer.decision == REFER
    assert answer.probability == pytest.approx(0.62)
    assert answer.ood_score == pytest.approx(0.0, abs=1e-6)
    assert answer.reasons == ["probability 0.62 is inside the refer band 0.45–0.78"]


def test_gate_rejection_names_score_and_threshold_and_wins_over_the_refer_band(gate, far):
    policy = Policy(threshold=0.6, refer=(0.45, 0.78), gate=gate)
    answer = policy.answer(logit(0.62), far, notes=["DICOM view PA"])
    assert answer.decision == REJECTED
    assert answer.probability == pytest.approx(0.62)  # the model ran: its probability is kept
    assert answer.ood_score == pytest.approx(float(gate.score(far[None])[0]))
    assert answer.reasons[0] == "DICOM view PA"
    assert len(answer.reasons) == 2 and "refer band" not in answer.reasons[1]
    match = re.fullmatch(
        r"image unlike any chest X-ray seen in training \(score ([\d.]+) > ([\d.]+)\)", answer.reasons[1]
    )
    assert match, answer.reasons[1]
    score, threshold = float(match[1]), float(match[2])
    assert score > threshold
    assert score == pytest.approx(answer.ood_score, abs=0.05)
    assert threshold == pytest.approx(gate.threshold, abs=0.05)


@pytest.mark.parametrize(
    ("p", "decision", "text"),
    [
        (0.6, PNEUMONIA, "probability 0.60 is at or above the operating threshold 0.60"),
        (0.9, PNEUMONIA, "probability 0.90 is at or above the operating threshold 0.60"),
        (0.3, NORMAL, "probability 0.30 is below the operating threshold 0.60"),
    ],
)
def test_threshold_answers(gate, inside, p, decision, text):
    # The threshold is the exact probability of `logit(0.6)`, so p = 0.6 is at it, not a hair below.
    threshold = float(Policy(threshold=0.0).probability(np.array([logit(0.6)]))[0])
    policy = Policy(threshold=threshold, gate=gate)
    answer = policy.answer(logit(p), inside)
    assert (answer.decision, answer.reasons) == (decision, [text])
    assert answer.probability == pytest.approx(p)


def test_answers_without_a_gate_or_without_features():
    bare = Policy(threshold=0.5, refer=(0.4, 0.6))
    answer = bare.answer(logit(0.9), None)
    assert (answer.decision, answer.ood_score) == (PNEUMONIA, None)
    assert bare.answer(logit(0.5), None).decision == REFER
    assert bare.answer(logit(0.1), None).decision == NORMAL


def test_a_gated_policy_rejects_when_the_model_gives_no_features(gate):
    answer = Policy(threshold=0.5, gate=gate).answer(logit(0.9), None)
    assert answer.decision == REJECTED
    assert answer.probability == pytest.approx(0.9)
    assert answer.ood_score is None
    assert "input gate cannot run" in answer.reasons[-1]


def test_a_nan_feature_is_rejected_never_passed(gate, inside):
    features = inside.copy()
    features[0] = np.nan
    policy = Policy(threshold=0.5, refer=(0.4, 0.6), gate=gate)
    answer = policy.answer(logit(0.1), features)
    assert answer.decision == REJECTED
    assert answer.ood_score is None  # JSON-safe: no NaN in the answer
    assert "unlike any chest X-ray" in answer.reasons[-1]
    assert policy.decisions(np.array([0.1]), np.array([np.nan])).tolist() == [REJECTED]


def test_probability_is_none_only_before_the_model(gate, inside, far):
    policy = Policy(threshold=0.5, refer=(0.4, 0.6), gate=gate)
    answers = [policy.answer(logit(p), features) for p in (0.05, 0.5, 0.95) for features in (inside, far, None)] + [
        Policy(threshold=0.5).answer(logit(0.5), None)
    ]
    assert {a.decision for a in answers} == {NORMAL, PNEUMONIA, REFER, REJECTED}
    assert all(isinstance(a.probability, float) for a in answers)
    before = rejected_before_model(["DICOM Modality is CT: not a radiograph"])
    assert before == Answer(REJECTED, None, None, ["DICOM Modality is CT: not a radiograph"])
    assert before.as_dict() == {
        "decision": REJECTED,
        "probability": None,
        "ood_score": None,
        "reasons": ["DICOM Modality is CT: not a radiograph"],
    }


def test_as_dict_copies_the_reasons():
    answer = Answer(NORMAL, 0.1, 2.0, ["a"])
    d = answer.as_dict()
    d["reasons"].append("b")
    assert answer.reasons == ["a"]
    assert set(DECISIONS) == {NORMAL, PNEUMONIA, REFER, REJECTED} and set(ANSWERED) == {NORMAL, PNEUMONIA}


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_decisions_agree_with_answer_image_by_image(seed):
    rng = np.random.default_rng(seed)
    gate = fit(rng.normal(size=(200, DIMS)), rng.normal(size=(60, DIMS)), keep=0.9)
    n = 400
    features = rng.normal(size=(n, DIMS)) * rng.choice([0.5, 1.0, 3.0], size=(n, 1))
    features[rng.random(n) < 0.05, 0] = np.nan
    logits = rng.normal(0, 3, n)
    threshold = float(rng.uniform(0.2, 0.8))
    low = float(rng.uniform(0.0, threshold))
    policy = Policy(
        threshold=threshold, temperature=float(rng.uniform(0.5, 2)), refer=(low, threshold + 0.1), gate=gate
    )
    vectorised = policy.decisions(policy.probability(logits), policy.ood_scores(features, n))
    one_by_one = [policy.answer(z, f).decision for z, f in zip(logits, features)]
    assert vectorised.tolist() == one_by_one
    assert set(one_by_one) == {NORMAL, PNEUMONIA, REFER, REJECTED}  # every branch exercised


def test_vectorised_decisions_without_gate_or_band():
    policy = Policy(threshold=0.5)
    p = np.array([0.0, 0.49, 0.5, 1.0])
    assert policy.decisions(p, policy.ood_scores(None, 4)).tolist() == [NORMAL, NORMAL, PNEUMONIA, PNEUMONIA]
    assert Policy(threshold=0.5, refer=(0.49, 0.5)).decisions(p, np.full(4, np.nan)).tolist() == [
        NORMAL,
        REFER,
        REFER,
        PNEUMONIA,
    ]
