"""What the media service consumes: ``roomee.storage.media`` (queue ``media_storage_queue``).

The hotel service emits it to create or change a hotel's storage quota; the seed's payload is
``{ecosystemId, payload: {max_size, unit: "MO"}}``, carried as the envelope's ``payload`` (the
envelope's own ``ecosystemId`` names the hotel too). The media service emits nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.clock import as_utc
from roomee.kit.events import Delivery, PermanentFailure
from roomee.kit.platform import ConsumerSpec, ServiceContext
from roomee.media.repository import QuotaRepository
from roomee.media.service import STORAGE_UNITS, now_of, quota_in_bytes

STORAGE_QUEUE = "media_storage_queue"
STORAGE_EVENTS = "roomee.storage.media"


def parse_storage_event(envelope: dict[str, Any]) -> tuple[str, int, str, datetime | None]:
    """(hotel id, max size, unit, emitted at) of a quota event; PermanentFailure when malformed."""
    body = envelope.get("payload") if isinstance(envelope.get("payload"), dict) else {}
    quota = body.get("payload") if isinstance(body.get("payload"), dict) else body
    hotel_id = body.get("ecosystemId") or envelope.get("ecosystemId")
    max_size, unit = quota.get("max_size", quota.get("maxSize")), str(quota.get("unit", "MO")).upper()
    if not isinstance(hotel_id, str) or not hotel_id or len(hotel_id) > 64:
        raise PermanentFailure("storage event without a hotelId")
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 0:
        raise PermanentFailure(f"storage event with an invalid max_size: {max_size!r}")
    if unit not in STORAGE_UNITS:
        raise PermanentFailure(f"storage event with an unknown unit: {unit!r}")
    emitted = (envelope.get("metadata") or {}).get("timestamp")
    try:
        emitted_at = as_utc(datetime.fromisoformat(emitted.replace("Z", "+00:00"))) if emitted else None
    except (AttributeError, ValueError):
        emitted_at = None
    return hotel_id, max_size, unit, emitted_at


def consumers(ctx: ServiceContext) -> list[ConsumerSpec]:
    async def on_storage_event(session: AsyncSession, envelope: dict[str, Any], _delivery: Delivery) -> None:
        hotel_id, max_size, unit, emitted_at = parse_storage_event(envelope)
        now = now_of(ctx)
        await QuotaRepository(session).set_quota(
            hotel_id, quota_bytes=quota_in_bytes(max_size, unit), max_size=max_size, unit=unit,
            set_at=emitted_at or now, now=now,
        )

    return [ConsumerSpec(STORAGE_QUEUE, [STORAGE_EVENTS], handler=on_storage_event)]
