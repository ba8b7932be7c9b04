"""Workspace spec changed (name, locale, time zone): ``PATCH`` the workspace through members."""

from __future__ import annotations

import kopf

from roomee.operator import workspaces
from roomee.operator.metrics import measured
from roomee.operator.platform import PlatformAPI, error_detail
from roomee.operator.settings import GROUP, VERSION


@kopf.on.update(GROUP, VERSION, "workspaces", id="workspace-update", field="spec")
async def update_workspace(new, body, status, meta, patch: kopf.Patch, memo, retry: int, **_) -> None:
    with measured("workspace", "update"):
        api: PlatformAPI = memo.api
        generation = meta.get("generation")
        if not status.get("workspaceId"):
            raise kopf.TemporaryError("the workspace is not created yet", delay=2)
        response = await api.call(api.members, "PATCH", workspaces.path(status["hotelId"], status["workspaceId"]),
                                  retry=retry, endpoint=workspaces.ENDPOINT, json=workspaces.members_body(dict(new)))
        if response.status_code == 404:
            workspaces.ready(body, patch, "False", "NotFound", "the workspace no longer exists", generation)
            raise kopf.PermanentError("the workspace was deleted outside Kubernetes")
        if response.status_code >= 400:
            workspaces.ready(body, patch, "False", "UpdateRejected", error_detail(response), generation)
            raise kopf.PermanentError(f"members refused the change: {error_detail(response)}")
        patch.status["observedGeneration"] = generation
        workspaces.ready(body, patch, "True", "Updated", f"workspace {status['workspaceId']} updated", generation)
