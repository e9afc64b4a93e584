"""Scheduled retraining: the `pipeline` flow as a deployment with a cron schedule, one run at a time.

    prefect server start                     # in one terminal (SQLite, offline)
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows serve --workdir demo --source local --path DATA

A DVC workspace holds one lock, so the deployment allows one run at a time (deployment
concurrency limit 1; later runs wait in the queue) and the serving process runs at most one
flow run at once. See docs/orchestration.md for work pools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.types.entrypoint import EntrypointType

from flows.pipeline import pipeline
from pneumo.core.config import ScheduleParams

DEPLOYMENT_NAME = "scheduled-retraining"
DEFAULT_CRON = ScheduleParams().cron  # params.yaml's schedule section holds the configured one
DEFAULT_TIMEZONE = ScheduleParams().timezone
TAGS = ["pneumo", "dvc-workspace"]


def build_deployment(
    workdir: str | Path,
    source: str,
    source_options: dict[str, Any] | None = None,
    *,
    cron: str = DEFAULT_CRON,
    timezone: str = DEFAULT_TIMEZONE,
    name: str = DEPLOYMENT_NAME,
    flow_kwargs: dict[str, Any] | None = None,
    allow_synthetic: bool = False,
):
    """The deployment (not yet registered): cron schedule, parameters, concurrency limit 1 (enqueue).

    `source` must be named; "synthetic" (demo images, not X-rays) only with `allow_synthetic`.
    """
    if source == "synthetic" and not allow_synthetic:
        raise ValueError(
            "scheduled retraining on the synthetic demo set needs allow_synthetic=True "
            "(--allow-synthetic): it trains on drawn lungs, not X-rays"
        )
    parameters = {
        "workdir": str(Path(workdir).resolve()),
        "source": source,
        "source_options": source_options or {},
        **(flow_kwargs or {}),
    }
    return pipeline.to_deployment(
        name=name,
        schedule=CronSchedule(cron=cron, timezone=timezone),
        parameters=parameters,
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        tags=TAGS,
        entrypoint_type=EntrypointType.MODULE_PATH,
        description="Retrain on fresh data; promote only if not worse than the champion on validation.",
    )


def serve_deployment(
    workdir: str | Path,
    source: str,
    source_options: dict[str, Any] | None = None,
    *,
    cron: str = DEFAULT_CRON,
    timezone: str = DEFAULT_TIMEZONE,
    name: str = DEPLOYMENT_NAME,
    flow_kwargs: dict[str, Any] | None = None,
    allow_synthetic: bool = False,
) -> None:
    """Register the deployment with the server at PREFECT_API_URL and run its flow runs here (blocks).

    Stops cleanly on SIGTERM / Ctrl-C (the schedule is paused on shutdown).
    """
    deployment = build_deployment(
        workdir,
        source,
        source_options,
        cron=cron,
        timezone=timezone,
        name=name,
        flow_kwargs=flow_kwargs,
        allow_synthetic=allow_synthetic,
    )
    serve(deployment, limit=1)
