"""Workspace created (or found at start): once its Hotel is Ready, create the workspace through
members (``PUT /members/hotels/{hotelId}/workspaces/{id}``, idempotent by the uid-derived id)."""

from __future__ import annotations

import kopf

from roomee.operator import workspaces
from roomee.operator.metrics import measured
from roomee.operator.platform import PlatformAPI, error_detail
from roomee.operator.settings import GROUP, VERSION


@kopf.on.resume(GROUP, VERSION, "workspaces", id="workspace-resume")
@kopf.on.create(GROUP, VERSION, "workspaces", id="workspace-create")
async def create_workspace(body, spec, meta, namespace, uid, patch: kopf.Patch, memo, retry: int,
                           hotels_by_name: kopf.Index, **_) -> None:
    with measured("workspace", "create"):
        api: PlatformAPI = memo.api
        generation = meta.get("generation")
        hotel = workspaces.hotel_of(hotels_by_name, namespace, spec)
        if hotel is None or not hotel["ready"] or not hotel["hotelId"]:
            name = spec["hotelRef"]["name"]
            workspaces.ready(body, patch, "False", "HotelNotReady",
                             f"Hotel {name} is {'missing' if hotel is None else 'not Ready'}", generation)
            raise kopf.TemporaryError(f"waiting for Hotel {name}", delay=min(5.0, api.poll_delay(retry) * 5))
        workspace_id = workspaces.workspace_id_of(uid)
        response = await api.call(api.members, "PUT", workspaces.path(hotel["hotelId"], workspace_id), retry=retry,
                                  endpoint=workspaces.ENDPOINT, json=workspaces.members_body(dict(spec)))
        if response.status_code in (400, 404, 410, 422):
            workspaces.ready(body, patch, "False", "Rejected", error_detail(response), generation)
            raise kopf.PermanentError(f"members refused the workspace: {error_detail(response)}")
        if response.status_code not in (200, 201):
            raise kopf.TemporaryError(f"members answered {response.status_code}: {error_detail(response)}", delay=5)
        patch.status["workspaceId"] = workspace_id
        patch.status["hotelId"] = hotel["hotelId"]
        patch.status["observedGeneration"] = generation
        workspaces.ready(body, patch, "True", "Created", f"workspace {workspace_id} of hotel {hotel['hotelId']}",
                         generation)
