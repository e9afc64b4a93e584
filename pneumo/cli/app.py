"""`pneumo`: thin commands over the library. The stage commands (what dvc.yaml runs) live in
`pneumo.cli.stages`; fetch and remote in `pneumo.cli.fetch`; predict in `pneumo.cli.predict`; serve in
`pneumo.cli.serve`.

Heavy modules are imported inside the commands, so `pneumo --help` and the data-side commands
start without loading TensorFlow. The Prefect flows live in flows/ (`python -m flows run|serve`):
pneumo never imports them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pneumo.cli import fetch as fetch_cli
from pneumo.cli import stages
from pneumo.cli.common import fail
from pneumo.cli.predict import predict_command
from pneumo.cli.serve import serve_command
from pneumo.core.clihelp import HELP_SETTINGS, HelpGroup
from pneumo.core.config import load_params
from pneumo.core.proc import CommandError, quiet_environ
from pneumo.ops import diff as diff_mod
from pneumo.ops import experiments as exp
from pneumo.ops.readme import stale_blocks, update_readme
from pneumo.ops.workspace import project_root

quiet_environ()

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    **HELP_SETTINGS,
    help="pneumo: pneumonia classifier for pediatric chest X-rays (MobileNetV2). Every answer is "
    "assistive, never a diagnosis.",
    epilog="The Prefect flows are separate commands: `python -m flows run` runs the whole pipeline "
    "(the README's main job) and `python -m flows serve` serves scheduled retraining; "
    "`pneumo-flow` is the same as `python -m flows`.",
)
app.command("fetch")(fetch_cli.fetch)
app.add_typer(fetch_cli.remote_app, name="remote", cls=HelpGroup)
app.command("predict")(predict_command)
app.command("serve")(serve_command)
app.command("diff")(diff_mod.diff_command)
stages.register(app)


@app.command()
def experiments(
    record: Annotated[
        bool,
        typer.Option(
            help="Add what `dvc exp show` knows to experiments/records.json first (off: only re-render the table)."
        ),
    ] = True,
    score_shift: Annotated[
        bool,
        typer.Option(
            help="Score validation under simulated shift for recorded runs "
            "that lack it, from their cached models (loads TensorFlow)."
        ),
    ] = True,
) -> None:
    """Record every scored `dvc exp run` in experiments/records.json and render experiments/README.md."""
    root = project_root()
    try:
        prepared = root / load_params(root / "params.yaml").data.prepared_dir if score_shift else None
        records = exp.record(root) if record else exp.load(root)
        if record and prepared is not None:
            from pneumo.stages.rescore import backfill_shift  # inside: loads TensorFlow, only when asked

            records = exp.save(root / exp.RECORDS, backfill_shift(root, records, prepared))
    except (CommandError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    exp.write_table(root, records)
    chosen = exp.select(records, exp.default_params(root))
    typer.echo(
        f"{len(records)} runs in {exp.RECORDS}; table in {exp.TABLE}"
        + (f"; chosen on validation: {chosen['name']}" if chosen else "")
    )


@app.command()
def readme(
    check: Annotated[
        bool, typer.Option(help="Only check; exit 1 if README.md or docs/benchmarks.md is stale.")
    ] = False,
) -> None:
    """Regenerate the generated blocks of README.md and docs/benchmarks.md from eval/, models/ and
    benchmarks/results/."""
    root = project_root()
    if check:
        stale = bool(stale_blocks(root))
        typer.echo(
            "generated blocks (README.md, docs/benchmarks.md) are stale: run `pneumo readme`"
            if stale
            else "generated blocks (README.md, docs/benchmarks.md) are up to date"
        )
        raise typer.Exit(int(stale))
    typer.echo("generated blocks updated" if update_readme(root) else "generated blocks already up to date")


if __name__ == "__main__":  # pragma: no cover
    app()
