"""`pneumo <stage>`: thin commands over the library; dvc.yaml calls these.

Stage modules are imported inside the commands, so `pneumo --help` and the data-side commands
start without loading TensorFlow. The Prefect flows live in flows/ (`python -m flows run|serve`):
pneumo never imports them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from pneumo import diff as diff_mod
from pneumo import predict as predict_mod
from pneumo import report as report_mod
from pneumo.clihelp import HELP_SETTINGS, HelpGroup
from pneumo.config import Params, ParamsError, load_params, paths_overlap
from pneumo.fetch import cli as fetch_cli


app = typer.Typer(
    add_completion=False, no_args_is_help=True, **HELP_SETTINGS,
    help="pneumo: pneumonia classifier for pediatric chest X-rays (MobileNetV2). Every answer is "
         "assistive, never a diagnosis.",
    epilog="The Prefect flows are separate commands: `python -m flows run` runs the whole pipeline "
           "(the README's main job) and `python -m flows serve` serves scheduled retraining; "
           "`pneumo-flow` is the same as `python -m flows`.",
)
app.command("fetch")(fetch_cli.fetch)
app.add_typer(fetch_cli.remote_app, name="remote", cls=HelpGroup)
app.command("predict")(predict_mod.predict_command)
app.command("diff")(diff_mod.diff_command)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read (validated once).")]

# Offline hygiene for everything pneumo starts: no telemetry, no log spam from TensorFlow's C++.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _setup(params_path: Path):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        return load_params(params_path)
    except ParamsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1) from None


_REPLACED_WHOLE = "the output folder is replaced whole, so it must be apart from every input"


def _refuse_overlap(out: Path, inputs: dict[str, str | Path | None], why: str = _REPLACED_WHOLE) -> None:
    """Exit 2, before anything is written, when `--out` is, holds or lies inside an input.

    Stages replace their output folder whole, so an overlap would delete the very data they read.
    """
    for name, path in inputs.items():
        if path is not None and paths_overlap(out, path):
            typer.echo(f"error: --out {out} overlaps {name} {path}: {why} (not the same, neither inside the other)",
                       err=True)
            raise typer.Exit(2)


def _data_dirs(p: Params) -> dict[str, str]:
    return {"data.raw_dir": p.data.raw_dir, "data.prepared_dir": p.data.prepared_dir}


def _weights_file(p: Params) -> str | None:
    """train.weights when it names a file (train reads it; an --out around it would delete it)."""
    return None if p.train.weights in ("imagenet", "none") else p.train.weights


def _report_checked(command: Callable[..., None]) -> Callable[..., None]:
    """`pneumo report` with its --out checked against every file it reads first."""

    @functools.wraps(command)
    def run(**kwargs) -> None:  # noqa: ANN003 - Typer passes the wrapped command's options by name
        _refuse_overlap(kwargs["out"], {f"--{k}": kwargs[k] for k in
                                        ("metrics", "predictions", "history", "prepared", "model", "card")})
        command(**kwargs)

    return run


app.command("report")(_report_checked(report_mod.report_command))


# What `pneumo check` writes: constant, so a params change that passes reruns nothing downstream.
CHECKED = "params.yaml passed validation\n"


@app.command()
def check(params: ParamsOpt = Path("params.yaml"),
          out: Annotated[Path, typer.Option(help="Marker file written when the params are valid.")]
          = Path("data/params.ok")) -> None:
    """Validate params.yaml and write a marker; dvc.yaml runs it before any stage removes its outputs."""
    _setup(params)
    from pneumo.io import write_text

    write_text(out, CHECKED)
    typer.echo(f"{params}: valid")


@app.command()
def prepare(params: ParamsOpt = Path("params.yaml")) -> None:
    """Check every image, split by patient, and cache decoded pixels (data.prepared_dir)."""
    p = _setup(params)
    from pneumo.prepare import prepare as run

    try:
        summary = run(p.data.raw_dir, p.data.prepared_dir, p.data, p.prepare)
    except (OSError, ValueError) as exc:
        _fail(exc)
    typer.echo(json.dumps({k: summary[k] for k in ("counts", "test_source", "synthetic", "unreadable",
                                                   "duplicate_groups", "dropped_for_leak", "unnamed_patients")},
                          indent=1))


@app.command()
def train(params: ParamsOpt = Path("params.yaml"),
          out: Annotated[Path, typer.Option(help="Output folder.")] = Path("models/train")) -> None:
    """Train MobileNetV2 + head: frozen phase, then fine-tuning; best validation epoch kept."""
    p = _setup(params)
    _refuse_overlap(out, {**_data_dirs(p), "train.weights": _weights_file(p)})
    from pneumo.model import WeightsUnavailable
    from pneumo.train import train as run

    try:
        summary = run(p.data.prepared_dir, out, p.data, p.train)
    except (FileNotFoundError, ValueError, WeightsUnavailable) as exc:
        _fail(exc)
    typer.echo(json.dumps({k: summary[k] for k in ("device", "weights", "best_epoch", "seconds")}, indent=1))


@app.command()
def evaluate(params: ParamsOpt = Path("params.yaml"),
             model: Annotated[Path, typer.Option(help="Trained model.")] = Path("models/train/model.keras"),
             out: Annotated[Path, typer.Option(help="Output folder.")] = Path("eval")) -> None:
    """Metrics, curves and per-image predictions on validation and test."""
    p = _setup(params)
    _refuse_overlap(out, {**_data_dirs(p), "--model": model})
    from pneumo.evaluate import evaluate as run

    try:
        result = run(p.data.prepared_dir, model, out, p.evaluate)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "params"}, indent=1))


@app.command()
def export(params: ParamsOpt = Path("params.yaml"),
           model: Annotated[Path, typer.Option(help="Trained model.")] = Path("models/train/model.keras"),
           metrics: Annotated[Path, typer.Option(help="evaluate's metrics.")] = Path("eval/metrics.json"),
           out: Annotated[Path, typer.Option(help="Output folder.")] = Path("models")) -> None:
    """Write models/model.h5 (checked by reloading) and models/model_card.json."""
    p = _setup(params)
    # export writes files into --out (which holds models/train by default), not the whole folder.
    _refuse_overlap(out, _data_dirs(p), why="a model's files must not land among the data")
    from pneumo.export import MODEL_CARD, MODEL_H5
    from pneumo.export import export as run

    for name, path in {"--model": model, "--metrics": metrics}.items():
        if any(paths_overlap(out / written, path) for written in (MODEL_H5, MODEL_CARD)):
            typer.echo(f"error: {name} {path} is a file export writes into --out {out}: read it from elsewhere",
                       err=True)
            raise typer.Exit(2)

    try:
        card = run(model, p.data.prepared_dir, metrics, out, p)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(exc)
    typer.echo(f"model: {out / 'model.h5'}\ncard: {out / 'model_card.json'}\n"
               f"operating threshold: {card['operating_threshold']:.4f}")


@app.command()
def experiments(
    record: Annotated[bool, typer.Option(help="Add what `dvc exp show` knows to experiments/records.json "
                                               "first (off: only re-render the table).")] = True,
    score_shift: Annotated[bool, typer.Option(help="Score validation under simulated shift for recorded runs "
                                                   "that lack it, from their cached models (loads TensorFlow).")] = True,
) -> None:
    """Record every scored `dvc exp run` in experiments/records.json and render experiments/README.md."""
    from pneumo import experiments as exp
    from pneumo.diff import DiffError
    from pneumo.workspace import project_root

    root = project_root()
    try:
        prepared = root / load_params(root / "params.yaml").data.prepared_dir if score_shift else None
        records = exp.record(root, prepared_dir=prepared) if record else exp.load(root)
    except (DiffError, FileNotFoundError, ValueError) as exc:
        _fail(exc)
    exp.write_table(root, records)
    chosen = exp.select(records)
    typer.echo(f"{len(records)} runs in {exp.RECORDS}; table in {exp.TABLE}"
               + (f"; chosen on validation: {chosen['name']}" if chosen else ""))


@app.command()
def readme(check: Annotated[bool, typer.Option(help="Only check; exit 1 if README.md is stale.")] = False) -> None:
    """Regenerate README.md's results section from eval/, models/ and benchmarks/results/."""
    from pneumo.results import stale_blocks, update_readme
    from pneumo.workspace import project_root

    root = project_root()
    if check:
        stale = bool(stale_blocks(root))
        typer.echo("README.md results are stale: run `pneumo readme`" if stale else "README.md is up to date")
        raise typer.Exit(int(stale))
    typer.echo("README.md updated" if update_readme(root) else "README.md already up to date")


if __name__ == "__main__":  # pragma: no cover
    app()
