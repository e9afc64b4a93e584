"""The pipeline's stage commands: `pneumo <stage>`, and what dvc.yaml runs
(`python -m pneumo.cli.stages <stage>`), so a stage's DVC deps are this small module and its own
library code, not every command pneumo has.

Each command validates params once, refuses overlapping paths before anything is written, and
imports its stage inside its body: a command loads only its own stage (TensorFlow only where
the stage needs it), which keeps `--help` and the data-side commands fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from pneumo.cli.common import ParamsOpt, data_dirs, fail, refuse_overlap, setup, weights_file
from pneumo.core import paths
from pneumo.core.config import paths_overlap
from pneumo.core.io import write_text

# What `pneumo check` writes: constant, so a params change that passes reruns nothing downstream.
CHECKED = "params.yaml passed validation\n"


def check(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Marker file written when the params are valid.")] = Path(paths.PARAMS_OK),
) -> None:
    """Validate params.yaml and write a marker; dvc.yaml runs it before any stage removes its outputs."""
    setup(params)
    write_text(out, CHECKED)
    typer.echo(f"{params}: valid")


def prepare(params: ParamsOpt = Path("params.yaml")) -> None:
    """Check every image, split by patient, and cache decoded pixels (data.prepared_dir)."""
    p = setup(params)
    from pneumo.stages.prepare import prepare as run  # inside: each command loads only its stage

    try:
        summary = run(p.data.raw_dir, p.data.prepared_dir, p.data, p.prepare)
    except (OSError, ValueError) as exc:
        fail(exc)
    typer.echo(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "counts",
                    "test_source",
                    "synthetic",
                    "unreadable",
                    "duplicate_groups",
                    "dropped_for_leak",
                    "unnamed_patients",
                )
            },
            indent=1,
        )
    )


def oodset(params: ParamsOpt = Path("params.yaml")) -> None:
    """Build the out-of-distribution evaluation set (oodset.dir): images that are not chest X-rays, with a manifest."""
    p = setup(params)
    from pneumo.data.oodset import build  # inside: matplotlib and pydicom load only here

    try:
        summary = build(p.data.prepared_dir, p.oodset.dir, p.oodset)
    except (FileNotFoundError, OSError, ValueError) as exc:
        fail(exc)
    typer.echo(json.dumps(summary, indent=1))


def train(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path(paths.TRAIN_DIR),
) -> None:
    """Train MobileNetV2 + head: frozen phase, then fine-tuning; best validation epoch kept."""
    p = setup(params)
    refuse_overlap(out, {**data_dirs(p), "train.weights": weights_file(p)})
    from pneumo.nn.model import WeightsUnavailable  # inside: loads TensorFlow
    from pneumo.stages.train import train as run

    try:
        summary = run(p.data.prepared_dir, out, p.data, p.train)
    except (FileNotFoundError, ValueError, WeightsUnavailable) as exc:
        fail(exc)
    typer.echo(json.dumps({k: summary[k] for k in ("device", "weights", "best_epoch", "seconds")}, indent=1))


def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    model: Annotated[Path, typer.Option(help="Trained model.")] = Path(paths.TRAINED_MODEL),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path(paths.EVAL_DIR),
    ood: Annotated[
        Path | None,
        typer.Option(help="Out-of-distribution set (the oodset stage's folder); default: params' oodset.dir."),
    ] = None,
) -> None:
    """Decide the answer's policy on validation (calibration, threshold, refer band, input gate); confirm on test."""
    p = setup(params)
    ood = ood if ood is not None else Path(p.oodset.dir)
    refuse_overlap(out, {**data_dirs(p), "--model": model, "--ood": ood})
    from pneumo.stages.evaluate import evaluate as run  # inside: loads TensorFlow

    try:
        result = run(p.data.prepared_dir, model, out, p.evaluate, ood)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "params"}, indent=1))


def export(
    params: ParamsOpt = Path("params.yaml"),
    model: Annotated[Path, typer.Option(help="Trained model.")] = Path(paths.TRAINED_MODEL),
    metrics: Annotated[Path, typer.Option(help="evaluate's metrics.")] = Path(paths.METRICS),
    ood_stats: Annotated[Path, typer.Option(help="evaluate's input-gate statistics.")] = Path(paths.OOD_STATS),
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path(paths.MODELS_DIR),
) -> None:
    """Write models/model.h5 (checked by reloading), the LiteRT files, the gate's statistics and the card."""
    p = setup(params)
    # export writes files into --out (which holds models/train by default), not the whole folder.
    refuse_overlap(out, data_dirs(p), why="a model's files must not land among the data")
    written_files = (paths.MODEL_H5, paths.MODEL_CARD, paths.OOD_STATS_FILE)
    for name, path in {"--model": model, "--metrics": metrics, "--ood-stats": ood_stats}.items():
        if any(paths_overlap(out / written, path) for written in written_files):
            typer.echo(
                f"error: {name} {path} is a file export writes into --out {out}: read it from elsewhere", err=True
            )
            raise typer.Exit(2)
    from pneumo.stages.export import export as run  # inside: loads TensorFlow

    try:
        card = run(model, p.data.prepared_dir, metrics, out, p, ood_stats)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(exc)
    typer.echo(
        f"model: {out / paths.MODEL_H5}\ncard: {out / paths.MODEL_CARD}\n"
        f"operating threshold: {card['operating_threshold']:.4f}"
    )


