"""Constants the flow tests share (a unique module name: tests/ has no packages; never import conftest)."""

from __future__ import annotations

# Tiny params (96 px, one epoch per phase) and a tiny synthetic source: same bytes every time,
# so re-fetching them leaves data.dvc's hash, and so every stage, up to date.
TINY = {
    "data": {"image_size": 96},
    "prepare": {"val_fraction": 0.2},
    "train": {"batch_size": 16, "patience": 0, "frozen": {"epochs": 1}, "finetune": {"epochs": 1, "layers": 10}},
    "evaluate": {"bootstrap": 20},
    # One epoch leaves a model whose int8 decisions agree with Keras' only loosely (tests/support.py).
    "export": {"min_decision_agreement": 0.5, "float_layers": 2},
}
TINY_SOURCE = {"train_per_class": 30, "test_per_class": 10, "size": 96, "seed": 3}
