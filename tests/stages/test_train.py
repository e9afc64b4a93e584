"""train: class weights, augmentation, checkpoint selection, and a short real run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorflow")

from pneumo.core.config import AugmentParams  # noqa: E402
from pneumo.stages.train import BestEpoch, class_weights, make_dataset  # noqa: E402


def test_balanced_class_weights_make_both_classes_weigh_the_same():
    labels = np.array([0] * 10 + [1] * 30)
    w = class_weights(labels, "balanced")
    assert w[0] * 10 == pytest.approx(w[1] * 30)
    assert w[0] * 10 + w[1] * 30 == pytest.approx(len(labels))
    assert class_weights(labels, "none") is None


def test_a_missing_class_is_refused():
    with pytest.raises(ValueError, match="lacks a class"):
        class_weights(np.ones(5, dtype=int), "balanced")


def _first_batch(ds):
    return next(iter(ds))[0].numpy()


def test_dataset_yields_rgb_in_pixel_range_and_augmentation_changes_pixels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32), dtype=np.uint8)
    labels = np.array([0, 1] * 4)
    plain = _first_batch(make_dataset(images, labels, 8))
    assert plain.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(plain[..., 0], images.astype(np.float32))
    np.testing.assert_array_equal(plain[..., 0], plain[..., 2])
    off = AugmentParams(rotation=0, zoom=0, translation=0, contrast=0, brightness=0)
    shuffled = _first_batch(make_dataset(images, labels, 8, seed=1, augment=off))
    # Without augmentation a training batch holds the same images, in another order.
    assert sorted(map(bytes, shuffled[..., 0].astype(np.uint8))) == sorted(map(bytes, images))
    augmented = _first_batch(make_dataset(images, labels, 8, seed=1, augment=AugmentParams(rotation=0.1, contrast=0.3)))
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    assert not np.allclose(np.sort(augmented, axis=0), np.sort(shuffled, axis=0))
    np.testing.assert_array_equal(augmented[..., 0], augmented[..., 1])


def test_batches_depend_on_seed_phase_and_step_only():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 32, 32), dtype=np.uint8)
    labels = np.arange(20) % 2
    aug = AugmentParams(rotation=0.1, zoom=0.2, translation=0.1, contrast=0.4, brightness=0.2, noise=4.0)

    def batches(seed, phase, n=6):
        return [b[0].numpy() for b in make_dataset(images, labels, 8, seed=seed, phase=phase, augment=aug).take(n)]

    first, again = batches(7, 0), batches(7, 0)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # Each step (also across epochs: 20 images make 3 batches an epoch) gets new pixels.
    assert not np.array_equal(first[0], first[3])
    assert not np.array_equal(first[0], batches(8, 0, 1)[0])
    assert not np.array_equal(first[0], batches(7, 1, 1)[0])


def test_augmentation_transforms_are_the_asked_ones():
    import tensorflow as tf

    from pneumo.nn.augment import augment_batch, batch_seed

    images = np.zeros((4, 33, 33, 1), np.float32)
    images[:, 16, 16, 0] = 255.0
    seed = batch_seed(3, 0, tf.constant(0))
    still = augment_batch(
        tf.constant(images), AugmentParams(rotation=0.5, zoom=0, translation=0, contrast=0, brightness=0), seed
    ).numpy()
    # A rotation about the centre keeps the centre pixel where it was.
    assert (still[:, 16, 16, 0] > 200).all()
    moved = augment_batch(
        tf.constant(images), AugmentParams(rotation=0, zoom=0, translation=0.3, contrast=0, brightness=0), seed
    ).numpy()
    assert (moved[:, 16, 16, 0] < 255).any()
    mirrored = np.zeros((64, 9, 9, 1), np.float32)
    mirrored[:, 4, 0, 0] = 255.0
    flipped = augment_batch(
        tf.constant(mirrored),
        AugmentParams(rotation=0, zoom=0, translation=0, contrast=0, brightness=0, flip=True),
        seed,
    ).numpy()
    # About half the images are mirrored: the bright pixel then sits on the right edge.
    share = float((flipped[:, 4, 8, 0] > 200).mean())
    assert 0.2 < share < 0.8
    assert ((flipped[:, 4, 8, 0] > 200) != (flipped[:, 4, 0, 0] > 200)).all()


def test_noise_augmentation_has_the_asked_spread_in_grey_levels():
    images = np.full((16, 32, 32), 128, np.uint8)
    labels = np.zeros(16, int)
    aug = AugmentParams(rotation=0, zoom=0, translation=0, contrast=0, brightness=0, noise=8.0)
    noisy = _first_batch(make_dataset(images, labels, 16, seed=1, augment=aug))
    assert noisy[..., 0].std() == pytest.approx(8.0, rel=0.1)
    assert abs(noisy.mean() - 128.0) < 0.5
    # Grey stays grey: the three channels get the same noise.
    np.testing.assert_array_equal(noisy[..., 0], noisy[..., 1])
    np.testing.assert_array_equal(noisy[..., 0], noisy[..., 2])


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


@pytest.mark.slow
def test_training_writes_model_history_and_summary(trained):
    out = trained["root"] / "models" / "train"
    history = pd.read_csv(out / "history.csv")
    assert list(history["phase"]) == ["frozen", "finetune"]
    assert {"loss", "val_loss", "auc", "val_auc"} <= set(history.columns)
    summary = trained["train"]
    assert summary["weights"] == "imagenet" and summary["synthetic"] is True
    assert summary["best_epoch"]["val_loss"] == pytest.approx(history["val_loss"].min())
    assert (out / "model.keras").stat().st_size > 1_000_000


@pytest.mark.slow
def test_trained_model_learns_the_synthetic_signal(trained):
    # Even one short epoch per phase separates the planted opacities from clear lungs.
    assert trained["metrics"]["val"]["roc_auc"] > 0.8
    assert trained["metrics"]["test"]["roc_auc"] > 0.8


@pytest.fixture
def no_imagenet_weights(tmp_path, monkeypatch):
    """An empty Keras cache and a download that fails at once (a closed local port): offline."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    monkeypatch.setattr("pneumo.nn.model.PACKAGED_WEIGHTS", tmp_path / "absent.h5")
    monkeypatch.setattr("keras.src.applications.mobilenet_v2.BASE_WEIGHT_PATH", "http://127.0.0.1:9/")


