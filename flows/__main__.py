"""Commands over the flows: `python -m flows run|serve` (also installed as `pneumo-flow`).

The one entry point of flows/. Light on purpose: Prefect is imported when a command runs, not
when the CLI is built, so `--help` stays fast and a refusal (busy workspace, bad params, no
source) comes at once.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.server import ServerUnavailable, prefect_api
from pneumo.core.clihelp import HELP_SETTINGS
from pneumo.core.config import ParamsError, ScheduleParams, load_params
from pneumo.ops import workspace

EXIT_REFUSED = 2  # nothing ran: busy workspace, bad params or options, no Prefect API


class SourceChoice(str, Enum):
    synthetic = "synthetic"
    local = "local"
    url = "url"
    none = "none"


def _options(
    source: SourceChoice, path: Path | None, url: str | None, seed: int | None = None, sha256: str | None = None
) -> dict[str, Any]:
    if source is SourceChoice.local and path is None or source is SourceChoice.url and url is None:
        raise typer.BadParameter(f"--source {source.value} needs --{'path' if source is SourceChoice.local else 'url'}")
    if sha256 and source is not SourceChoice.url:
        raise typer.BadParameter(f"--sha256 pins a download: it applies to --source url, not {source.value}")
    return {
        SourceChoice.synthetic: {} if seed is None else {"seed": seed},
        SourceChoice.local: {"path": str(path)},
        SourceChoice.url: {"url": url, **({"sha256": sha256} if sha256 else {})},
        SourceChoice.none: {},
    }[source]


def schedule_source(
    configured: ScheduleParams,
    source: SourceChoice | None,
    path: Path | None,
    url: str | None,
    sha256: str | None,
    allow_synthetic: bool,
) -> tuple[str, dict[str, Any]]:
    """The data source of scheduled runs: the command's options, else params.yaml's `schedule:`.

    A schedule must name its data; the embedded synthetic set (drawn lungs, not X-rays) only when
    asked for explicitly.
    """
    if source is not None:  # the command names the source: its options, not params.yaml's
        return _scheduled(source.value, path, url, sha256, allow_synthetic)
    return _scheduled(
        configured.source,
        Path(configured.path) if configured.path else None,
        configured.url or None,
        configured.sha256 or None,
        allow_synthetic,
    )


def _scheduled(
    kind: str, path: Path | None, url: str | None, sha256: str | None, allow_synthetic: bool
) -> tuple[str, dict[str, Any]]:
    if not kind:
        raise ValueError(
            "scheduled retraining needs a data source: set schedule.source (local, url or none) "
            "in params.yaml, or pass --source"
        )
    if kind == "synthetic" and not allow_synthetic:
        raise ValueError(
            "--source synthetic retrains on the embedded demo images (drawn lungs, not X-rays); "
            "pass --allow-synthetic to schedule it anyway"
        )
    try:
        return kind, _options(SourceChoice(kind), path, url, None, sha256)
    except typer.BadParameter as exc:
        raise ValueError(exc.message) from None


def _params_file(workdir: Path) -> Path:
    return (workdir if (workdir / "params.yaml").is_file() else workspace.project_root()) / "params.yaml"


def _refuse(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_REFUSED)


def run_command(
    workdir: Annotated[
        Path, typer.Option(help="Workspace (a git + DVC repo holding a copy of the code, dvc.yaml and params.yaml).")
    ] = Path("demo"),
    source: Annotated[
        SourceChoice,
        typer.Option(help="Data source: synthetic (embedded default, offline), local, url, or none (keep data/raw)."),
    ] = SourceChoice.synthetic,
    path: Annotated[Path | None, typer.Option(help="local: folder or archive to fetch.")] = None,
    url: Annotated[str | None, typer.Option(help="url: http(s) address of a zip or tar archive.")] = None,
    sha256: Annotated[
        str | None, typer.Option(help="url: expected SHA-256 of the archive (refused if it differs).")
    ] = None,
    seed: Annotated[int, typer.Option(help="synthetic: generator seed (same seed, same images).")] = 0,
    tolerance: Annotated[
        float | None, typer.Option(help="Gate: non-inferiority margin (default: params.yaml gate.tolerance).")
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            help="Gate: a validation metric of eval/metrics.json, repeatable (default: params.yaml gate.metrics)."
        ),
    ] = None,
    create: Annotated[
        bool,
        typer.Option(
            "--create/--no-create",
            help="Create the workspace, or refresh its code and params from this checkout, first.",
        ),
    ] = True,
) -> None:
    """Run the pipeline flow: fetch, `dvc repro` stage by stage, gate against the champion, promote, publish."""
    options = _options(source, path, url, seed, sha256)
    try:
        with workspace.lock(workdir):
            if create:
                workspace.create(workdir)
            # Before any stage: `dvc repro` deletes a stage's outputs before its command reads params.
            configured = load_params(_params_file(workdir)).gate
            try:
                dataclasses.replace(
                    configured,
                    metrics=tuple(metric or configured.metrics),
                    tolerance=configured.tolerance if tolerance is None else tolerance,
                ).validate("gate")
            except ParamsError as exc:
                raise ParamsError(f"--metric/--tolerance: {exc}") from None
            with prefect_api(echo=lambda line: typer.echo(line, err=True)):
                from flows.pipeline import pipeline, where  # imports Prefect (seconds): only once a run starts

                state = pipeline(
                    str(workdir),
                    source=source.value,
                    source_options=options,
                    gate_metrics=metric or None,
                    tolerance=tolerance,
                    return_state=True,
                )
    except (workspace.WorkspaceBusy, ParamsError, ServerUnavailable) as exc:
        raise _refuse(str(exc)) from None
    typer.echo(where(state, workdir))
    raise typer.Exit(0 if state.is_completed() else 1)


def serve_command(
    workdir: Annotated[Path, typer.Option(help="Workspace the runs use (a git + DVC repo; created if absent).")] = Path(
        "demo"
    ),
    cron: Annotated[
        str | None, typer.Option(help="Retraining schedule, cron syntax (default: params.yaml schedule.cron).")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option(help="Time zone of the schedule (default: params.yaml schedule.timezone).")
    ] = None,
    source: Annotated[
        SourceChoice | None,
        typer.Option(
            help="Data source for each run: local, url, none (default: params.yaml schedule.source; required)."
        ),
    ] = None,
    path: Annotated[
        Path | None, typer.Option(help="local: folder or archive to fetch (default: schedule.path).")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="url: http(s) address of a zip or tar archive (default: schedule.url).")
    ] = None,
    sha256: Annotated[
        str | None, typer.Option(help="url: expected SHA-256 of the archive (default: schedule.sha256).")
    ] = None,
    allow_synthetic: Annotated[
        bool, typer.Option("--allow-synthetic", help="Allow --source synthetic (demo images, not X-rays).")
    ] = False,
    name: Annotated[str, typer.Option(help="Deployment name.")] = "scheduled-retraining",
) -> None:
    """Serve the pipeline as a scheduled deployment, one run at a time (needs `prefect server start`)."""
    try:
        configured = load_params(_params_file(workdir)).schedule
        when = dataclasses.replace(configured, cron=cron or configured.cron, timezone=timezone or configured.timezone)
        when.validate("schedule")
        kind, options = schedule_source(configured, source, path, url, sha256, allow_synthetic)
    except (ParamsError, ValueError) as exc:
        raise _refuse(str(exc)) from None

    # Prefect (seconds to import) only once the options are known to be good.
    from prefect.settings import PREFECT_API_URL

    from flows.deploy import serve_deployment

    if not PREFECT_API_URL.value():
        raise _refuse(
            "PREFECT_API_URL is not set, and a temporary server cannot schedule runs: start "
            "`prefect server start` and export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    serve_deployment(
        workdir, kind, options, cron=when.cron, timezone=when.timezone, name=name, allow_synthetic=allow_synthetic
    )


app = typer.Typer(add_completion=False, no_args_is_help=True, help="pneumo's Prefect flows.", **HELP_SETTINGS)
app.command("run")(run_command)
app.command("serve")(serve_command)

if __name__ == "__main__":  # pragma: no cover
    app()
