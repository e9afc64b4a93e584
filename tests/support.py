"""Constants and helpers the tests share (imported by name; conftest modules are not importable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumo.core.proc import FORCED_ENV, child_env, quiet_environ

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_DATA = SHARED / "data" / "chest_xray"
SHARED_WEIGHTS = SHARED / "weights"

quiet_environ()  # the tests are an entry point too: no telemetry from anything they start

needs_real_data = pytest.mark.skipif(
    not (REAL_DATA / "train").is_dir(),
    reason=f"real chest X-rays not found at {REAL_DATA} (CI has them; see README)",
)


def env_without_prefect(**extra: str) -> dict[str, str]:
    """A child's environment (pneumo.core.proc.child_env) without this shell's PREFECT_ settings, so a
    test's own Prefect home or server is the only one it sees; telemetry stays off; then `extra`."""
    env = {k: v for k, v in child_env().items() if not k.startswith("PREFECT_") or k in FORCED_ENV}
    return {**env, **extra}


def write_params(path: Path, **overrides) -> Path:
    """A complete params file: the repository's params.yaml with `section__key=value` overrides."""
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        assert leaf in node, f"{dotted}: not a key of params.yaml"
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def tiny_params(**overrides):
    """Params for fast tests: 96 px images, one short epoch per phase."""
    from pneumo.core.config import params_from_dict

    raw = {
        "data": {"image_size": 96},
        "prepare": {"val_fraction": 0.2},
        "train": {"batch_size": 16, "patience": 0, "frozen": {"epochs": 1}, "finetune": {"epochs": 1, "layers": 10}},
        "evaluate": {"bootstrap": 50},
        # A dozen validation images: one swapped pair moves the AUC by ~0.03. One epoch leaves a model whose
        # int8 decisions agree with Keras' only loosely; two float layers exercise the selective path.
        "export": {
            "calibration_images": 40,
            "litert_auc_tolerance": 0.1,
            "min_decision_agreement": 0.5,
            "float_layers": 2,
        },
        "report": {"gradcam_per_group": 2},
    }
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return params_from_dict(raw)
