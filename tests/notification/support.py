"""Helpers for the notification pipeline tests: publish events as the producing services do, wait
for the pipeline, read what it recorded, listen on Socket.IO, and move the service's clock."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import socketio
import sqlalchemy as sa

from roomee.kit.events import Message, build_envelope
from roomee.kit.events.tables import inbox_table
from roomee.notification.processor import notification_id_for
from roomee.notification.repository import AttemptRepository, DirectoryRepository
from tests.fixtures.events import event_tap
from tests.fixtures.fakes import onesignal_fake
from tests.fixtures.people import Person, invite_and_join, make_admin
from tests.fixtures.platform import make_settings, running_platform

T = TypeVar("T")


def notification_service(running):
    return running.platform.services["notification"]


def set_clock(running, when: datetime) -> None:
    """Freeze the notification service's clock at ``when`` (aware)."""
    notification_service(running).state["clock"] = lambda: when


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {value!r})")


def event(
    actor,
    receivers: Iterable[Any] = (),
    *,
    type: str = "page.created",
    channels: Iterable[str] = ("push", "socket"),
    payload: dict[str, Any] | None = None,
    workspace_id: str | None = None,
    actor_name: str = "Ada Admin",
) -> dict[str, Any]:
    """An envelope as a producing service emits it; ``actor`` and receivers are ``Person``s or ids."""
    return build_envelope(
        type,
        workspace_id=workspace_id or actor.workspace_id,
        hotel_id=actor.hotel_id,
        workspace_name="Hotel Test",
        payload=payload if payload is not None else {"id": "page-1", "title": "Nouvelle politique RH"},
        channels=channels,
        actor={"id": actor.member_id, "name": actor_name, "type": "member"},
        receiver_ids=[getattr(r, "member_id", r) for r in receivers],
    )


async def publish(running, *envelopes: dict[str, Any]) -> None:
    """Publish on the platform's broker (RabbitMQ on the real backend), routing key from the type."""
    await running.platform.broker.publish_batch(
        [
            Message(f"roomee.notification.{e['type']}", json.dumps(e).encode(), message_id=e["id"])
            for e in envelopes
        ]
    )


async def handled(running, envelope: dict[str, Any], queue: str = "notification_queue") -> bool:
    """Whether the notification consumer has committed this event (its inbox row)."""
    ctx = notification_service(running)
    name = running.settings.queue_prefix + queue
    async with ctx.db.transaction() as session:
        row = await session.execute(
            sa.select(inbox_table.c.event_id).where(inbox_table.c.queue == name, inbox_table.c.event_id == envelope["id"])
        )
        return row.first() is not None


async def wait_handled(running, *envelopes: dict[str, Any], timeout: float = 10.0) -> None:
    for envelope in envelopes:
        await eventually(lambda e=envelope: handled(running, e), timeout=timeout)


async def attempts(running, envelope_or_id) -> list[dict]:
    notification_id = envelope_or_id if isinstance(envelope_or_id, str) else notification_id_for(envelope_or_id["id"])
    ctx = notification_service(running)
    async with ctx.db.transaction() as session:
        return await AttemptRepository(session).for_notification(notification_id)


async def wait_attempts(running, envelope_or_id, count: int, timeout: float = 10.0) -> list[dict]:
    """Wait until at least ``count`` delivery attempts are recorded for a notification."""

    async def enough():
        rows = await attempts(running, envelope_or_id)
        return rows if len(rows) >= count else None

    return await eventually(enough, timeout=timeout)


async def wait_directory(running, people: Iterable[Any], **expected: Any) -> None:
    """Wait until the directory knows these members (with the given field values, if any)."""
    ids = [getattr(p, "member_id", p) for p in people]
    ctx = notification_service(running)

    async def known() -> bool:
        async with ctx.db.transaction() as session:
            entries = await DirectoryRepository(session).members(ids)
        return len(entries) == len(ids) and all(
            all(getattr(entry, k) == v for k, v in expected.items()) for entry in entries.values()
        )

    await eventually(known)


