"""Events the hotel service emits (seed matrix: ``roomee.notification.hotel.*`` and ``roomee.storage.media``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.events import build_envelope, emit

STORAGE_MEDIA = "roomee.storage.media"
HOTEL_CREATED = "hotel.created"
HOTEL_UPDATED = "hotel.updated"
HOTEL_DELETED = "hotel.deleted"
HOTEL_CREATION_FAILED = "hotel.creation_failed"

SYSTEM_ACTOR = {"id": "service:hotel", "name": "Roomee", "type": "system"}


def hotel_payload(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "email": row["email"],
        "plan": row["plan"],
        "status": row["status"],
        "qrLink": row.get("qr_link"),
        "subscriptionId": row.get("subscription_id"),
        "adminMemberId": row.get("admin_member_id"),
    }


async def emit_storage_quota(session: AsyncSession, *, event_id: str, hotel_id: str, max_size: int, unit: str) -> None:
    """The seed's ``roomee.storage.media``: media creates (or resizes) the hotel's storage quota."""
    envelope = build_envelope(
        "storage.media", workspace_id=None, hotel_id=hotel_id, payload={"max_size": max_size, "unit": unit},
        channels=(), actor=SYSTEM_ACTOR, event_id=event_id,
    )
    await emit(session, STORAGE_MEDIA, envelope)


async def publish(
    session: AsyncSession,
    event_type: str,
    hotel: dict[str, Any],
    *,
    extra: dict[str, Any] | None = None,
    workspace_id: str | None = None,
    workspace_name: str | None = None,
    receiver_ids: list[str] | None = None,
    actor: dict[str, str] | None = None,
) -> None:
    payload = {"hotel": hotel_payload(hotel), "hotelId": hotel["id"], "name": hotel["name"], **(extra or {})}
    envelope = build_envelope(
        event_type, workspace_id=workspace_id, hotel_id=hotel["id"], workspace_name=workspace_name,
        payload=payload, channels=("push", "socket"), actor=actor or SYSTEM_ACTOR, receiver_ids=receiver_ids or [],
    )
    await emit(session, f"roomee.notification.{event_type}", envelope)
