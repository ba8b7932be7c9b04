"""The event envelope (ARCHITECTURE §5): the seed's ``page.created`` payload plus ``id`` and ``type``.

On the wire::

    {"id", "type", "workspaceId", "ecosystemId", "workspaceName", "payload",
     "channels": ["push", "socket"],
     "metadata": {"timestamp": "2025-10-31T12:00:00.000Z",
                  "actor": {"id", "name", "type"}, "receiverIds": [...]}}
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, field_serializer
from pydantic.alias_generators import to_camel


def format_timestamp(value: datetime | None = None) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z`` (JavaScript's ``Date.toISOString``)."""
    value = value or datetime.now(timezone.utc)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_timestamp(value: str | datetime) -> datetime:
    """The inverse of :func:`format_timestamp` (accepts any ISO 8601 form); always UTC-aware."""
    if isinstance(value, datetime):
        parsed = value
    else:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def build_envelope(
    type: str,
    *,
    workspace_id: str | None,
    hotel_id: str | None = None,
    workspace_name: str | None = None,
    payload: Mapping[str, Any] | None,
    channels: Iterable[str] = ("push", "socket"),
    actor: Mapping[str, Any] | None = None,
    receiver_ids: Iterable[Any] = (),
    event_id: str | None = None,
    timestamp: datetime | str | None = None,
) -> dict[str, Any]:
    """The envelope of one event, field for field as the seed's consumers expect it."""
    if isinstance(timestamp, str):
        timestamp = parse_timestamp(timestamp)
    return {
        "id": str(event_id) if event_id is not None else str(uuid.uuid4()),
        "type": type,
        "workspaceId": _str_or_none(workspace_id),
        "ecosystemId": _str_or_none(hotel_id),
        "workspaceName": workspace_name,
        "payload": dict(payload) if payload is not None else {},
        "channels": list(channels),
        "metadata": {
            "timestamp": format_timestamp(timestamp),
            "actor": (
                {
                    "id": _str_or_none(actor.get("id")),
                    "name": actor.get("name"),
                    "type": actor.get("type"),
                }
                if actor is not None
                else None
            ),
            "receiverIds": [str(r) for r in receiver_ids],
        },
    }


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


class _CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        populate_by_name=True,
        coerce_numbers_to_str=True,
        extra="allow",
    )


class Actor(_CamelModel):
    id: str | None = None
    name: str | None = None
    type: str | None = None


class EnvelopeMetadata(_CamelModel):
    timestamp: datetime | None = None
    actor: Actor | None = None
    receiver_ids: list[str] = Field(default_factory=list)

    @field_serializer("timestamp")
    def _serialize_timestamp(self, value: datetime | None) -> str | None:
        return format_timestamp(value) if value is not None else None


class Envelope(_CamelModel):
    """Validates a consumed envelope; ``model_dump(by_alias=True)`` gives the camelCase form back."""

    id: str = Field(min_length=1)
    type: str = Field(min_length=1)
    workspace_id: str | None = None
    hotel_id: str | None = Field(default=None, alias="ecosystemId")  # the seed's wire name for the hotel
    workspace_name: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    channels: list[str] = Field(default_factory=lambda: ["push", "socket"])
    metadata: EnvelopeMetadata = Field(default_factory=EnvelopeMetadata)
