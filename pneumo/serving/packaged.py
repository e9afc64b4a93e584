"""The model pip installs with pneumo (`pneumo/assets/model/`, written by the `package` stage of dvc.yaml):
what `pneumo predict` and `pneumo serve` run when no --model is given."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pneumo.core.paths import INT8_FILE, MODEL_H5


def packaged_dir() -> Path:
    """The folder inside the installed package that holds the shipped model, its card and statistics."""
    return Path(str(files("pneumo") / "assets" / "model"))


def packaged_model() -> Path:
    """The shipped int8 LiteRT file; FileNotFoundError (saying what to do) when the package has none."""
    path = packaged_dir() / INT8_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: this installation ships no model (run `dvc repro` to build one, or pass --model)"
        )
    return path


def keras_beside(model: Path) -> Path | None:
    """The `.h5` of the same training run beside a LiteRT file (export and package put it there), or None."""
    path = model.with_name(MODEL_H5)
    return path if path.is_file() and path != model else None