@pytest.mark.slow
def test_without_weights_synthetic_data_falls_back_to_a_random_base(trained, tmp_path, no_imagenet_weights, caplog):
    from pneumo.stages.train import train

    params = trained["params"]
    with caplog.at_level("WARNING"):
        summary = train(trained["prepared"], tmp_path / "train", params.data, params.train)
    assert summary["weights"] == "none (fallback)"
    assert "falls back to a randomly initialised MobileNetV2" in caplog.text
    assert (tmp_path / "train" / "model.keras").is_file()


@pytest.mark.slow
def test_without_weights_real_data_stops_with_the_fix(trained, tmp_path, no_imagenet_weights):
    import json
    import shutil

    from pneumo.nn.model import IMAGENET_NO_TOP, WeightsUnavailable
    from pneumo.stages.train import train

    prepared = tmp_path / "prepared"
    shutil.copytree(trained["prepared"], prepared)
    summary = json.loads((prepared / "prepare.json").read_text())
    (prepared / "prepare.json").write_text(json.dumps({**summary, "synthetic": False}))
    params = trained["params"]
    with pytest.raises(WeightsUnavailable, match=IMAGENET_NO_TOP):
        train(prepared, tmp_path / "train", params.data, params.train)
    assert not (tmp_path / "train").exists()


def _train_in_a_new_process(trained, tmp_path, name: str) -> list[np.ndarray]:
    """`pneumo train` in its own process, as `dvc repro` runs it, on the fixture's prepared data."""
    import subprocess
    import sys

    import keras

    from support import write_params

    params = write_params(
        tmp_path / f"params_{name}.yaml",
        data__raw_dir=str(tmp_path / "raw"),
        data__prepared_dir=str(trained["prepared"]),
        data__image_size=96,
        train__batch_size=16,
        train__patience=0,
        train__frozen__epochs=1,
        train__finetune__epochs=1,
        train__finetune__layers=10,
    )
    out = tmp_path / name
    done = subprocess.run(
        [sys.executable, "-m", "pneumo", "train", "--params", str(params), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return keras.saving.load_model(out / "model.keras", compile=False).get_weights()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # three trainings, two in new processes: beyond the default
def test_two_trainings_with_the_same_params_give_identical_weights(trained, tmp_path):
    params = trained["params"]
    assert params.train.deterministic and params.train.augment.rotation > 0
    first = _train_in_a_new_process(trained, tmp_path, "first")
    second = _train_in_a_new_process(trained, tmp_path, "second")
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # The seed is a real lever: another seed moves the weights.
    import keras

    from pneumo.stages.train import train

    other = dataclasses.replace(params.train, seed=params.train.seed + 1)
    train(trained["prepared"], tmp_path / "other", params.data, other)
    third = keras.saving.load_model(tmp_path / "other" / "model.keras", compile=False).get_weights()
    assert any(not np.array_equal(a, c) for a, c in zip(first, third))
