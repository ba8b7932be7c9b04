"""The runtime of one process: its targets' databases, the broker, relays, consumers and clients."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


from roomee.kit import migrations
from roomee.kit.auth import AccessChanges, ServiceTokenProvider, TokenVerifier, remote_jwks_loader
from roomee.kit.db import Database
from roomee.kit.events import BrokerUnavailable, EventConsumer, OutboxRelay, broker_from_settings
from roomee.kit.events.consumer import BatchHandler, EventHandler
from roomee.kit.events.gauges import dead_letters_waiting
from roomee.kit.http import ServiceClient
from roomee.kit.metrics import broker_connected, initialise_target_series
from roomee.kit.observability import RetryNotice, configure_logging, configure_tracing
from roomee.kit.schemas import use_cursor_key
from roomee.kit.settings import Settings

log = logging.getLogger("roomee.platform")

# Backoff of what start-up waits for (a database, the broker); how often it reads a revision it waits for.
START_FIRST_DELAY = 1.0
START_MAX_DELAY = 30.0
MIGRATIONS_POLL_SECONDS = 2.0
READY_CHECK_SECONDS = 2.0
BROKER_CONNECT_SECONDS = 10.0
# How often the depth of this process's dead-letter queues is read (one passive declare each).
DEAD_LETTER_SAMPLE_SECONDS = 15.0

@dataclass(frozen=True)
class ConsumerSpec:
    """A queue a service consumes: a per-event ``handler``, or a ``batch_handler`` for bulk work."""

    queue: str
    bindings: list[str]
    handler: EventHandler | None = None
    batch_handler: BatchHandler | None = None
    batch_size: int = 200
    # Unacknowledged deliveries at once; each holds a database connection while it is handled.
    prefetch: int | None = None


@dataclass
class ServiceContext:
    """What one service gets at run time; endpoints reach it through ``service_context(name)``."""

    name: str
    settings: Settings
    db: Database
    platform: "Platform"
    state: dict[str, Any] = field(default_factory=dict)
    stop_callbacks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _clients: dict[str, ServiceClient] = field(default_factory=dict)

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` when the platform stops (after consumers and relays; last registered first)."""
        self.stop_callbacks.append(callback)

    def client(self, target: str) -> ServiceClient:
        if target not in self._clients:
            self._clients[target] = ServiceClient(
                self.name,
                target,
                self.settings.url_of(target),
                token_provider=self.platform.service_token_provider(self.name),
                settings=self.settings,
            )
        return self._clients[target]

    @property
    def broker(self):
        return self.platform.broker


