"""pneumo.stages.shift: each simulated acquisition shift does what it says, deterministically, and the
shifted validation figures are computed as defined."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumo.stages import shift


@pytest.fixture()
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(40, 200, 32), (32, 1))
    return np.stack([np.clip(ramp + rng.normal(0, 5, ramp.shape), 0, 255) for _ in range(4)]).astype(np.uint8)


def test_every_perturbation_keeps_shape_and_dtype_and_changes_the_image(images):
    for name, perturb in shift.PERTURBATIONS.items():
        out = perturb(images)
        assert out.shape == images.shape and out.dtype == np.uint8, name
        assert np.abs(out.astype(int) - images).mean() > 0.5, f"{name} left the images unchanged"
        assert np.array_equal(out, perturb(images)), f"{name} is not deterministic"


def test_gamma_brightens_below_one_and_darkens_above(images):
    assert np.array_equal(shift.gamma(1.0)(images), images)
    assert (shift.gamma(0.67)(images).astype(int) >= images).all()
    assert (shift.gamma(1.5)(images).astype(int) <= images).all()
    ends = np.array([[[0, 255]]], np.uint8)
    assert shift.gamma(1.5)(ends).tolist() == [[[0, 255]]]


def test_equalize_spreads_the_histogram_and_keeps_the_order(images):
    out = shift.equalize(images)
    for before, after in zip(images, out):
        assert after.min() == 0 and after.max() == 255
        order = np.argsort(before.ravel(), kind="stable")
        assert (np.diff(after.ravel()[order].astype(int)) >= 0).all()  # monotone mapping
    flat = np.full((1, 8, 8), 77, np.uint8)
    assert np.array_equal(shift.equalize(flat), np.zeros_like(flat))


def test_blur_and_low_resolution_keep_flat_images_flat_and_smooth_edges():
    flat = np.full((2, 16, 16), 90, np.uint8)
    assert np.array_equal(shift.blur(1.5)(flat), flat)
    assert np.array_equal(shift.low_resolution(2)(flat), flat)
    edge = np.zeros((1, 16, 16), np.uint8)
    edge[:, :, 8:] = 255
    blurred = shift.blur(1.5)(edge)
    assert 0 < blurred[0, 0, 7] < 255 and 0 < blurred[0, 0, 8] < 255
    assert blurred[0, 0, 0] == 0 and blurred[0, 0, 15] == 255


def test_noise_has_the_stated_spread(images):
    diff = shift.noise(10.0)(np.full((8, 32, 32), 128, np.uint8)).astype(float) - 128
    assert diff.std() == pytest.approx(10.0, rel=0.05) and abs(diff.mean()) < 0.5
    assert not np.array_equal(shift.noise(10.0, seed=1)(images), shift.noise(10.0, seed=2)(images))


def test_shifted_metrics_match_a_direct_computation():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    probs = {"a": np.array([0.1, 0.2, 0.7, 0.6, 0.8, 0.9, 0.4]), "b": np.array([0.1, 0.2, 0.3, 0.6, 0.8, 0.9, 0.95])}
    out = shift.shifted_metrics(y, probs, threshold=0.5)
    a = out["perturbations"]["a"]
    assert a["roc_auc"] == pytest.approx(roc_auc_score(y, probs["a"]))
    assert a["recall"] == pytest.approx(3 / 4) and a["specificity"] == pytest.approx(2 / 3)
    assert a["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert out["perturbations"]["b"]["balanced_accuracy"] == 1.0
    assert out["roc_auc"] == pytest.approx((roc_auc_score(y, probs["a"]) + 1.0) / 2)
    assert out["worst_roc_auc"] == pytest.approx(roc_auc_score(y, probs["a"]))
    assert out["balanced_accuracy"] == pytest.approx(((3 / 4 + 2 / 3) / 2 + 1.0) / 2)


def test_score_runs_the_predictor_on_each_shifted_copy(images):
    y = np.array([0, 0, 1, 1])
    images = images.copy()
    images[2:] = np.clip(images[2:].astype(int) + 40, 0, 255)  # positives brighter
    seen = []

    def predict(batch):  # a "model" that calls brighter images pneumonia
        seen.append(batch)
        return batch.reshape(len(batch), -1).mean(axis=1) / 255.0

    out = shift.score(predict, images, y, threshold=0.5, perturbations={"dark": shift.gamma(1.5), "none": lambda x: x})
    assert len(seen) == 2 and np.array_equal(seen[1], images)
    assert set(out["perturbations"]) == {"dark", "none"}
    assert out["perturbations"]["none"]["roc_auc"] == 1.0
    assert out["threshold"] == 0.5
