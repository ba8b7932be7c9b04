"""An in-memory index of Hotels by (namespace, name): what a Workspace's hotelRef resolves to."""

from __future__ import annotations

import kopf

from roomee.operator import conditions
from roomee.operator.settings import GROUP, VERSION


@kopf.index(GROUP, VERSION, "hotels", id="hotels_by_name")
async def index_hotel(namespace, name, status, meta, **_) -> dict:
    return {(namespace, name): {
        "hotelId": status.get("hotelId"),
        "ready": conditions.is_true(status.get("conditions")),
        "deleting": bool(meta.get("deletionTimestamp")),
    }}
