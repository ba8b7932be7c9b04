"""The ``roomee`` command: one binary, targets chosen by ``--target`` (Mimir's single-binary idea)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
import uvicorn

from roomee import __version__, targets
from roomee.kit import loop
from roomee.kit.settings import Settings

app = typer.Typer(help="Roomee Platform.", no_args_is_help=True, add_completion=False)
events_app = typer.Typer(help="Inspect and replay dead-lettered events.", no_args_is_help=True)
app.add_typer(events_app, name="events")
notifications_app = typer.Typer(help="Maintain the notification service's data.", no_args_is_help=True)
app.add_typer(notifications_app, name="notifications")

DEMO_ADMIN_EMAIL = "admin@roomee.example.com"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"roomee {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
) -> None:
    """Roomee Platform: run, migrate and administer the services."""


def _settings(**overrides) -> Settings:
    settings = Settings()
    changes = {key: value for key, value in overrides.items() if value is not None}
    return settings.model_copy(update=changes) if changes else settings


def _resolve(target: str):
    try:
        return targets.resolve(target)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


async def _serve(settings: Settings, specs, on_started=None) -> None:
    from roomee.kit.app import create_app

    problems = settings.unsafe_production_defaults([spec.name for spec in specs])
    if problems:
        typer.echo("error: refusing to start with a database URL (production) and unsafe defaults:", err=True)
        for problem in problems:
            typer.echo(f"  - {problem}", err=True)
        typer.echo("(ROOMEE_ALLOW_UNSAFE_DEFAULTS=true starts anyway, for development)", err=True)
        raise typer.Exit(code=2)
    application = create_app(settings, specs)
    # The client address comes from X-Forwarded-For only when the proxy is trusted: throttles key on it.
    config = uvicorn.Config(application, host=settings.host, port=settings.port, log_config=None, lifespan="on",
                            proxy_headers=True, forwarded_allow_ips=settings.forwarded_allow_ips)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if not server.started:
        try:
            await serving
        except SystemExit:
            pass
        typer.echo(f"error: could not serve on {settings.host}:{settings.port} (see the log above)", err=True)
        raise typer.Exit(code=1)
    if server.started and on_started is not None:
        # The extra step uses the API: it waits for the databases at head and the workers (or a SIGTERM).
        started = asyncio.create_task(application.state.platform.wait_started())
        await asyncio.wait({started, serving}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        await asyncio.gather(started, return_exceptions=True)  # a failed start-up is logged by the platform
    if server.started and on_started is not None and not serving.done() and application.state.platform.started.is_set():
        try:
            await on_started()
        except Exception as exc:  # the platform keeps serving; the operator sees why the extra step failed
            typer.echo(f"warning: {exc}", err=True)
    await serving


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    data_dir: Annotated[Optional[Path], typer.Option(help="Where embedded data lives.")] = None,
) -> None:
    """Run every service in one process on one port (embedded defaults: SQLite and the built-in bus).

    On a fresh data dir it creates a demo hotel and its administrator and prints how to log in.
    """
    settings = _settings(port=port, host=host, data_dir=data_dir)
    if "log_format" not in settings.model_fields_set:
        # A person is reading this terminal: plain lines; deployments keep JSON.
        settings = settings.model_copy(update={"log_format": "text"})
    credentials_file = settings.ensure_data_dir() / "admin-credentials.json"

    async def greet() -> None:
        if not credentials_file.exists():
            from roomee.bootstrap import provision_hotel

            # Through the hotel service's provisioning, as any hotel: QR code, storage quota, subscription.
            result = await provision_hotel(settings, hotel_name="Demo Hotel", email=DEMO_ADMIN_EMAIL,
                                           phone="+1 555 0100", address="1 Demo Street", locale="en")
            credentials_file.write_text(json.dumps({"email": result.email, "password": result.password,
                                                    "hotelId": result.hotel_id, "workspaceId": result.workspace_id}))
            credentials_file.chmod(0o600)
        credentials = json.loads(credentials_file.read_text())
        base = settings.base_url
        typer.echo(
            f"\nRoomee is running at {base}  (API docs: {base}/docs)\n"
            f"Log in:  curl -s -X POST {base}/users/signIn -H 'content-type: application/json' "
            f"-d '{{\"email\": \"{credentials['email']}\", \"password\": \"{credentials['password']}\"}}'\n"
            f"(credentials kept in {credentials_file})\n",
        )

    loop.run(_serve(settings, _resolve(targets.ALL), greet))


@app.command()
def run(
    target: Annotated[str, typer.Option(help="Target(s) to serve: a name, a comma-separated list, or 'all'.")],
    port: Annotated[Optional[int], typer.Option(help="Port (default ROOMEE_PORT or 8080).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Interface (default ROOMEE_HOST).")] = None,
) -> None:
    """Serve the given target(s); what each Kubernetes Deployment runs."""
    settings = _settings(port=port, host=host)
    specs = _resolve(target)
    served = {spec.name for spec in specs}
    for spec in specs:
        for dependency in spec.depends_on:
            if dependency not in served and getattr(settings, f"{dependency}_url") is None:
                typer.echo(
                    f"warning: {spec.name} calls {dependency}, which is not served here and "
                    f"ROOMEE_{dependency.upper()}_URL is unset; calls will go to {settings.base_url}",
                    err=True,
                )
    runners = [spec for spec in specs if spec.runner]
    if runners:  # the operator: a process of its own, alone
        if len(specs) > 1:
            raise typer.BadParameter(f"{runners[0].name} runs alone, not with other targets")
        loop.run(runners[0].load(runners[0].runner)(settings))
        return
    loop.run(_serve(settings, specs))


@app.command()
def migrate(
    target: Annotated[str, typer.Option(help="Target(s) to migrate, or 'all'.")] = targets.ALL,
    wait_seconds: Annotated[float, typer.Option(
        min=0, help="Wait up to this long for each database and the broker to answer (a Job started beside "
        "them); 0: try once.")] = 0,
) -> None:
    """Apply every pending database migration of the given targets, and declare the broker's queues.

    A database or broker that never answers ends the command with exit code 1 and one line naming its setting.
    """
    from roomee.kit import migrations
    from roomee.kit.db import Database
    from roomee.kit.events.amqp import QueueTypeMismatch
    from roomee.kit.platform import Platform, declare_event_topology

    settings = _settings()

    async def go() -> None:
        for spec in _resolve(target):
            db = Database(spec.name, settings.for_service(spec.name))
            try:
                where = db.engine.url.render_as_string(hide_password=True)
                await _wait_for(f"the {spec.name} database at {where}",
                                f"ROOMEE_DATABASE_URL (or ROOMEE_{spec.name.upper()}_DATABASE_URL)", db.ping, wait_seconds)
                await migrations.upgrade(spec.package, db)
                typer.echo(f"{spec.name}: at {await migrations.current(spec.package, db)}")
            finally:
                await db.dispose()
        # The broker's topology is part of the schema: every queue exists before any service publishes.
        topology = Platform(settings, []).event_topology()
        try:
            await _with_broker(settings, lambda broker: declare_event_topology(broker, topology), wait_seconds)
        except QueueTypeMismatch as exc:  # RabbitMQ never changes a queue's type: say so in one line
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from None
        typer.echo(f"broker: {len(topology)} queues declared ({', '.join(sorted(topology))})")

    asyncio.run(go())


async def _wait_for(what: str, setting: str, attempt, wait_seconds: float) -> None:
    """Run ``attempt`` until it succeeds or ``wait_seconds`` pass (0: once). The first failure says once what
    it waits for; never answering ends the command (exit 1) with one line naming ``setting``."""
    deadline = time.monotonic() + wait_seconds
    delay, said = 0.5, False
    while True:
        try:
            await asyncio.wait_for(attempt(), timeout=max(deadline - time.monotonic(), 10.0))
            return
        except Exception as exc:  # refused, unknown host, timeout, not accepting connections yet...
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            left = deadline - time.monotonic()
            if left <= 0:
                within = f" within {wait_seconds:g} s" if wait_seconds else ""
                typer.echo(f"error: {what} did not answer{within} ({reason}); check {setting}", err=True)
                raise typer.Exit(code=1) from None
            if not said:
                typer.echo(f"waiting up to {wait_seconds:g} s for {what} ({reason})", err=True)
                said = True
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)


@app.command()
def makemigrations(
    target: Annotated[str, typer.Option(help="One target.")],
    message: Annotated[str, typer.Option("-m", "--message", help="Revision message.")],
) -> None:
    """(Developers) Autogenerate a migration from the target's models."""
    import tempfile

    from roomee.kit import migrations
    from roomee.kit.db import Database

    (spec,) = _resolve(target)
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(data_dir=Path(scratch), database_url=None)
        migrations.revision(spec.package, Database(spec.name, settings), message)


