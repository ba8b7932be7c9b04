"""Workspace deleted: remove the workspace and its memberships through members, then let it go."""

from __future__ import annotations

import kopf

from roomee.operator import workspaces
from roomee.operator.metrics import measured
from roomee.operator.platform import PlatformAPI, error_detail
from roomee.operator.settings import GROUP, VERSION


@kopf.on.delete(GROUP, VERSION, "workspaces", id="workspace-delete")
async def delete_workspace(body, status, memo, retry: int, **_) -> None:
    with measured("workspace", "delete"):
        api: PlatformAPI = memo.api
        if not status.get("workspaceId"):
            return
        response = await api.call(api.members, "DELETE", workspaces.path(status["hotelId"], status["workspaceId"]),
                                  retry=retry, endpoint=workspaces.ENDPOINT)
        if response.status_code not in (204, 404):  # 404: gone with its hotel already
            raise kopf.TemporaryError(f"members answered {response.status_code}: {error_detail(response)}",
                                      delay=api.poll_delay(retry) * 5)
        kopf.event(body, type="Normal", reason="Deleted", message=f"workspace {status['workspaceId']} removed")
