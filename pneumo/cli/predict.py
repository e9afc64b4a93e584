"""`pneumo predict`: a decision (normal, pneumonia, refer, rejected) for image files, as a table or JSON lines."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pneumo.serving.packaged import packaged_model
from pneumo.serving.predict import ASSISTIVE_NOTE, HeatmapWriteError, predict_files

HEADER = f"{'decision':<10} {'probability':>11} {'ood_score':>9}  path: reasons"


def _number(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def table_row(r: dict[str, Any]) -> str:
    warning = f"  [WARNING: {r['warning']}]" if r.get("warning") else ""
    if "error" in r:
        return f"{'ERROR':<10} {'':>11} {'':>9}  {r['error']}{warning}"
    reasons = "; ".join(r["reasons"])
    return (
        f"{r['decision']:<10} {_number(r['probability'], 11, 4)} {_number(r['ood_score'], 9, 1)}  "
        f"{r['path']}: {reasons}{warning}"
    )


def predict_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Image files (JPEG, PNG, DICOM) or folders (searched recursively).")
    ],
    model: Annotated[
        Path | None,
        typer.Option(help="Model file: .h5/.keras (Keras) or .tflite (LiteRT); default: the int8 model pneumo ships."),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Decision threshold; default: the model card's operating threshold.")
    ] = None,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
    heatmap: Annotated[
        Path | None, typer.Option(help="Write Grad-CAM overlays (PNG) into this folder (Keras models only).")
    ] = None,
    card: Annotated[
        Path | None, typer.Option(help="Model card to read; default: model_card.json beside the model.")
    ] = None,
    max_pixels: Annotated[
        int, typer.Option(help="Refuse images whose declared size exceeds this many pixels.")
    ] = 50_000_000,
    threads: Annotated[int | None, typer.Option(help="LiteRT interpreter threads (default: LiteRT's choice).")] = None,
) -> None:
    """A decision for each image: normal, pneumonia, refer or rejected (assistive, not a diagnosis).

    Exit status 1 if any file could not be read or a heat map could not be written, 2 if the
    model, its card or an option is unusable.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    failed, used, warning = 0, None, None
    try:
        model = model or packaged_model()
        for i, r in enumerate(predict_files(paths, model, threshold, heatmap, card, max_pixels, num_threads=threads)):
            if i == 0 and not json_lines:
                typer.echo(HEADER)
            failed += "error" in r
            used, warning = r.get("threshold", used), r.get("warning", warning)
            typer.echo(json.dumps(r) if json_lines else table_row(r))
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except HeatmapWriteError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if not json_lines and used is not None:
        typer.echo(
            f"(pneumonia when the calibrated probability >= {used:.4f}; refer: the model cannot tell, a clinician "
            f"reads it; rejected: not a frontal chest X-ray it can read; model {model}; {ASSISTIVE_NOTE})"
            + (f"\nWARNING: {warning}" if warning else "")
        )
    if failed:
        typer.echo(f"{failed} input(s) could not be used (see the ERROR lines)", err=True)
        raise typer.Exit(1)
