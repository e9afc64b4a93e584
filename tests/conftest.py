"""Shared fixtures: offline ImageNet weights, the real data's location, small generated data sets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import SHARED_WEIGHTS, tiny_params

# Fixtures that train a network or run the whole flow. A test that uses one, even through another
# fixture, belongs to the slow tier, so that `pytest -m "not slow"` stays fast and needs no network.
SLOW_FIXTURES = frozenset({"trained", "flow_workspace", "square_model"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run an unmarked test that trains: it would slip into the fast tier unnoticed."""
    unmarked = [
        f"{item.nodeid} (uses {', '.join(sorted(SLOW_FIXTURES & set(item.fixturenames)))})"
        for item in items
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests train a network or run the whole flow; mark them @pytest.mark.slow "
            "(or set `pytestmark = pytest.mark.slow` in the file):\n  " + "\n  ".join(unmarked)
        )


def _weights_source() -> Path | None:
    """Where the MobileNetV2 no-top weights can be copied from, offline."""
    from pneumo.nn.model import IMAGENET_NO_TOP

    for folder in (SHARED_WEIGHTS, Path.home() / ".keras" / "models"):
        if (folder / IMAGENET_NO_TOP).is_file():
            return folder / IMAGENET_NO_TOP
    return None


@pytest.fixture(scope="session")
def keras_home(tmp_path_factory) -> Path:
    """A Keras cache holding the genuine ImageNet weights, so `weights="imagenet"` works offline.

    Exported as KERAS_HOME for this process and the subprocesses tests start (dvc repro).
    """
    source = _weights_source()
    if source is None:
        pytest.skip(f"MobileNetV2 ImageNet weights not found in {SHARED_WEIGHTS} or ~/.keras/models")
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    shutil.copy2(source, home / "models" / source.name)
    old = os.environ.get("KERAS_HOME")
    os.environ["KERAS_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("KERAS_HOME", None)
    else:
        os.environ["KERAS_HOME"] = old


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> Path:
    """A small synthetic Kaggle-layout set (train and test), generated once per session."""
    from pneumo.data.synthetic import synthesize

    out = tmp_path_factory.mktemp("synthetic") / "raw"
    synthesize(out, train_per_class=30, test_per_class=10, size=96, seed=3)
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory, synthetic_raw, keras_home) -> dict:
    """prepare → oodset → train → evaluate on the synthetic set, once per session (about a minute)."""
    from pneumo.core.config import OodsetParams
    from pneumo.data.oodset import build
    from pneumo.stages.evaluate import evaluate
    from pneumo.stages.prepare import prepare
    from pneumo.stages.train import train

    params = tiny_params()
    root = tmp_path_factory.mktemp("trained")
    prepare(synthetic_raw, root / "prepared", params.data, params.prepare)
    build(root / "prepared", root / "ood", OodsetParams(dir=str(root / "ood"), xrays=2))
    summary = train(root / "prepared", root / "models" / "train", params.data, params.train)
    metrics = evaluate(
        root / "prepared", root / "models" / "train" / "model.keras", root / "eval", params.evaluate, root / "ood"
    )
    return {
        "root": root,
        "params": params,
        "train": summary,
        "metrics": metrics,
        "prepared": root / "prepared",
        "model": root / "models" / "train" / "model.keras",
        "ood": root / "ood",
    }
