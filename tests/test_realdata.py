"""On the real Kermany X-rays (../shared/data/chest_xray): a brief training is far better than chance.

Skipped where that folder is absent; CI has it.
"""

from __future__ import annotations

import pytest

from support import REAL_DATA, needs_real_data, tiny_params

pytestmark = [needs_real_data, pytest.mark.slow, pytest.mark.realdata]


def test_brief_training_on_real_xrays_beats_chance_on_the_official_test_split(tmp_path, keras_home):
    from pneumo.evaluate import evaluate
    from pneumo.prepare import prepare
    from pneumo.train import train

    # Full resolution, one frozen epoch over the whole training split: about two minutes on 2 cores.
    params = tiny_params(data__image_size=224, prepare__val_fraction=0.15, train__batch_size=32,
                         train__frozen={"epochs": 1}, train__finetune={"epochs": 0, "layers": 0},
                         evaluate__bootstrap=100)
    summary = prepare(REAL_DATA, tmp_path / "prepared", params.data, params.prepare)
    assert summary["test_source"] == "official" and not summary["synthetic"]
    assert summary["counts"]["test"] == {"NORMAL": 117, "PNEUMONIA": 195}
    train(tmp_path / "prepared", tmp_path / "train", params.data, params.train)
    metrics = evaluate(tmp_path / "prepared", tmp_path / "train" / "model.keras", tmp_path / "eval", params.evaluate)

    assert metrics["val"]["roc_auc"] > 0.95
    assert metrics["test"]["roc_auc"] > 0.88  # chance is 0.5
    assert metrics["test"]["at_operating"]["accuracy"] > 0.75  # always-PNEUMONIA scores 0.625
    low, high = metrics["test"]["ci95"]["at_operating"]["roc_auc"]
    assert low <= metrics["test"]["roc_auc"] <= high