def report(
    params: ParamsOpt = Path("params.yaml"),
    metrics: Annotated[Path, typer.Option(help="evaluate's metrics.")] = Path(paths.METRICS),
    predictions: Annotated[Path, typer.Option(help="evaluate's per-image predictions.")] = Path(paths.PREDICTIONS),
    history: Annotated[Path, typer.Option(help="train's per-epoch history.")] = Path(paths.HISTORY),
    prepared: Annotated[
        Path | None,
        typer.Option(help="prepare's image cache (test images for Grad-CAM); default: params' data.prepared_dir."),
    ] = None,
    model: Annotated[Path, typer.Option(help="Keras model for Grad-CAM.")] = Path(paths.SHIPPED_H5),
    card: Annotated[Path, typer.Option(help="Model card (LiteRT parity is shown when present).")] = Path(
        paths.SHIPPED_CARD
    ),
    out: Annotated[Path, typer.Option(help="Output folder (replaced).")] = Path(paths.REPORTS_DIR),
    gradcam_per_group: Annotated[
        int | None,
        typer.Option(
            help="Grad-CAM overlays per group (TP, FP, FN); 0: none; default: params' report.gradcam_per_group."
        ),
    ] = None,
    single_file: Annotated[
        bool,
        typer.Option(
            "--single-file", help="Also write report.html: one self-contained page, figures inlined, to mail or attach."
        ),
    ] = False,
) -> None:
    """Write reports/index.html, reports/report.md and reports/figures/ (offline; numbers from the files)."""
    p = setup(params) if prepared is None or gradcam_per_group is None else None
    prepared = prepared if prepared is not None else Path(p.data.prepared_dir)
    per_group = gradcam_per_group if gradcam_per_group is not None else p.report.gradcam_per_group
    refuse_overlap(
        out,
        {
            "--metrics": metrics,
            "--predictions": predictions,
            "--history": history,
            "--prepared": prepared,
            "--model": model,
            "--card": card,
        },
    )
    from pneumo.stages.report import report as run  # inside: matplotlib, and TensorFlow for Grad-CAM

    try:
        result = run(metrics, predictions, history, prepared, model, out, card, per_group, single_file)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    typer.echo(
        f"report: {result['html']}\nmarkdown: {result['markdown']}"
        + (f"\nsingle file: {result['single_file']} (self-contained)" if single_file else "")
    )


def package(
    models: Annotated[Path, typer.Option(help="export's folder.")] = Path(paths.MODELS_DIR),
    metrics: Annotated[Path, typer.Option(help="evaluate's metrics (the card's must match).")] = Path(paths.METRICS),
    out: Annotated[Path, typer.Option(help="Folder inside the package (replaced).")] = Path(paths.PACKAGED_DIR),
) -> None:
    """Copy the int8 LiteRT file, the .h5, the gate's statistics and the card into the package (checked)."""
    refuse_overlap(out, {"--models": models, "--metrics": metrics})
    from pneumo.stages.package import package as run  # inside: each command loads only its stage

    try:
        shas = run(models, metrics, out)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    typer.echo("\n".join(f"{out / name}  sha256 {sha[:12]}" for name, sha in shas.items()))


COMMANDS: tuple[Callable[..., None], ...] = (check, prepare, oodset, train, evaluate, export, package, report)


def register(app: typer.Typer) -> None:
    """Add the stage commands to `app` (pneumo's CLI, and this module's own)."""
    for command in COMMANDS:
        app.command(command.__name__)(command)


def main() -> None:
    """`python -m pneumo.cli.stages <stage>`: the stage commands alone, TensorFlow's start-up noise filtered."""
    from pneumo.cli.quiet import filter_native_stderr
    from pneumo.core.clihelp import HELP_SETTINGS
    from pneumo.core.proc import quiet_environ

    quiet_environ()
    filter_native_stderr()
    app = typer.Typer(
        add_completion=False,
        no_args_is_help=True,
        **HELP_SETTINGS,
        help="pneumo's pipeline stages (what dvc.yaml runs; `pneumo <stage>` is the same).",
    )
    register(app)
    app(prog_name="python -m pneumo.cli.stages")


if __name__ == "__main__":  # pragma: no cover
    main()
