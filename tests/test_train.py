"""train: class weights, augmentation, checkpoint selection, and a short real run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorflow")

from pneumo.config import AugmentParams  # noqa: E402
from pneumo.train import BestEpoch, augmenter, class_weights, make_dataset  # noqa: E402


def test_balanced_class_weights_make_both_classes_weigh_the_same():
    labels = np.array([0] * 10 + [1] * 30)
    w = class_weights(labels, "balanced")
    assert w[0] * 10 == pytest.approx(w[1] * 30)
    assert w[0] * 10 + w[1] * 30 == pytest.approx(len(labels))
    assert class_weights(labels, "none") is None


def test_a_missing_class_is_refused():
    with pytest.raises(ValueError, match="lacks a class"):
        class_weights(np.ones(5, dtype=int), "balanced")


def test_dataset_yields_rgb_in_pixel_range_and_augmentation_changes_pixels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32), dtype=np.uint8)
    labels = np.array([0, 1] * 4)
    plain = next(iter(make_dataset(images, labels, 8)))[0].numpy()
    assert plain.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(plain[..., 0], images.astype(np.float32))
    np.testing.assert_array_equal(plain[..., 0], plain[..., 2])
    aug = augmenter(AugmentParams(rotation=0.1, contrast=0.3), seed=1)
    augmented = next(iter(make_dataset(images, labels, 8, augment=aug)))[0].numpy()
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    assert not np.allclose(augmented, plain)


def test_noise_augmentation_has_the_asked_spread_in_grey_levels():
    images = np.full((16, 32, 32), 128, np.uint8)
    labels = np.zeros(16, int)
    assert "LuminanceNoise" not in [layer.__class__.__name__ for layer in augmenter(AugmentParams(), 0).layers]
    aug = augmenter(AugmentParams(rotation=0, zoom=0, translation=0, contrast=0, brightness=0, noise=8.0), seed=1)
    noisy = next(iter(make_dataset(images, labels, 16, augment=aug)))[0].numpy()
    assert noisy[..., 0].std() == pytest.approx(8.0, rel=0.1)
    assert abs(noisy.mean() - 128.0) < 0.5
    # Grey stays grey: the three channels get the same noise.
    np.testing.assert_array_equal(noisy[..., 0], noisy[..., 1])
    np.testing.assert_array_equal(noisy[..., 0], noisy[..., 2])


def test_no_flip_unless_asked():
    names = [layer.__class__.__name__ for layer in augmenter(AugmentParams(), seed=0).layers]
    assert "RandomFlip" not in names
    assert "RandomFlip" in [layer.__class__.__name__ for layer in augmenter(AugmentParams(flip=True), 0).layers]


class _FakeModel:
    """Stands in for a Keras model's weights (the callback only reads and writes them)."""

    def __init__(self):
        self.w = [np.zeros(1)]
        self.stop_training = False

    def get_weights(self):
        return self.w


def test_best_epoch_keeps_lowest_val_loss_across_phases_and_stops_on_patience():
    best = BestEpoch(patience=2)
    best.set_model(_FakeModel())
    best.start_phase("frozen")
    for i, loss in enumerate([0.5, 0.3, 0.4]):
        best.model.w = [np.full(1, i)]
        best.on_epoch_end(i, {"val_loss": loss})
    assert best.best_epoch["epoch"] == 2 and best.best_weights[0][0] == 1
    best.start_phase("finetune")
    for i, loss in enumerate([0.35, 0.36]):
        best.on_epoch_end(i, {"val_loss": loss})
    assert best.model.stop_training
    assert best.best_epoch["phase"] == "frozen" and best.best == 0.3
    assert [r["phase"] for r in best.rows] == ["frozen"] * 3 + ["finetune"] * 2


def test_training_writes_model_history_and_summary(trained):
    out = trained["root"] / "models" / "train"
    history = pd.read_csv(out / "history.csv")
    assert list(history["phase"]) == ["frozen", "finetune"]
    assert {"loss", "val_loss", "auc", "val_auc"} <= set(history.columns)
    summary = trained["train"]
    assert summary["weights"] == "imagenet" and summary["synthetic"] is True
    assert summary["best_epoch"]["val_loss"] == pytest.approx(history["val_loss"].min())
    assert (out / "model.keras").stat().st_size > 1_000_000


def test_trained_model_learns_the_synthetic_signal(trained):
    # Even one short epoch per phase separates the planted opacities from clear lungs.
    assert trained["metrics"]["val"]["roc_auc"] > 0.8
    assert trained["metrics"]["test"]["roc_auc"] > 0.8


@pytest.fixture
def no_imagenet_weights(tmp_path, monkeypatch):
    """An empty Keras cache and a download that fails at once (a closed local port): offline."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    monkeypatch.setattr("pneumo.model.PACKAGED_WEIGHTS", tmp_path / "absent.h5")
    monkeypatch.setattr("keras.src.applications.mobilenet_v2.BASE_WEIGHT_PATH", "http://127.0.0.1:9/")


def test_without_weights_synthetic_data_falls_back_to_a_random_base(trained, tmp_path, no_imagenet_weights,
                                                                      caplog):
    from pneumo.train import train

    params = trained["params"]
    with caplog.at_level("WARNING"):
        summary = train(trained["prepared"], tmp_path / "train", params.data, params.train)
    assert summary["weights"] == "none (fallback)"
    assert "falls back to a randomly initialised MobileNetV2" in caplog.text
    assert (tmp_path / "train" / "model.keras").is_file()


def test_without_weights_real_data_stops_with_the_fix(trained, tmp_path, no_imagenet_weights):
    import json
    import shutil

    from pneumo.model import IMAGENET_NO_TOP, WeightsUnavailable
    from pneumo.train import train

    prepared = tmp_path / "prepared"
    shutil.copytree(trained["prepared"], prepared)
    summary = json.loads((prepared / "prepare.json").read_text())
    (prepared / "prepare.json").write_text(json.dumps({**summary, "synthetic": False}))
    params = trained["params"]
    with pytest.raises(WeightsUnavailable, match=IMAGENET_NO_TOP):
        train(prepared, tmp_path / "train", params.data, params.train)
    assert not (tmp_path / "train").exists()
