"""Run the operator (``roomee run --target operator``): kopf in this event loop, plus a small HTTP
server for ``/health`` (liveness: the operator loop runs), ``/health/ready`` (kopf has started and
watches, or the replica stands by) and ``/metrics`` (Prometheus). Two replicas, one active: kopf
runs only in the replica holding the Lease (``leader.py``); kopf's peering is not used."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import kopf
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from roomee import __version__
from roomee.kit.observability import configure_logging
from roomee.kit.settings import Settings
from roomee.operator.leader import LeaderElection, NoCluster, connection_info, default_identity
from roomee.operator.logs import configure_kopf_logging
from roomee.operator.metrics import leader_gauge
from roomee.operator.platform import PlatformAPI
from roomee.operator.settings import OperatorSettings

log = logging.getLogger("roomee.operator")


def operator_settings(settings: Settings) -> OperatorSettings:
    """The platform settings given (CLI overrides included) with the operator's own from the environment."""
    return OperatorSettings(**settings.model_dump())


def health_app(running: asyncio.Task, ready: asyncio.Event, role: dict) -> FastAPI:
    app = FastAPI(title="Roomee operator", version=__version__, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> JSONResponse:
        """Liveness: the kopf operator loop is running."""
        alive = not running.done()
        return JSONResponse({"status": "ok" if alive else "stopped", "targets": ["operator"], "version": __version__,
                             "leader": bool(role.get("leader"))}, status_code=200 if alive else 503)

    @app.get("/health/ready")
    async def health_ready() -> JSONResponse:
        """Readiness: kopf has started its watches (the leader), or this replica stands by."""
        is_ready = not running.done() and (ready.is_set() or not role.get("leader"))
        return JSONResponse({"status": "ok" if is_ready else "starting"}, status_code=200 if is_ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _kopf(settings: OperatorSettings, api: PlatformAPI, ready: asyncio.Event | None,
                stop: asyncio.Event) -> None:
    namespaces = settings.operator_namespaces
    await kopf.operator(
        registry=kopf.get_default_registry(),
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        ready_flag=ready,
        stop_flag=stop,  # set before cancelling: kopf then stops without its SIGKILL safeguard
        memo=kopf.Memo(api=api, drift_checked_at={}, repair_after={}, repair_failures={}, outage_retries={},
                       identity=settings.operator_identity or default_identity()),
    )


async def _stopped(task: asyncio.Task, stop: asyncio.Event) -> None:
    stop.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def run_operator(settings: OperatorSettings, ready: asyncio.Event | None = None,
                       role: dict | None = None) -> None:
    """kopf's operator with the platform clients in its memo, until cancelled; with leader
    election (the default) kopf runs only while this replica holds the Lease, and the Lease is
    released when this returns. ``role["leader"]`` says which it is now."""
    from roomee.operator import handlers  # noqa: F401  (registers the handlers)

    configure_kopf_logging()
    role = role if role is not None else {}
    role["leader"] = False
    api = PlatformAPI(settings)
    election = LeaderElection.from_settings(settings) if settings.operator_leader_election else None
    try:
        while True:
            if election is not None:
                await election.acquire()
            role["leader"] = True
            leader_gauge.set(1)
            stop = asyncio.Event()
            running = asyncio.create_task(_kopf(settings, api, ready, stop))
            holding = asyncio.create_task(election.hold()) if election is not None else asyncio.Future()
            try:
                await asyncio.wait({running, holding}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                holding.cancel()
                role["leader"] = False
                leader_gauge.set(0)
                if ready is not None:
                    ready.clear()
                if not running.done():
                    await _stopped(running, stop)
            if not holding.done() or holding.cancelled():
                running.result()  # kopf ended by itself: its error, or a clean stop, ends this too
                return
    finally:
        if election is not None:
            await asyncio.shield(election.release())
            await election.aclose()
        await api.aclose()


def no_cluster_exit() -> None:
    """Without a cluster: say in one line what was looked for, and exit 2."""

    try:
        connection_info()
    except NoCluster as exc:
        print(f"roomee operator: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def serve(settings: Settings) -> None:
    """The ``operator`` target's process: kopf (while leading) and its health/metrics server on
    ``host:port``; SIGTERM stops kopf, releases the Lease, and exits."""
    settings = operator_settings(settings)
    no_cluster_exit()
    configure_logging(settings, "operator")
    ready = asyncio.Event()
    role: dict = {}
    running = asyncio.create_task(run_operator(settings, ready, role))
    server = uvicorn.Server(uvicorn.Config(health_app(running, ready, role), host=settings.host, port=settings.port,
                                           log_config=None, lifespan="off", access_log=False))
    terminate = asyncio.Event()
    loop = asyncio.get_running_loop()

    def watch_signals() -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, terminate.set)

    watch_signals()
    serving = asyncio.create_task(server.serve())
    signalled = asyncio.create_task(terminate.wait())
    try:
        while True:
            ready_now = asyncio.create_task(ready.wait())
            done, _ = await asyncio.wait({running, serving, signalled, ready_now}, return_when=asyncio.FIRST_COMPLETED)
            ready_now.cancel()
            if ready_now in done and not done - {ready_now}:
                watch_signals()  # kopf took SIGTERM over as it started: stopping is ours to do
                await asyncio.sleep(0.5)
                while ready.is_set() and not running.done() and not terminate.is_set():
                    await asyncio.sleep(0.5)
                continue
            for task in done - {signalled, ready_now}:
                task.result()
            break
    finally:
        server.should_exit = True
        signalled.cancel()
        running.cancel()
        await asyncio.gather(running, serving, signalled, return_exceptions=True)