@app.command()
def bootstrap(
    hotel_name: Annotated[str, typer.Option(help="Name of the hotel (its first workspace takes it too).")],
    email: Annotated[str, typer.Option(help="The administrator's email.")],
    phone: Annotated[str, typer.Option(help="The hotel's phone number.")],
    address: Annotated[str, typer.Option(help="The hotel's postal address.")],
    password: Annotated[Optional[str], typer.Option(help="The administrator's password (generated if omitted).")] = None,
    plan: Annotated[str, typer.Option(help="free, standard or premium (its storage quota).")] = "premium",
    locale: Annotated[str, typer.Option(help="The hotel's default language (fr or en); members may choose theirs.")] = "en",
) -> None:
    """Provision a hotel through the hotel service (POST /hotel/add: QR code, storage quota, subscription,
    administrator) on a running platform (ROOMEE_PUBLIC_URL), then sign its administrator up; prints the
    credentials. Running it again with the same name and email finds the same hotel (within 24 h)."""
    from roomee.bootstrap import ProvisioningFailed, provision_hotel

    try:
        result = asyncio.run(provision_hotel(_settings(), hotel_name=hotel_name, email=email, phone=phone,
                                             address=address, plan=plan, locale=locale, password=password))
    except ProvisioningFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if result.created:
        typer.echo(json.dumps({"hotelId": result.hotel_id, "workspaceId": result.workspace_id,
                               "memberId": result.member_id, "email": result.email, "password": result.password}))
    else:
        typer.echo(f"hotel {result.hotel_id} is ready; {email} already had an account and administers it "
                   "(sign in with its password).")


