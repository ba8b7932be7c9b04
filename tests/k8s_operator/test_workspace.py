"""A Workspace waits for its Hotel, becomes Ready through members, and is removed on delete."""

from __future__ import annotations

import json

from tests.fixtures.kube import CRD_DIR
from tests.k8s_operator.test_hotel_lifecycle import condition, eventually, platform_and_operator, stored

HOTEL = str(CRD_DIR / "examples" / "hotel.yaml")
WORKSPACE = str(CRD_DIR / "examples" / "workspace.yaml")
NAME = "grand-paris-housekeeping"


async def test_workspace_waits_for_its_hotel_becomes_ready_and_is_removed_on_delete(tmp_path, kube, monkeypatch):
    async with platform_and_operator(tmp_path, kube, monkeypatch) as platform:
        await kube.kubectl("apply", "--validate=false", "-f", WORKSPACE)
        waiting = await eventually(lambda: condition(stored(kube, "workspaces", NAME), "Ready").get("reason")
                                   == "HotelNotReady" and stored(kube, "workspaces", NAME))
        assert condition(waiting, "Ready")["status"] == "False"

        await kube.kubectl("apply", "--validate=false", "-f", HOTEL)
        await kube.kubectl("wait", "--for=condition=Ready", f"workspace/{NAME}", "--timeout=60s")
        workspace = json.loads((await kube.kubectl("get", "ws", NAME, "-o", "json")).stdout)
        status = workspace["status"]
        assert status["hotelId"] == stored(kube)["status"]["hotelId"]
        assert status["observedGeneration"] == 1
        table = (await kube.kubectl("get", "workspaces")).stdout.splitlines()
        assert table[0].split() == ["NAME", "READY", "HOTEL", "WORKSPACE-ID", "AGE"]
        assert table[1].split()[:4] == [NAME, "True", "grand-paris", status["workspaceId"]]

        path = f"/members/hotels/{status['hotelId']}/workspaces/{status['workspaceId']}"
        async with platform.client() as client:
            headers = await platform.service_headers("operator")
            existing = await client.put(path, json={"name": "probe"}, headers=headers)  # idempotent: reads it
            assert existing.status_code == 200
            assert (existing.json()["name"], existing.json()["locale"], existing.json()["timezone"]) == (
                "Housekeeping", "fr", "Europe/Paris")

            await kube.kubectl("patch", "ws", NAME, "--type=merge", "-p", '{"spec":{"name":"Housekeeping & laundry"}}')
            await kube.kubectl("wait", "--for=jsonpath={.status.observedGeneration}=2", f"workspace/{NAME}",
                               "--timeout=60s")
            assert (await client.put(path, json={"name": "probe"}, headers=headers)).json()["name"] == (
                "Housekeeping & laundry")

            await kube.kubectl("delete", "workspace", NAME, "--timeout=60s")
            assert stored(kube, "workspaces", NAME) is None
            removed = await client.put(path, json={"name": "probe"}, headers=headers)
            assert removed.status_code == 410 and removed.json()["error"] == "workspace_deleted"
        assert stored(kube) is not None  # the hotel stays
