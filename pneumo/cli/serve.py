"""`pneumo serve`: the HTTP API and web page (uvicorn over `pneumo.serving.api`)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pneumo.serving.service import API_KEY_ENV, CONFIG_ENV, ServeConfig

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve_command(
    model: Annotated[
        Path | None,
        typer.Option(help="Model file (.tflite or .h5); default: the int8 model shipped with pneumo."),
    ] = None,
    card: Annotated[Path | None, typer.Option(help="Model card; default: model_card.json beside the model.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind; other than loopback exposes it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind (1-65535).")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes, each with its own copy of the model.")] = 1,
    slots: Annotated[
        int | None,
        typer.Option(
            help="Answers computed at once per worker, each on its own LiteRT interpreter; default: one per CPU "
            "core (a Keras model: 1).",
        ),
    ] = None,
    threads: Annotated[int, typer.Option(help="LiteRT threads per interpreter.")] = 1,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body, in MB (413 above).")] = 20.0,
    max_files: Annotated[int, typer.Option(help="Most files in one request (413 above).")] = 16,
    max_pixels: Annotated[
        int, typer.Option(help="Refuse images whose declared size exceeds this many pixels (422).")
    ] = 50_000_000,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow browser calls from this origin (repeatable); default: CORS off.")
    ] = None,
    log_filenames: Annotated[
        bool, typer.Option(help="Log uploaded file names (off: logs carry no names, which may identify a patient).")
    ] = False,
    proxy_headers: Annotated[
        bool, typer.Option(help="Trust X-Forwarded-* from --forwarded-allow-ips (behind a reverse proxy).")
    ] = False,
    forwarded_allow_ips: Annotated[str, typer.Option(help="Proxies trusted for X-Forwarded-*.")] = "127.0.0.1",
) -> None:
    """Serve the model: a web page at / and an HTTP API under /v1 (assistive only, not a diagnosis).

    With PNEUMO_API_KEY set, every route but /healthz and /readyz needs the key.
    """
    import uvicorn  # inside: only this command serves

    from pneumo.serving.workers import balanced
    from pneumo.serving.workers import run as run_workers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if not 1 <= port <= 65535 or workers < 1 or max_upload_mb <= 0:
            raise ValueError(
                f"--port {port}, --workers {workers}, --max-upload-mb {max_upload_mb}: expected a port in 1-65535, "
                "at least one worker and a positive upload limit"
            )
        config = ServeConfig(
            model=str(model) if model else None,
            card=str(card) if card else None,
            threads=threads,
            slots=slots if slots is not None else os.cpu_count() or 1,  # a busy worker can still use every core
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_files=max_files,
            max_pixels=max_pixels,
            cors_origins=tuple(cors_origin or ()),
            log_filenames=log_filenames,
        ).check()
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    os.environ[CONFIG_ENV] = config.to_env()
    shown = f"[{host}]" if ":" in host else host
    keyed = "API key required" if os.environ.get(API_KEY_ENV) else f"no API key ({API_KEY_ENV} unset)"
    typer.echo(
        f"pneumo serve: http://{shown}:{port}/ (model {config.model}; {workers} worker(s); {keyed}; "
        "assistive only, not a diagnosis)"
    )
    if host not in LOOPBACK:
        typer.echo(f"warning: binding {host} exposes the service beyond this machine", err=True)
    options = {
        "app": "pneumo.serving.api:app_from_env",
        "factory": True,
        "http": "pneumo.serving.api:NoDelayHTTP",
        "log_level": "info",
        "proxy_headers": proxy_headers,
        "forwarded_allow_ips": forwarded_allow_ips,
        "timeout_graceful_shutdown": 10,
    }
    if workers > 1 and balanced():
        try:
            run_workers(options, host, port, workers)  # a socket per worker: the kernel spreads connections
        except OSError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        return
    uvicorn.run(**options, host=host, port=port, workers=workers)