@app.command()
def token(
    client: Annotated[str, typer.Option(help="The platform client (see the README's list), e.g. operator or cli.")],
    scope: Annotated[Optional[list[str]], typer.Option(
        help="A scope the token should carry (repeatable); default every scope of the client.")] = None,
    secret: Annotated[bool, typer.Option("--secret", help="Print the client's secret instead of a token.")] = False,
) -> None:
    """Print a service token of a platform client, from the auth service's POST /oauth/token (ROOMEE_AUTH_URL,
    else ROOMEE_PUBLIC_URL), with the client's secret from the platform's settings (ROOMEE_OPERATOR_CLIENT_SECRET for
    the operator, ROOMEE_SERVICE_CLIENT_SECRETS, or ROOMEE_SERVICE_SECRET, else the data dir's); `--secret` prints that secret and calls nothing."""
    import httpx

    from roomee.kit.auth import SERVICE_SCOPES

    settings = _settings()
    if client not in SERVICE_SCOPES:
        typer.echo(f"error: unknown client {client!r}; the platform's clients: {', '.join(sorted(SERVICE_SCOPES))}",
                   err=True)
        raise typer.Exit(code=2)
    client_secret = settings.client_secret_of(client)
    if secret:
        typer.echo(client_secret)
        return
    form = {"grant_type": "client_credentials", "client_id": client, "client_secret": client_secret}
    if scope:
        form["scope"] = " ".join(scope)
    url = f"{settings.url_of('auth')}/oauth/token"
    try:
        response = httpx.post(url, data=form, timeout=settings.http_timeout_ms / 1000)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach the auth service at {url}: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if response.status_code != 200:
        try:
            problem = response.json()
            reason = f"{problem.get('error')}: {problem.get('detail')}"
        except ValueError:
            reason = response.text[:200]
        typer.echo(f"error: {url} answered {response.status_code} ({reason})", err=True)
        raise typer.Exit(code=2 if response.status_code == 400 else 1)
    typer.echo(response.json()["access_token"])


async def _with_broker(settings: Settings, action, wait_seconds: float = 0):
    from roomee.kit.events import broker_from_settings

    broker = broker_from_settings(settings)

    async def connect() -> None:
        try:
            await broker.start()
        except BaseException:
            await broker.close()  # a half-made connection is not reused: the next attempt starts over
            raise

    where = _without_password(settings.broker_url) if settings.broker_url else "(embedded, in the data dir)"
    await _wait_for(f"the broker {where}", "ROOMEE_BROKER_URL", connect, wait_seconds)
    try:
        return await action(broker)
    finally:
        await broker.close()


def _without_password(url: str) -> str:
    return re.sub(r"(://[^:/@,]*):[^@/]*@", r"\1:***@", url)