async def inbox(client, person, **params) -> list[dict]:
    response = await client.get("/api/v1/notifications", headers=person.headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def unread(client, person) -> int:
    response = await client.get("/api/v1/notifications/counters", headers=person.headers)
    assert response.status_code == 200, response.text
    return response.json()["unread"]


async def register_device(client, person, subscription_id: str, *, active: bool = True, workspace_id: str | None = None):
    response = await client.post(
        "/api/v1/subscriptions",
        json={"workspaceId": workspace_id or person.workspace_id, "platform": "android",
              "subscriptionId": subscription_id, "isActive": active},
        headers=person.headers,
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


async def set_preferences(client, person, **body) -> dict:
    response = await client.put("/api/v1/preferences", json=body, headers=person.headers)
    assert response.status_code == 200, response.text
    return response.json()


def pushed_to(fake, notification_id: str) -> list[str]:
    """Subscription ids the OneSignal fake received for one notification (successful or not)."""
    ids: list[str] = []
    for request in fake.requests_to("POST", "/notifications"):
        if request.json and request.json.get("data", {}).get("notificationId") == notification_id:
            ids.extend(request.json["include_subscription_ids"])
    return sorted(ids)


def emailed_to(rows: list[dict]) -> list[str]:
    return sorted(r for row in rows if row["channel"] == "email" and row["status"] == "sent" for r in row["recipients"])


async def wait_delivered(running, fake, envelope, *, push: list[str], email: list[str], timeout: float = 10.0) -> None:
    """Wait until exactly these devices were pushed and these addresses emailed for the event."""
    notification_id = notification_id_for(envelope["id"])
    last = None

    async def matches():
        nonlocal last
        last = (pushed_to(fake, notification_id), emailed_to(await attempts(running, envelope)))
        return last == (sorted(push), sorted(email))

    try:
        await eventually(matches, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"delivered (push, email) = {last}, expected {(sorted(push), sorted(email))}") from None


class SocketInbox:
    """A Socket.IO client of the platform that records the events it receives."""

    def __init__(self, *events: str) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: dict[str, list] = {name: [] for name in events}
        for name in events:
            self.client.on(name, self._recorder(name))

    def _recorder(self, name):
        async def record(payload):
            self.received[name].append(payload)

        return record

    async def connect(self, running, person) -> "SocketInbox":
        await self.client.connect(
            running.url, auth={"token": person.session["accessToken"]}, transports=["websocket"], wait_timeout=10
        )
        return self

    async def wait(self, name: str, predicate=lambda payload: True, timeout: float = 10.0) -> dict:
        async def found():
            return next((p for p in self.received[name] if predicate(p)), None)

        return await eventually(found, timeout=timeout)

    async def close(self) -> None:
        await self.client.disconnect()


# -- platforms and people ---------------------------------------------------------------------


@dataclass
class Team:
    running: Any
    client: Any
    tap: Any
    onesignal: Any
    admin: Person
    members: list[Person]

    @property
    def ctx(self):
        return notification_service(self.running)


@asynccontextmanager
async def team_platform(tmp_path, members: int = 2, **overrides):
    """The whole platform with push to a recording OneSignal fake, a hotel admin and ``members``
    invited staff, all known to the notification directory."""
    async with onesignal_fake() as fake:
        settings = make_settings(
            tmp_path, push_backend="onesignal", onesignal_url=fake.url, onesignal_app_id="roomee-app",
            onesignal_api_key="test-key", **overrides,
        )
        async with running_platform(settings) as running, running.client() as client, event_tap(running) as tap:
            admin = await make_admin(running, client, "ada@hotel.example.com")
            people = []
            for n, name in zip(range(members), ("Bob", "Carol", "Dan", "Erin", "Fay")):
                people.append(
                    await invite_and_join(client, tap, admin, f"{name.lower()}@hotel.example.com", first_name=name,
                                          last_name="Staff")
                )
            await wait_directory(running, [admin, *people])
            yield Team(running, client, tap, fake, admin, people)
