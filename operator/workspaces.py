"""What the Workspace handlers share: the workspace id (derived from the object's uid, so a retry or
a restarted operator creates nothing twice), the members API body, and the Ready condition."""

from __future__ import annotations

import uuid
from typing import Any

import kopf

from roomee.operator.conditions import READY, Condition
from roomee.operator.hotels import set_conditions

WORKSPACE_IDS = uuid.UUID("5b0f7c61-52a4-4f59-9a3c-1f0b2e8b7d10")


def workspace_id_of(uid: str) -> str:
    return str(uuid.uuid5(WORKSPACE_IDS, uid))


def path(hotel_id: str, workspace_id: str) -> str:
    return f"/members/hotels/{hotel_id}/workspaces/{workspace_id}"


ENDPOINT = "/members/hotels/{hotelId}/workspaces/{workspaceId}"


def members_body(spec: dict[str, Any]) -> dict[str, Any]:
    body = {"name": spec["name"]}
    if spec.get("locale"):
        body["locale"] = spec["locale"]
    if spec.get("timeZone"):
        body["timezone"] = spec["timeZone"]
    return body


def hotel_of(hotels_by_name: kopf.Index, namespace: str, spec: dict[str, Any]) -> dict | None:
    for found in hotels_by_name.get((namespace, spec["hotelRef"]["name"]), []):
        return found
    return None


def ready(body: Any, patch: kopf.Patch, status: str, reason: str, message: str, generation: int | None) -> None:
    set_conditions(body, patch, [Condition(READY, status, reason, message)], generation)
