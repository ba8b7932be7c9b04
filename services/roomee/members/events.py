"""Events the members service emits (seed matrix: ``roomee.notification.member.*`` and ``.workspace.*``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.auth import Principal
from roomee.kit.events import build_envelope, emit

MEMBER_ONBOARDING = "member.onboarding"
MEMBER_CREATED = "member.created"
MEMBER_UPDATED = "member.updated"
MEMBER_DELETED = "member.deleted"
# An existing account made a member (no sign-up): the email "you were added to <hotel>" with a sign-in link.
MEMBER_ADDED = "member.added"
WORKSPACE_CREATED = "workspace.created"
WORKSPACE_UPDATED = "workspace.updated"
WORKSPACE_DELETED = "workspace.deleted"


def actor_of(principal: Principal | None) -> dict[str, str]:
    if principal is None or principal.is_service:
        return {"id": principal.subject if principal else "system", "name": "Roomee", "type": "system"}
    return {"id": principal.member_id or principal.subject, "name": principal.name or "", "type": "member"}


async def publish(
    session: AsyncSession,
    event_type: str,
    *,
    workspace: dict[str, Any],
    payload: dict[str, Any],
    actor: dict[str, str],
    receiver_ids: list[str] | None = None,
    channels: tuple[str, ...] = ("socket",),
    sensitive: bool = False,
) -> None:
    envelope = build_envelope(
        event_type,
        workspace_id=workspace["id"],
        hotel_id=workspace["hotel_id"],
        workspace_name=workspace["name"],
        payload=payload,
        channels=channels,
        actor=actor,
        receiver_ids=receiver_ids or [],
    )
    await emit(session, f"roomee.notification.{event_type}", envelope, sensitive=sensitive)
