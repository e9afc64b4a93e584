"""What every pneumo command shares: params read and validated once at the edge, clear refusals."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from pneumo.core.config import Params, ParamsError, load_params, paths_overlap

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read (validated once).")]


def setup(params_path: Path) -> Params:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        return load_params(params_path)
    except ParamsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1) from None


REPLACED_WHOLE = "the output folder is replaced whole, so it must be apart from every input"


def refuse_overlap(out: Path, inputs: dict[str, str | Path | None], why: str = REPLACED_WHOLE) -> None:
    """Exit 2, before anything is written, when `--out` is, holds or lies inside an input.

    Stages replace their output folder whole, so an overlap would delete the very data they read.
    """
    for name, path in inputs.items():
        if path is not None and paths_overlap(out, path):
            typer.echo(
                f"error: --out {out} overlaps {name} {path}: {why} (not the same, neither inside the other)", err=True
            )
            raise typer.Exit(2)


def data_dirs(p: Params) -> dict[str, str]:
    return {"data.raw_dir": p.data.raw_dir, "data.prepared_dir": p.data.prepared_dir, "oodset.dir": p.oodset.dir}


def weights_file(p: Params) -> str | None:
    """train.weights when it names a file (train reads it; an --out around it would delete it)."""
    return None if p.train.weights in ("imagenet", "none") else p.train.weights
