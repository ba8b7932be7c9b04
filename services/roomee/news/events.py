"""What the news service emits and consumes.

Emitted (through the outbox, in the transaction of the change), the seed's matrix:
``roomee.notification.page.{created,updated,deleted}``, ``roomee.notification.comment.{created,
updated,deleted}``, ``roomee.notification.like.{created,deleted}``, with the seed's envelope.

Consumed: ``roomee.notification.member.*`` and ``roomee.notification.workspace.*`` (queue
``news_directory_queue``) keep the local member directory, with the periodic ``POST /members/sync``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit import directory
from roomee.kit.auth import Principal
from roomee.kit.clock import utcnow
from roomee.kit.events import Delivery, build_envelope, emit
from roomee.kit.platform import ConsumerSpec, ServiceContext
from roomee.news.repository import directory as directory_store

PAGE_CREATED = "page.created"
PAGE_UPDATED = "page.updated"
PAGE_DELETED = "page.deleted"
COMMENT_CREATED = "comment.created"
COMMENT_UPDATED = "comment.updated"
COMMENT_DELETED = "comment.deleted"
LIKE_CREATED = "like.created"
LIKE_DELETED = "like.deleted"

PUSH_AND_SOCKET = ("push", "socket")
# With no receivers, notification emits these to the workspace's room except the actor: a UI update.
SOCKET_ONLY = ("socket",)

DIRECTORY_QUEUE = "news_directory_queue"


def actor_of(principal: Principal) -> dict[str, str]:
    return {"id": principal.member_id or principal.subject, "name": principal.name or "", "type": "member"}


async def publish(
    session: AsyncSession,
    event_type: str,
    principal: Principal,
    *,
    workspace_name: str | None,
    payload: dict[str, Any],
    channels: tuple[str, ...],
    receiver_ids: Sequence[str] = (),
) -> None:
    envelope = build_envelope(
        event_type,
        workspace_id=principal.workspace_id,
        hotel_id=principal.hotel_id,
        workspace_name=workspace_name,
        payload=payload,
        channels=channels,
        actor=actor_of(principal),
        receiver_ids=receiver_ids,
    )
    await emit(session, f"roomee.notification.{event_type}", envelope)


async def _on_directory_event(session: AsyncSession, envelope: dict[str, Any], _delivery: Delivery) -> None:
    await directory.apply_event(directory_store(session), envelope, utcnow())


def consumers(_ctx: ServiceContext) -> list[ConsumerSpec]:
    return [ConsumerSpec(DIRECTORY_QUEUE, list(directory.DIRECTORY_EVENTS), handler=_on_directory_event)]


def workers(ctx: ServiceContext) -> list:
    return [functools.partial(directory.sync_worker, ctx, directory_store, utcnow)]