def _known_queue(settings: Settings, queue: str) -> str:
    """The broker name of one of the platform's queues; anything else ends the command (exit 2),
    since looking a typo up would declare it as a new durable queue."""
    from roomee.kit.platform import Platform

    known = sorted(name.removeprefix(settings.queue_prefix) for name in Platform(settings, []).event_topology())
    if queue not in known:
        raise typer.BadParameter(f"unknown queue {queue!r}; the platform's queues: {', '.join(known)}",
                                 param_hint="--queue")
    return settings.queue_prefix + queue


@events_app.command("dead-letters")
def dead_letters(
    queue: Annotated[str, typer.Option(help="Queue name, e.g. notification_queue.")],
    limit: Annotated[int, typer.Option(help="How many to show, oldest first.")] = 100,
) -> None:
    """List a queue's dead-lettered events (one JSON object a line), leaving them in place."""
    settings = _settings()
    name = _known_queue(settings, queue)
    letters = asyncio.run(_with_broker(settings, lambda broker: broker.dead_letters(name, limit)))
    for letter in letters:
        typer.echo(json.dumps(
            {"id": letter.id, "routingKey": letter.routing_key, "error": letter.error,
             "attempts": letter.attempts, "deadAt": letter.dead_at.isoformat() if letter.dead_at else None},
            default=str,
        ))
    if not letters:
        typer.echo(f"no dead letters in {queue}", err=True)


@events_app.command("replay")
def replay(
    queue: Annotated[str, typer.Option(help="Queue name, e.g. notification_queue.")],
    event_id: Annotated[Optional[list[str]], typer.Option("--id", help="Only these message ids (repeatable).")] = None,
) -> None:
    """Move dead-lettered events back to their queue to be handled again."""
    settings = _settings()
    name = _known_queue(settings, queue)
    count = asyncio.run(_with_broker(settings, lambda broker: broker.replay_dead_letters(name, event_id)))
    typer.echo(f"replayed {count} event(s) to {queue}")


async def _with_database(service: str, action):
    """Run ``action(db)`` on a service's database as configured (``ROOMEE_DATABASE_URL``, else the
    SQLite file in ``ROOMEE_DATA_DIR``); a database that cannot be used ends the command with exit 1."""
    from sqlalchemy.exc import DBAPIError

    from roomee.kit.db import Database, sqlite_path

    settings = _settings().for_service(service)
    sqlite_file = sqlite_path(settings, service)
    if not settings.database_url and not sqlite_file.exists():
        # Opening it would create an empty database and hide a wrong ROOMEE_DATA_DIR.
        typer.echo(f"error: no {service} database at {sqlite_file} (set ROOMEE_DATA_DIR, "
                   f"or ROOMEE_DATABASE_URL for PostgreSQL)", err=True)
        raise typer.Exit(code=1)
    db = Database(service, settings)
    try:
        return await action(db)
    except (DBAPIError, OSError) as exc:
        where = db.engine.url.render_as_string(hide_password=True)
        if db.schema:
            where += f" (schema {db.schema})"
        reason = getattr(exc, "orig", None) or exc
        typer.echo(f"error: cannot use the {service} database at {where}: {reason}", err=True)
        raise typer.Exit(code=1) from None
    finally:
        await db.dispose()


@notifications_app.command("recount")
def recount_notifications(
    workspace: Annotated[
        Optional[str], typer.Option(metavar="ID", help="Only this workspace's counters (default: all).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report the drift; change nothing.")] = False,
) -> None:
    """Recompute the unread counters from the receiver rows, directly in the database (no platform needed).

    Apps connected meanwhile see the corrected counts at their next change or reconnect.
    """
    from roomee.notification.service import recount_unread_in_bulk

    drift = asyncio.run(_with_database(
        "notification", lambda db: recount_unread_in_bulk(db, workspace_id=workspace, dry_run=dry_run)
    ))
    if dry_run:
        typer.echo(f"{drift.drifted} counter(s) drifted; nothing changed")
    else:
        typer.echo(f"recounted {drift.counters} counter(s); {drift.drifted} had drifted")


def main() -> None:
    from roomee.cli_errors import explain

    try:
        app()
    except Exception as exc:  # expected failures in one line; anything else keeps its traceback
        explained = explain(exc)
        if explained is None:
            raise
        code, message = explained
        typer.echo(f"error: {message}", err=True)
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
