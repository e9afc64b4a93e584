"""The input gate's content check: Mahalanobis distance under a Ledoit-Wolf covariance, its threshold, its file."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from pneumo.core.ood import OodGate, fit, keep_threshold

DIMS = 6


def features(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Correlated Gaussian features (n, DIMS), seeded."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(1234).normal(size=(DIMS, DIMS))
    return rng.normal(size=(n, DIMS)) @ mixing + 3.0 + shift


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return features(400, seed=0)


@pytest.fixture(scope="module")
def val() -> np.ndarray:
    return features(200, seed=1)


@pytest.fixture(scope="module")
def gate(train, val) -> OodGate:
    return fit(train, val, keep=0.99)


def test_distance_is_the_mahalanobis_distance_under_the_ledoit_wolf_covariance(gate, train, val):
    estimator = LedoitWolf().fit(train)
    precision = np.linalg.inv(estimator.covariance_)
    centered = val - estimator.location_
    expected = np.sqrt(np.array([row @ precision @ row for row in centered]))
    # The gate stores float32 statistics (as a phone reads them): equal up to float32 rounding.
    np.testing.assert_allclose(gate.score(val), expected, rtol=1e-4)
    assert gate.shrinkage == pytest.approx(estimator.shrinkage_)
    assert gate.dims == DIMS
    assert gate.mean.dtype == np.float32 and gate.precision.dtype == np.float32


def test_the_mean_scores_zero_and_points_further_out_score_higher(gate, train):
    direction = np.random.default_rng(5).normal(size=DIMS)
    steps = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0])
    points = gate.mean.astype(np.float64) + steps[:, None] * direction
    scores = gate.score(points)
    assert scores[0] == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.diff(scores) > 0)
    # Linear along a ray from the mean: a distance, not a squared distance.
    np.testing.assert_allclose(scores[1:] / steps[1:], scores[-1] / steps[-1], rtol=1e-9)
    # A shifted population scores above the training one on average.
    assert np.median(gate.score(features(200, seed=9, shift=4.0))) > np.median(gate.score(train))


@pytest.mark.parametrize("n", [1, 7, 100, 150, 200, 333])
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_fit_keeps_exactly_the_smallest_share_of_validation_that_reaches_keep(train, n, keep):
    val = features(n, seed=n)
    gate = fit(train, val, keep=keep)
    kept = int(np.sum(gate.score(val) <= gate.threshold))
    assert kept >= keep * n
    assert kept == math.ceil(keep * n)  # distinct scores: no larger threshold than needed
    assert not gate.refuses(gate.score(val)).sum() > n - math.ceil(keep * n)


def test_keep_one_keeps_every_validation_image(train, val):
    gate = fit(train, val, keep=1.0)
    scores = gate.score(val)
    assert gate.threshold == pytest.approx(scores.max())
    assert not gate.refuses(scores).any()


def test_keep_threshold_edges():
    scores = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    assert keep_threshold(scores, 1.0) == 5.0
    assert keep_threshold(scores, 0.6) == 3.0  # 3 of 5
    assert keep_threshold(scores, 0.61) == 4.0  # needs 4 of 5
    assert keep_threshold(scores, 0.0) == 1.0  # never below one image
    with pytest.raises(ValueError, match="no validation scores"):
        keep_threshold(np.array([]), 0.99)


def test_fit_refuses_too_few_training_rows(val):
    with pytest.raises(ValueError, match="at least two"):
        fit(val[:1], val)


def test_save_load_round_trips_float32_statistics(gate, val, tmp_path):
    path = gate.save(tmp_path / "gate.npz")
    loaded = OodGate.load(path)
    np.testing.assert_array_equal(loaded.score(val), gate.score(val))
    assert loaded.threshold == gate.threshold
    assert loaded.shrinkage == gate.shrinkage
    with np.load(path, allow_pickle=False) as data:
        assert data["mean"].dtype == np.float32 and data["mean"].shape == (DIMS,)
        assert data["precision"].dtype == np.float32 and data["precision"].shape == (DIMS, DIMS)
        assert float(data["threshold"]) == gate.threshold
    assert [p.name for p in tmp_path.iterdir()] == ["gate.npz"]  # no temporary file left beside it


def test_a_missing_file_is_refused_with_its_path(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        OodGate.load(path)


def test_a_file_that_is_not_an_npz_is_refused_with_its_path(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a numpy file at all" * 10)
    with pytest.raises(ValueError, match="garbage.npz"):
        OodGate.load(path)


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flip_a_precision_byte(data: bytes) -> bytes:
    """Damage one byte inside the stored `precision` array (the zip's CRC no longer matches)."""
    out = bytearray(data)
    at = out.find(b"precision.npy") + 200  # the local header's name, then the .npy header and data
    out[at] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize("damage", [truncate, flip_a_precision_byte])
def test_a_damaged_file_is_refused_with_its_path(gate, tmp_path, damage):
    whole = gate.save(tmp_path / "whole.npz").read_bytes()
    path = tmp_path / "damaged.npz"
    path.write_bytes(damage(whole))
    # zipfile.BadZipFile is neither OSError nor ValueError: `load` must still name the file.
    with pytest.raises(ValueError, match="damaged.npz"):
        OodGate.load(path)


def test_an_npz_missing_an_array_or_inconsistent_is_refused_with_its_path(gate, tmp_path):
    partial = tmp_path / "partial.npz"
    np.savez(partial, mean=gate.mean, threshold=np.float64(1.0), shrinkage=np.float64(0.1))
    with pytest.raises(ValueError, match="partial.npz"):
        OodGate.load(partial)
    inconsistent = tmp_path / "inconsistent.npz"
    np.savez(
        inconsistent,
        mean=gate.mean,
        precision=gate.precision[:-1],
        threshold=np.float64(1.0),
        shrinkage=np.float64(0.1),
    )
    with pytest.raises(ValueError, match="inconsistent.npz"):
        OodGate.load(inconsistent)


def test_wrong_feature_width_is_refused(gate, val):
    with pytest.raises(ValueError, match=f"{DIMS} dimensions"):
        gate.score(val[:, :-1])
    with pytest.raises(ValueError, match=f"{DIMS} dimensions"):
        gate.score(val[0])  # one image must come as a (1, D) row


def test_non_finite_features_score_nan_and_are_refused(gate, val):
    x = val[:4].copy()
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    scores = gate.score(x)
    assert np.isfinite(scores[[0, 3]]).all()
    assert np.isnan(scores[[1, 2]]).all()
    refused = gate.refuses(scores)
    assert refused[1] and refused[2]
    assert gate.refuses(np.array([np.nan, gate.threshold, gate.threshold + 1e-9])).tolist() == [True, False, True]
