"""``create_app(config) -> FastAPI``: the OpenAI-compatible routes, the stream WebSocket, and ``/health``,
``/ready``, ``/metrics`` beside them; one error shape for every 4xx/5xx.

The lifespan loads the models once (unless a loaded :class:`~speechtrt.serve.state.ServerState` is given, as the
CLI does so that a missing checkpoint fails before the port is bound), starts the worker threads, and stops them
after the server drained.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from speechtrt import __version__
from speechtrt.errors import CapacityError, InputError
from speechtrt.serve import openai_api, ws
from speechtrt.serve.admission import BodyLimit, BodyTooLarge, RequireKey
from speechtrt.serve.config import ServeConfig
from speechtrt.serve.errors import APIError
from speechtrt.serve.state import ServerState

log = logging.getLogger("speechtrt.serve")

ROUTES = ("/v1/audio/speech", "/v1/audio/transcriptions", "/v1/models", "/health", "/ready", "/metrics")


def create_app(config: ServeConfig, state: ServerState | None = None) -> FastAPI:
    """The server's ASGI app. With ``state`` the models are already loaded; else the lifespan loads them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal state
        if state is None:
            state = await asyncio.to_thread(ServerState.load, config)
            app.state.speechtrt = state
        state.start()
        try:
            yield
        finally:
            await asyncio.to_thread(state.stop)

    app = FastAPI(title="speechtrt", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    if state is not None:
        app.state.speechtrt = state
    app.include_router(openai_api.router)
    app.include_router(ws.router)
    _install_error_handlers(app)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request):
        s: ServerState | None = getattr(request.app.state, "speechtrt", None)
        if s is None or not s.ready:
            return APIError(503, "not ready: the models are still loading", None, "not_ready",
                            {"Retry-After": "1"}).response()
        if s.admission.draining:
            return APIError(503, "not ready: the server is draining for shutdown", None, "draining",
                            {"Retry-After": str(s.config.limits.retry_after_s)}).response()
        return {"status": "ready", "models": openai_api.model_cards(s)}

    @app.get("/metrics")
    async def metrics(request: Request):
        return Response(request.app.state.speechtrt.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, max_bytes=config.limits.max_body_bytes)
    app.add_middleware(RequireKey)
    app.add_middleware(RequestMetrics)
    return app


class RequestMetrics:
    """ASGI middleware: every HTTP response counted by route and status, its latency to the last byte observed."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500
        path = scope.get("path", "")
        route = path if path in ROUTES or path.startswith("/v1/models/") else "other"
        route = "/v1/models" if route.startswith("/v1/models/") else route

        async def counting_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            state = getattr(scope.get("app").state, "speechtrt", None) if scope.get("app") else None
            if state is not None:
                state.metrics.requests.labels(route, str(status)).inc()
                if route.startswith("/v1/"):
                    state.metrics.request_latency.labels(route).observe(time.perf_counter() - t0)


def validation_message(errors) -> tuple[str, str | None, str]:
    """One sentence for FastAPI's validation errors: ``field: problem; ...``; the first field is the ``param``."""
    parts, param, code = [], None, "invalid_value"
    for e in errors:
        if e.get("type") == "json_invalid":
            detail = (e.get("ctx") or {}).get("error", "")
            return f"request body is not valid JSON ({detail}); send an object like {{\"model\": ..., " \
                   "\"input\": ...}", None, "invalid_json"
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path", "header", "form")]
        field = ".".join(loc) or "body"
        param = param or (loc[0] if loc else None)
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        if e.get("type") == "missing":
            msg, code = "required", "missing_field"
        parts.append(f"{field}: {msg}")
    return "; ".join(parts) or "invalid request", param, code


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        message, param, code = validation_message(exc.errors())
        return APIError(400, message, param, code).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        if isinstance(exc, BodyTooLarge):
            return exc.error.response()
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see GET /v1/models, POST /v1/audio/speech, " \
                      "POST /v1/audio/transcriptions, WS /v1/stream"
        return APIError(exc.status_code, message, None, None, dict(exc.headers or {})).response()

    @app.exception_handler(InputError)
    async def input_error(request, exc: InputError):
        return APIError(400, str(exc), None, "invalid_value").response()

    @app.exception_handler(CapacityError)
    async def capacity(request, exc: CapacityError):
        return APIError(429, str(exc), None, "capacity", {"Retry-After": "1"}).response()

    @app.exception_handler(openai_api.ClientGone)
    async def gone(request, exc):
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it

    @app.exception_handler(Exception)
    async def internal(request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return APIError(500, f"internal error: {exc.__class__.__name__}: {exc}", None, "server_error").response()
