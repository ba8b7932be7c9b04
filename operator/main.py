"""Run the operator (``roomee run --target operator``): kopf in this event loop, plus a small HTTP
server for ``/health`` (liveness: the operator loop runs), ``/health/ready`` (kopf has started and
watches) and ``/metrics`` (Prometheus; one replica, so no peering)."""

from __future__ import annotations

import asyncio
import logging

import kopf
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from roomee import __version__
from roomee.kit.observability import configure_logging
from roomee.kit.settings import Settings
from roomee.operator.platform import PlatformAPI
from roomee.operator.settings import OperatorSettings

log = logging.getLogger("roomee.operator")


def operator_settings(settings: Settings) -> OperatorSettings:
    """The platform settings given (CLI overrides included) with the operator's own from the environment."""
    return OperatorSettings(**settings.model_dump())


def health_app(running: asyncio.Task, ready: asyncio.Event) -> FastAPI:
    app = FastAPI(title="Roomee operator", version=__version__, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> JSONResponse:
        """Liveness: the kopf operator loop is running."""
        alive = not running.done()
        return JSONResponse({"status": "ok" if alive else "stopped", "targets": ["operator"], "version": __version__},
                            status_code=200 if alive else 503)

    @app.get("/health/ready")
    async def health_ready() -> JSONResponse:
        """Readiness: kopf has started its watches."""
        is_ready = ready.is_set() and not running.done()
        return JSONResponse({"status": "ok" if is_ready else "starting"}, status_code=200 if is_ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


async def run_operator(settings: OperatorSettings, ready: asyncio.Event | None = None) -> None:
    """kopf's operator with the platform clients in its memo, until cancelled."""
    from roomee.operator import handlers  # noqa: F401  (registers the handlers)

    api = PlatformAPI(settings)
    namespaces = settings.operator_namespaces
    try:
        await kopf.operator(
            registry=kopf.get_default_registry(),
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            ready_flag=ready,
            memo=kopf.Memo(api=api, drift_checked_at={}),
        )
    finally:
        await api.aclose()


async def serve(settings: Settings) -> None:
    """The ``operator`` target's process: kopf and its health/metrics server on ``host:port``."""
    settings = operator_settings(settings)
    configure_logging(settings, "operator")
    ready = asyncio.Event()
    running = asyncio.create_task(run_operator(settings, ready))
    server = uvicorn.Server(uvicorn.Config(health_app(running, ready), host=settings.host, port=settings.port,
                                           log_config=None, lifespan="off", access_log=False))
    serving = asyncio.create_task(server.serve())
    try:
        done, _ = await asyncio.wait({running, serving}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        server.should_exit = True
        running.cancel()
        await asyncio.gather(running, serving, return_exceptions=True)