class Platform:
    def __init__(self, settings: Settings, targets: list) -> None:
        self.settings = settings
        self.targets = targets
        self.services: dict[str, ServiceContext] = {}
        self.broker = None
        self.jwks_loader = remote_jwks_loader(settings)
        self.access_changes = AccessChanges(settings.access_token_ttl_seconds)
        self.verifier = TokenVerifier(settings, lambda: self.jwks_loader(), access_changes=self.access_changes)
        self._token_providers: dict[str, ServiceTokenProvider] = {}
        self._relays: list[OutboxRelay] = []
        self._consumers: list[EventConsumer] = []
        self._workers: list[asyncio.Task] = []
        self._migrated: set[str] = set()
        # Start-up: what it waits for (a readiness check each), and whether it is done.
        self._bring_up: asyncio.Task | None = None
        self.waiting: dict[str, str] = {}
        self.at_head = False
        self.started = asyncio.Event()
        self.failed: str | None = None
        self.broker_failures = 0
        self.label = targets[0].name if len(targets) == 1 else "all"
        use_cursor_key(settings.resolved_cursor_secret())
        for spec in targets:
            service_settings = settings.for_service(spec.name)
            self.services[spec.name] = ServiceContext(spec.name, service_settings, Database(spec.name, service_settings), self)

    def service_token_provider(self, service: str) -> ServiceTokenProvider:
        if service not in self._token_providers:
            self._token_providers[service] = ServiceTokenProvider(self.services[service].settings, service)
        return self._token_providers[service]

    async def migrate(self) -> None:
        for spec in self.targets:
            await migrations.upgrade(spec.package, self.services[spec.name].db)

    async def start(self) -> None:
        problems = self.settings.unsafe_production_defaults([spec.name for spec in self.targets])
        if problems:
            raise RuntimeError(
                "refusing to start with a database URL (production) and unsafe defaults:\n  - "
                + "\n  - ".join(problems)
                + "\n(ROOMEE_ALLOW_UNSAFE_DEFAULTS=true starts anyway, for development)"
            )
        name = "+".join(spec.name for spec in self.targets)
        configure_logging(self.settings, name)
        configure_tracing(self.settings, name)
        self.broker = broker_from_settings(self.settings)
        for spec in self.targets:
            ctx = self.services[spec.name]
            setup = spec.load(spec.setup)
            if setup is not None:
                await setup(ctx)
        # What may wait on a database, the migrations or the broker runs in the background: the process
        # listens at once (liveness), /health/ready tells what it waits for, and SIGTERM is heard.
        self._bring_up = asyncio.create_task(self._start_workers())
        self._bring_up.add_done_callback(self._start_ended)

    def _start_ended(self, task: asyncio.Task) -> None:
        """A start-up that failed for an unexpected reason (what it waits for is retried, never fatal)
        is logged and fails liveness, so the process is restarted rather than left half started."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.failed = f"{type(exc).__name__}: {exc}"
        log.error("start-up failed; /health answers 503 until the process is restarted", exc_info=exc)

    async def wait_started(self) -> None:
        """Until the start-up is done: databases at their migrations' head, broker connected, workers
        running. Raises what made it fail; cancelling the wait leaves the start-up running."""
        if self._bring_up is None:
            raise RuntimeError("the platform was not started")
        await asyncio.shield(self._bring_up)

    async def _start_workers(self) -> None:
        for spec in self.targets:
            await self._reach_head(spec)
        self.at_head = True
        if self.targets:
            self._workers.append(asyncio.create_task(_supervised("platform", self._follow_access_changes)))
        await self._start_broker()
        for spec in self.targets:
            ctx = self.services[spec.name]
            relay = OutboxRelay(ctx.db, self.broker, spec.name)
            await relay.start()
            self._relays.append(relay)
            make_consumers = spec.load(spec.consumers)
            consumer_specs = make_consumers(ctx) if make_consumers else []
            initialise_target_series(spec.name, [b for consumer in consumer_specs for b in consumer.bindings])
            for consumer in consumer_specs:
                queue = self.settings.queue_prefix + consumer.queue
                runner = EventConsumer(
                    ctx.db, self.broker, spec.name, queue, consumer.bindings, consumer.handler,
                    batch_handler=consumer.batch_handler, batch_size=consumer.batch_size,
                    prefetch=consumer.prefetch,
                )
                await runner.start()
                self._consumers.append(runner)
            make_workers = spec.load(spec.workers)
            for worker in make_workers(ctx) if make_workers else ():
                self._workers.append(asyncio.create_task(_supervised(spec.name, worker)))
        if self._consumers:
            self._workers.append(asyncio.create_task(_supervised("platform", self._sample_dead_letters)))
        self.started.set()
        log.info("platform started", extra={"targets": [spec.name for spec in self.targets]})

    async def _reach_head(self, spec) -> None:
        """Migrate (``auto_migrate``) or wait for ``roomee migrate``, polling the revision quietly; a
        database that cannot be reached is retried with backoff. Each wait is logged once."""
        name, db = spec.name, self.services[spec.name].db
        delay, waited = START_FIRST_DELAY, False
        notice = RetryNotice(log, f"reaching the database of {name} at start")
        while True:
            try:
                if self.settings.auto_migrate:
                    await migrations.upgrade(spec.package, db)
                behind = await migrations.pending(spec.package, db)
            except Exception as exc:  # the database is down or slow: retried, never fatal
                self.waiting[f"database:{name}"] = f"unavailable: {type(exc).__name__}: {exc}"
                notice.failed(exc, f"retrying quietly with backoff up to {START_MAX_DELAY:.0f} s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, START_MAX_DELAY)
                continue
            notice.succeeded()
            self.waiting.pop(f"database:{name}", None)
            if behind is None:
                self._migrated.add(name)
                self.waiting.pop(f"migrations:{name}", None)
                if waited:
                    log.info("the database of %s is at its migrations' head: its workers start", name)
                return
            self.waiting[f"migrations:{name}"] = f"pending: {behind}; workers wait for `roomee migrate`"
            if not waited:
                waited = True
                log.info("waiting for the migrations of %s (%s): workers start at head", name, behind)
            delay = START_FIRST_DELAY
            await asyncio.sleep(MIGRATIONS_POLL_SECONDS)

    async def _follow_access_changes(self) -> None:
        """Learn removed members, changed permissions and ended sessions, so this process refuses their old tokens."""
        first = self.services[self.targets[0].name]
        # Its own client: the feed's failures (members starting, or down) must not open the breaker
        # the service's own calls to members go through.
        client = ServiceClient(first.name, "members", first.settings.url_of("members"),
                               token_provider=self.service_token_provider(first.name), settings=first.settings)
        # And the sessions auth ended (sign-out, password change or reset), on a client of their own too.
        sessions = ServiceClient(first.name, "auth", first.settings.url_of("auth"),
                                 token_provider=self.service_token_provider(first.name), settings=first.settings)
        try:
            await self.access_changes.follow(client, self.settings.access_changes_poll_seconds, sessions)
        finally:
            await client.aclose()
            await sessions.aclose()

    async def sample_dead_letters(self) -> dict[str, int]:
        """Export how many dead letters wait in each queue this process consumes."""
        services = {consumer.queue: consumer.service for consumer in self._consumers}
        counts = await self.broker.dead_letter_counts(list(services))
        for queue, count in counts.items():
            dead_letters_waiting.labels(services[queue], queue).set(count)
        return counts

    async def _sample_dead_letters(self) -> None:
        while True:
            try:
                await self.sample_dead_letters()
            except Exception as exc:  # a broker outage: the gauge keeps its last value
                log.debug("could not sample the dead-letter queues: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(DEAD_LETTER_SAMPLE_SECONDS)

    def event_topology(self) -> dict[str, list[str]]:
        """The queues (prefixed names) and bindings of every registered target, run here or not."""
        from roomee import targets as registry

        topology: dict[str, list[str]] = {}
        for spec in registry.TARGETS.values():
            make_consumers = spec.load(spec.consumers)
            if make_consumers is None:
                continue
            ctx = self.services.get(spec.name)
            if ctx is None:  # a target of another process: its consumers are only read, never run
                service_settings = self.settings.for_service(spec.name)
                ctx = ServiceContext(spec.name, service_settings, Database(spec.name, service_settings), self)
            for consumer in make_consumers(ctx):
                topology[self.settings.queue_prefix + consumer.queue] = list(consumer.bindings)
        return topology

    async def _start_broker(self) -> None:
        """Connect to the broker and declare the topology, waiting for it with backoff: a broker still
        starting (or down) must not make every replica exit and crash-loop. Every queue of every target
        exists before the first relay publishes: an event is never published to a topic nobody is bound
        to yet (a consumer in another process not started)."""
        delay = START_FIRST_DELAY
        notice = RetryNotice(log, "connecting to the broker at start")
        topology = self.event_topology()
        self.waiting["broker"] = "connecting"
        while True:
            try:
                # Bounded: a broker that accepts the connection and never answers is retried too.
                await asyncio.wait_for(self.broker.start(), BROKER_CONNECT_SECONDS)
                await declare_event_topology(self.broker, topology)
                broker_connected.labels(self.label).set(1)
                self.waiting.pop("broker", None)
                notice.succeeded()
                return
            except Exception as exc:
                self.broker_failures += 1
                broker_connected.labels(self.label).set(0)
                await self.broker.close()  # a half-made connection is not reused: the next attempt starts over
                self.waiting["broker"] = f"connecting: {type(exc).__name__}: {exc} (retried with backoff)"
                notice.failed(exc, f"retrying quietly with backoff up to {START_MAX_DELAY:.0f} s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, START_MAX_DELAY)

    async def stop(self) -> None:
        if self._bring_up is not None:
            self._bring_up.cancel()
            await asyncio.gather(self._bring_up, return_exceptions=True)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for consumer in self._consumers:
            await consumer.stop()
        for relay in self._relays:
            await relay.stop()
        for ctx in self.services.values():
            for client in ctx._clients.values():
                await client.aclose()
            await run_stop_callbacks(ctx.name, ctx.stop_callbacks)
        if self.broker is not None:
            await self.broker.close()
        for ctx in self.services.values():
            await ctx.db.dispose()
        self._workers, self._consumers, self._relays = [], [], []

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether this process can serve, and every check. Ready means its databases answer at
        their migrations' head; the broker is reported (and exported as ``broker_connected``) but
        does not decide, since writes keep working through the outbox during a broker outage."""
        checks: dict[str, str] = {}
        ready = True
        for spec in self.targets:
            name, db = spec.name, self.services[spec.name].db
            try:
                await asyncio.wait_for(db.ping(), READY_CHECK_SECONDS)  # a slow database is not ready, not a hung probe
                checks[f"database:{name}"] = "ok"
            except Exception as exc:  # readiness reports every failure rather than raising
                checks[f"database:{name}"], ready = f"error: {type(exc).__name__}: {exc}", False
                continue
            if name not in self._migrated:  # start-up polls it (a database does not fall behind its code again)
                checks[f"migrations:{name}"], ready = await self._migrations_check(spec), False
        try:
            if self.broker is None:
                raise BrokerUnavailable("not connected yet")
            if "broker" in self.waiting:
                raise BrokerUnavailable(self.waiting["broker"])
            await self.broker.ping()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unavailable: {exc}"
        broker_connected.labels(self.label).set(1 if checks["broker"] == "ok" else 0)
        # Relays, consumers and periodic work start once every database is at head and the broker answers.
        # Ready once they run, or while the broker alone is missing (the outbox holds events meanwhile).
        checks["workers"] = "running" if self.started.is_set() else "waiting for " + (
            ", ".join(sorted(self.waiting)) or "the start-up")
        if not self.started.is_set() and not (self.broker_failures and set(self.waiting) == {"broker"}):
            ready = False
        return ready, checks

    async def _migrations_check(self, spec) -> str:
        """What start-up last saw of a database's revision, else what it is now."""
        if f"migrations:{spec.name}" in self.waiting:
            return self.waiting[f"migrations:{spec.name}"]
        try:
            behind = await migrations.pending(spec.package, self.services[spec.name].db)
        except Exception as exc:  # readiness reports every failure rather than raising
            return f"unknown ({type(exc).__name__}: {exc})"
        return f"pending: {behind}" if behind else "at head; workers starting"

    @asynccontextmanager
    async def lifespan(self, _app):
        await self.start()
        # What start-up built (modules, routes, ORM mappers, pools) lives as long as the process: out of
        # the collector's reach, a full collection no longer walks it, which otherwise stalls requests.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await self.stop()


async def declare_event_topology(broker, topology: dict[str, list[str]]) -> None:
    """Declare each queue with its bindings, retry queues and dead-letter queue."""
    for queue, bindings in topology.items():
        await broker.declare_queue(queue, bindings)


async def run_stop_callbacks(service: str, callbacks: list[Callable[[], Awaitable[None]]]) -> None:
    """Last registered first; one failing callback does not keep the others from running."""
    while callbacks:
        callback = callbacks.pop()
        try:
            await callback()
        except Exception:
            log.exception("stop callback failed", extra={"service": service})


async def _supervised(service: str, worker: Callable[[], Awaitable[None]]) -> None:
    """Run a background worker forever, restarting it after a failure."""
    while True:
        try:
            await worker()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker failed; restarting in 1 s", extra={"service": service})
            await asyncio.sleep(1)
