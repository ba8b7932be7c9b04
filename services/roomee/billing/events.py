"""Events the billing service emits, through the kit's outbox (written in the caller's transaction).

- ``roomee.notification.hotel.updated``: a subscription's status or plan changed on the provider's side
  (a Stripe webhook), payload ``{hotelId, change, subscription, previous}``.
- ``roomee.storage.media``: the hotel's storage quota follows its plan, the seed's payload
  ``{ecosystemId, payload: {max_size, unit: "MO"}}``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.billing.plans import Plan
from roomee.kit.events import build_envelope, emit

HOTEL_UPDATED = "roomee.notification.hotel.updated"
STORAGE_MEDIA = "roomee.storage.media"

_BILLING_ACTOR = {"id": "service:billing", "name": "Roomee billing", "type": "system"}


async def hotel_updated(
    session: AsyncSession, hotel_id: str, *, change: str, subscription: dict[str, Any], previous: dict[str, Any]
) -> None:
    envelope = build_envelope(
        "hotel.updated",
        workspace_id=None,
        hotel_id=hotel_id,
        payload={"hotelId": hotel_id, "change": change, "subscription": subscription, "previous": previous},
        channels=("socket",),
        actor=_BILLING_ACTOR,
    )
    await emit(session, HOTEL_UPDATED, envelope)


async def storage_quota(session: AsyncSession, hotel_id: str, plan: Plan) -> None:
    envelope = build_envelope(
        "storage.media",
        workspace_id=None,
        hotel_id=hotel_id,
        payload={"ecosystemId": hotel_id, "payload": plan.storage_quota},
        channels=(),
        actor=_BILLING_ACTOR,
    )
    await emit(session, STORAGE_MEDIA, envelope)
