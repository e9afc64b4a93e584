"""Commands over the flows: `python -m flows run|serve` (also installed as `pneumo-flow`).

Light on purpose: Prefect is imported when a command runs, not when the CLI is built, so
`pneumo --help` stays fast and the pneumo package never imports flows at import time.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


class SourceChoice(str, Enum):
    synthetic = "synthetic"
    local = "local"
    url = "url"
    none = "none"


def _options(source: SourceChoice, path: Path | None, url: str | None, seed: int | None = None) -> dict[str, Any]:
    if source is SourceChoice.local and path is None or source is SourceChoice.url and url is None:
        raise typer.BadParameter(f"--source {source.value} needs --{'path' if source is SourceChoice.local else 'url'}")
    return {SourceChoice.synthetic: {} if seed is None else {"seed": seed},
            SourceChoice.local: {"path": str(path)}, SourceChoice.url: {"url": url},
            SourceChoice.none: {}}[source]


def run_command(
    workdir: Annotated[Path, typer.Option(help="Workspace (a git + DVC repo holding a copy of the code, dvc.yaml and params.yaml).")] = Path("demo"),
    source: Annotated[SourceChoice, typer.Option(help="Data source: synthetic (embedded default, offline), local, url, or none (keep data/raw).")] = SourceChoice.synthetic,
    path: Annotated[Optional[Path], typer.Option(help="local: folder or archive to fetch.")] = None,
    url: Annotated[Optional[str], typer.Option(help="url: http(s) address of a zip or tar archive.")] = None,
    seed: Annotated[int, typer.Option(help="synthetic: generator seed (same seed, same images).")] = 0,
    tolerance: Annotated[Optional[float], typer.Option(help="Gate: how much worse than the champion a metric may be (default: params.yaml gate.tolerance, else 0.01).")] = None,
    metric: Annotated[Optional[list[str]], typer.Option(help="Gate: a dotted metric of eval/metrics.json to compare, repeatable (default: params.yaml gate.metrics).")] = None,
    create: Annotated[bool, typer.Option("--create/--no-create", help="Create the workspace, or refresh its code and params from this checkout, first.")] = True,
) -> None:
    """Run the pipeline flow: fetch, `dvc repro` stage by stage, gate against the champion, promote, publish."""
    from flows.pipeline import pipeline, where
    from pneumo import workspace

    options = _options(source, path, url, seed)
    if create:
        workspace.create(workdir)
    state = pipeline(str(workdir), source=source.value, source_options=options, gate_metrics=metric or None,
                     tolerance=tolerance, return_state=True)
    typer.echo(where(state, workdir))
    raise typer.Exit(0 if state.is_completed() else 1)


def serve_command(
    workdir: Annotated[Path, typer.Option(help="Workspace the runs use (a git + DVC repo; created if absent).")] = Path("demo"),
    cron: Annotated[Optional[str], typer.Option(help="Retraining schedule, cron syntax (default: params.yaml schedule.cron, else Mondays 03:00).")] = None,
    timezone: Annotated[Optional[str], typer.Option(help="Time zone of the schedule (default: params.yaml schedule.timezone, else UTC).")] = None,
    source: Annotated[SourceChoice, typer.Option(help="Data source for each run: synthetic, local, url, none.")] = SourceChoice.synthetic,
    path: Annotated[Optional[Path], typer.Option(help="local: folder or archive to fetch.")] = None,
    url: Annotated[Optional[str], typer.Option(help="url: http(s) address of a zip or tar archive.")] = None,
    name: Annotated[str, typer.Option(help="Deployment name.")] = "scheduled-retraining",
) -> None:
    """Serve the pipeline as a scheduled deployment, one run at a time (needs `prefect server start`)."""
    from prefect.settings import PREFECT_API_URL

    from flows.deploy import serve_deployment
    from pneumo.config import load_params
    from pneumo.workspace import project_root

    if not PREFECT_API_URL.value():
        typer.echo("error: PREFECT_API_URL is not set, and a temporary server cannot schedule runs: start "
                   "`prefect server start` and export PREFECT_API_URL=http://127.0.0.1:4200/api", err=True)
        raise typer.Exit(2)
    options = _options(source, path, url)
    configured = load_params((workdir if (workdir / "params.yaml").is_file() else project_root()) / "params.yaml").schedule
    serve_deployment(workdir, cron or configured.cron, timezone or configured.timezone, source.value, options, name)


app = typer.Typer(add_completion=False, no_args_is_help=True, help="pneumo's Prefect flows.")
app.command("run")(run_command)
app.command("serve")(serve_command)

if __name__ == "__main__":  # pragma: no cover
    app()
