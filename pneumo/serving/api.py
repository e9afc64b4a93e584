"""The HTTP API and web page of `pneumo serve` (FastAPI): thin handlers over `pneumo.serving.service`.

Routes: `GET /` (the page, `static/`), `POST /v1/predict`, `GET /v1/model`, `GET /v1/model/card`,
`GET /healthz`, `GET /readyz`, and FastAPI's `/docs`. Every error is JSON `{"detail", "status"}`.
The model loads in a background thread when a worker starts, so /readyz can say "loading" until it
is loaded and warm; inference runs in a worker thread, never on the event loop. Two pure ASGI guards
run before any handler: the body limit (413 before the multipart parser reads past it) and, with
PNEUMO_API_KEY set, the key (every route but the health checks).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from pneumo import __version__
from pneumo.serving.service import API_KEY_ENV, ServeConfig, Service, Upload, UploadError

log = logging.getLogger("pneumo.serve")

STATIC = Path(__file__).with_name("static")
OPEN_PATHS = ("/healthz", "/readyz")
DOCS_ASSETS = "/docs-assets"  # Swagger UI's files, from the swagger-ui-bundle package: /docs works offline


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "status": status}, status_code=status, headers=headers)


async def _send_json(send: Send, response: JSONResponse) -> None:
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass


class BodyLimit:
    """413 for a request body over `limit` bytes: from Content-Length up front, else counted as it streams."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = problem(413, f"request body over {self.limit} bytes (--max-upload-mb)")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _send_json(send, too_large)
        seen, started = 0, False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _send_json(send, too_large)


def key_matches(headers: dict[bytes, bytes], key: str) -> bool:
    """X-API-Key, Authorization: Bearer, or HTTP Basic with the key as password (what a browser sends)."""
    given = headers.get(b"x-api-key", b"").decode("latin-1")
    auth = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        given = given or value.strip()
    elif scheme.lower() == "basic":
        try:
            given = given or base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            pass
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


class ApiKey:
    """With a key set, 401 for any route but the health checks unless the request carries it."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and scope["path"] not in OPEN_PATHS
        if guarded and not key_matches(dict(scope["headers"]), self.key):
            response = problem(
                401,
                f"API key missing or wrong: send it as X-API-Key, Authorization: Bearer, or the Basic password "
                f"(the server reads it from {API_KEY_ENV})",
                {"WWW-Authenticate": 'Basic realm="pneumo"'},
            )
            return await _send_json(send, response)
        await self.app(scope, receive, send)


def create_app(config: ServeConfig, api_key: str | None = None) -> FastAPI:
    """The ASGI app for one worker: its own Service, loaded in the background at start-up."""
    service = Service(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=service.load, name="pneumo-model-load", daemon=True).start()
        yield

    app = FastAPI(
        docs_url=None,  # served below from swagger-ui-bundle's files: FastAPI's own /docs loads them from a CDN
        redoc_url=None,
        title="pneumo",
        version=__version__,
        lifespan=lifespan,
        description="Pneumonia on pediatric chest X-rays: normal, pneumonia, refer or rejected, with the calibrated "
        "probability and the reasons. Assistive only, not a diagnosis: a qualified clinician reads every image.",
    )
    app.state.service = service
    _errors(app)
    _routes(app, service)
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"])
    if api_key:
        app.add_middleware(ApiKey, key=api_key)
    app.add_middleware(BodyLimit, limit=config.max_upload_bytes)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return problem(400, f"bad request: {where}")

    @app.exception_handler(UploadError)
    async def refused(_: Request, exc: UploadError) -> JSONResponse:
        return problem(exc.status, str(exc))


def _ready(service: Service) -> JSONResponse | None:
    if service.state == "ready":
        return None
    loading = service.state == "loading"
    detail = "the model is still loading" if loading else f"the model failed to load: {service.error}"
    return problem(503, detail, {"Retry-After": "5"} if loading else None)


def _routes(app: FastAPI, service: Service) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="pneumo API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Readiness: 200 once the model is loaded and warm, 503 while loading or after a failed load."""
        if service.state == "ready":
            return JSONResponse({"status": "ready", "model": service.info["file"]})
        body: dict[str, Any] = {"status": service.state}
        if service.error:
            body["detail"] = service.error
        return JSONResponse(body, status_code=503)

    @app.get("/v1/model", tags=["model"])
    async def model() -> Any:
        """The model file, its sha256, the backend, whether heat maps are available, and its card."""
        return _ready(service) or service.describe()

    @app.get("/v1/model/card", tags=["model"])
    async def card() -> Any:
        """The model card alone."""
        return _ready(service) or JSONResponse(service.describe()["card"])

    @app.post("/v1/predict", tags=["predict"])
    async def predict(
        files: Annotated[list[UploadFile] | None, File(description="JPEG, PNG or DICOM files")] = None,
        heatmap: Annotated[bool, Query(description="add each image's Grad-CAM overlay as a PNG data URL")] = False,
    ) -> Any:
        """A decision per file (normal, pneumonia, refer, rejected), as `pneumo predict --json` prints it."""
        not_ready = _ready(service)
        if not_ready is not None:
            return not_ready
        uploads = [Upload(f.filename or "", await f.read()) for f in files or []]
        results = await run_in_threadpool(service.predict, uploads, heatmap)
        info = service.describe()
        model = {"file": info["file"], "sha256": info["sha256"]}
        return JSONResponse({"results": results, "model": model, "notice": info["notice"]})  # encoded once


def app_from_env() -> FastAPI:
    """uvicorn's factory in each worker: the settings `pneumo serve` checked, from the environment."""
    config = ServeConfig.from_env()
    log.info("worker %d: serving %s", os.getpid(), Path(config.model or "").name or "the packaged model")
    return create_app(config, os.environ.get(API_KEY_ENV) or None)


class NoDelayHTTP(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol with TCP_NODELAY on every connection. With --workers > 1 uvicorn binds the socket
    itself without naming TCP, so asyncio leaves Nagle's algorithm on: a response's body then waited ~40 ms for
    the client's delayed ACK of its headers (every request, /healthz included)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
