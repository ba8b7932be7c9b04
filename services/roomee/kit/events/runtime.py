"""``EventRuntime``: what one process runs for events — one broker, the outbox relay of each
service database, and the consumers."""

from __future__ import annotations

import logging

from roomee.kit.db import Database
from roomee.kit.events.broker import Broker, broker_from_settings
from roomee.kit.events.consumer import EventConsumer, EventHandler
from roomee.kit.events.outbox import OutboxRelay
from roomee.kit.settings import Settings

log = logging.getLogger("roomee.events")


class EventRuntime:
    """Owns the process's broker, relays and consumers; ``start``/``stop`` from the app lifespan.

    Register with :meth:`add_relay` / :meth:`add_consumer` before or after :meth:`start`
    (anything added later is started by the next ``start`` call). ``stop`` stops consumers first
    (in-flight handlers finish), then relays, then closes the broker.
    """

    def __init__(self, settings: Settings, broker: Broker | None = None) -> None:
        self.settings = settings
        self.broker = broker if broker is not None else broker_from_settings(settings)
        self.relays: list[OutboxRelay] = []
        self.consumers: list[EventConsumer] = []
        self._broker_started = False
        self._started: set[int] = set()

    def add_relay(self, db: Database, service: str) -> OutboxRelay:
        relay = OutboxRelay(db, self.broker, service)
        self.relays.append(relay)
        return relay

    def add_consumer(
        self, db: Database, service: str, queue: str, bindings: list[str], handler: EventHandler
    ) -> EventConsumer:
        consumer = EventConsumer(db, self.broker, service, queue, bindings, handler)
        self.consumers.append(consumer)
        return consumer

    async def start(self) -> None:
        try:
            if not self._broker_started:
                await self.broker.start()
                self._broker_started = True
            for part in [*self.relays, *self.consumers]:
                if id(part) not in self._started:
                    await part.start()
                    self._started.add(id(part))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for consumer in self.consumers:
            if id(consumer) in self._started:
                await _quietly(consumer.stop(), "consumer")
        for relay in self.relays:
            if id(relay) in self._started:
                await _quietly(relay.stop(), "outbox relay")
        self._started.clear()
        if self._broker_started:
            self._broker_started = False
            await _quietly(self.broker.close(), "broker")

    async def ping(self) -> None:
        """For ``/health/ready``: raises when the broker is unavailable."""
        await self.broker.ping()


async def _quietly(awaitable, what: str) -> None:
    try:
        await awaitable
    except Exception:
        log.warning("could not stop %s", what, exc_info=True)
