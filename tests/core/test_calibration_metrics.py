"""Expected calibration error and patient-bootstrap intervals of any figure (`pneumo.core.metrics`)."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.core.metrics import bootstrap_figures, expected_calibration_error

# --- expected calibration error ----------------------------------------------------------------


def test_ece_is_zero_when_every_bin_matches_its_observed_rate():
    # Bin [0.2, 0.3): p = 0.25, 1 positive in 4; bin [0.5, 0.6): p = 0.5, 2 in 4; bin [0.7, 0.8): p = 0.75, 3 in 4.
    p = np.repeat([0.25, 0.5, 0.75], 4)
    y = np.array([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(y, p) == 0.0


def test_ece_by_hand():
    # Bin [0.2, 0.3): two images at 0.2, observed 1/2 -> |0.5 - 0.2| = 0.3, weight 2.
    # Bin [0.8, 0.9): two images at 0.8, observed 2/2 -> |1.0 - 0.8| = 0.2, weight 2.
    y = np.array([0, 1, 1, 1])
    p = np.array([0.2, 0.2, 0.8, 0.8])
    assert expected_calibration_error(y, p) == pytest.approx((2 * 0.3 + 2 * 0.2) / 4)


def test_ece_averages_within_a_bin_before_taking_the_gap():
    # One bin [0.6, 0.7): mean p = 0.645, observed 1/2 -> 0.145 (not the mean of |y - p|, 0.455).
    assert expected_calibration_error(np.array([0, 1]), np.array([0.6, 0.69]), bins=10) == pytest.approx(0.145)
    # A single bin is the gap between overall rate and mean probability.
    y, p = np.array([0, 0, 1, 1, 1]), np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    assert expected_calibration_error(y, p, bins=1) == pytest.approx(abs(0.6 - 0.5))


def test_ece_puts_probability_one_in_the_last_bin_and_is_zero_when_exactly_right():
    y = np.array([1, 1, 0, 0])
    p = np.array([1.0, 1.0, 0.0, 0.0])
    assert expected_calibration_error(y, p) == 0.0
    assert expected_calibration_error(1 - y, p) == 1.0  # confidently wrong everywhere


@pytest.mark.parametrize("seed", range(10))
def test_ece_stays_within_zero_and_one(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    p, y = rng.random(n) ** rng.uniform(0.2, 5), rng.integers(0, 2, n)
    assert 0.0 <= expected_calibration_error(y, p, bins=int(rng.integers(1, 30))) <= 1.0


def test_ece_is_small_for_calibrated_samples_and_large_for_overconfident_ones():
    rng = np.random.default_rng(3)
    p = rng.random(50_000)
    y = (rng.random(p.shape) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    overconfident = np.where(p > 0.5, 0.99, 0.01)
    assert expected_calibration_error(y, overconfident) > 0.2
    assert expected_calibration_error(np.array([]), np.array([])) == 0.0


# --- bootstrap intervals of any figure ---------------------------------------------------------


def patients(n_patients: int, seed: int) -> np.ndarray:
    """Group ids: each patient has 1 to 4 images, listed in shuffled order."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], rng.integers(1, 5, n_patients))
    return rng.permutation(groups)


def test_no_resamples_or_no_images_gives_no_intervals():
    assert bootstrap_figures(patients(10, 0), lambda idx: {"n": float(len(idx))}, n=0, seed=0) == {}
    assert bootstrap_figures(np.array([]), lambda idx: {"n": float(len(idx))}, n=50, seed=0) == {}


def test_intervals_contain_the_full_sample_figure_of_a_stable_statistic():
    groups = patients(300, 1)
    values = np.random.default_rng(2).normal(10.0, 2.0, len(groups))
    intervals = bootstrap_figures(groups, lambda idx: {"mean": float(values[idx].mean())}, n=300, seed=0)
    low, high = intervals["mean"]
    assert low < values.mean() < high
    assert high - low < 1.0  # about 4 standard errors: a real interval, not everything


def test_whole_patients_are_resampled_never_single_images():
    """Each drawn patient brings all of its images, each once per draw: fails for image-level resampling."""
    groups = patients(40, 3)
    members = {g: set(np.flatnonzero(groups == g)) for g in np.unique(groups)}
    assert max(len(m) for m in members.values()) > 1

    def whole_patients(idx: np.ndarray) -> dict[str, float]:
        counts = np.bincount(idx, minlength=len(groups))
        consistent = all(len({counts[i] for i in m}) == 1 for m in members.values())
        drawn = set(np.unique(groups[idx]))
        return {
            "whole": float(consistent),
            "patients": float(sum(counts[next(iter(members[g]))] for g in drawn)),  # draws of patients
            "images": float(len(idx)),
            "distinct_fraction": len(drawn) / len(members),
        }

    intervals = bootstrap_figures(groups, whole_patients, n=200, seed=4)
    assert intervals["whole"] == [1.0, 1.0]
    assert intervals["patients"] == [40.0, 40.0]  # as many patient draws as patients
    assert intervals["images"][0] < len(groups) < intervals["images"][1]  # patients differ in size
    low, high = intervals["distinct_fraction"]
    assert 0.45 < low <= high < 0.8  # about 1 - 1/e of the patients appear in a resample


def test_a_figure_that_is_none_in_a_resample_is_skipped_there():
    groups = np.arange(30)  # one image per patient
    labels = np.r_[np.ones(2), np.zeros(28)]

    def figures(idx: np.ndarray) -> dict[str, float | None]:
        positives = labels[idx].sum()
        return {"share_positive": float(positives / len(idx)) if positives else None, "always": None}

    intervals = bootstrap_figures(groups, figures, n=200, seed=0)
    assert "always" not in intervals
    assert intervals["share_positive"][0] > 0.0  # resamples without a positive did not count as 0


def test_same_seed_gives_the_same_intervals_and_another_seed_others():
    groups = patients(50, 5)
    values = np.random.default_rng(6).random(len(groups))

    def figure(idx: np.ndarray) -> dict[str, float]:
        return {"mean": float(values[idx].mean())}

    first = bootstrap_figures(groups, figure, n=100, seed=11)
    assert bootstrap_figures(groups, figure, n=100, seed=11) == first
    assert bootstrap_figures(groups, figure, n=100, seed=12) != first
