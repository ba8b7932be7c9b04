"""The conformance layer behaves like the API server where kopf and kubectl depend on it."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import yaml

from tests.fixtures.kube import CRD_DIR

HOTELS = "/apis/roomee.io/v1/namespaces/default/hotels"
EXAMPLE = str(CRD_DIR / "examples" / "hotel.yaml")


async def test_create_sets_identity_and_writes_bump_versions_and_generation(kube):
    await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
    first = json.loads((await kube.kubectl("get", "hotel", "grand-paris", "-o", "json")).stdout)
    meta = first["metadata"]
    assert meta["uid"] and meta["generation"] == 1 and meta["creationTimestamp"]
    assert first["spec"]["administrator"]["locale"] == "fr"

    await kube.kubectl("patch", "hotel", "grand-paris", "--type=merge", "-p", '{"metadata":{"labels":{"a":"b"}}}')
    labelled = json.loads((await kube.kubectl("get", "hotel", "grand-paris", "-o", "json")).stdout)["metadata"]
    assert labelled["generation"] == 1 and int(labelled["resourceVersion"]) > int(meta["resourceVersion"])

    await kube.kubectl("patch", "hotel", "grand-paris", "--type=merge", "-p", '{"spec":{"plan":"standard"}}')
    upgraded = json.loads((await kube.kubectl("get", "hotel", "grand-paris", "-o", "json")).stdout)["metadata"]
    assert upgraded["generation"] == 2

    await kube.kubectl("patch", "hotel", "grand-paris", "--type=merge", "-p", '{"spec":{"plan":"standard"}}')
    unchanged = json.loads((await kube.kubectl("get", "hotel", "grand-paris", "-o", "json")).stdout)["metadata"]
    assert unchanged["resourceVersion"] == upgraded["resourceVersion"]


async def test_status_is_a_subresource(kube):
    await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
    await kube.kubectl("patch", "hotel", "grand-paris", "--type=merge", "-p", '{"status":{"hotelId":"ignored"}}')
    obj = json.loads((await kube.kubectl("get", "hotel", "grand-paris", "-o", "json")).stdout)
    assert "status" not in obj
    await kube.kubectl("patch", "hotel", "grand-paris", "--subresource=status", "--type=merge",
                       "-p", '{"status":{"hotelId":"h1"},"spec":{"plan":"free"}}')
    obj = json.loads((await kube.kubectl("get", "hotel", "grand-paris", "-o", "json")).stdout)
    assert obj["status"] == {"hotelId": "h1"} and obj["spec"]["plan"] == "premium"


async def test_stale_writes_and_failed_json_patch_tests_are_refused(kube):
    await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
    async with aiohttp.ClientSession(kube.url) as http:
        async with http.get(f"{HOTELS}/grand-paris") as response:
            current = await response.json()
        stale = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
                 {"op": "add", "path": "/metadata/finalizers", "value": ["roomee.io/x"]}]
        async with http.patch(f"{HOTELS}/grand-paris", data=json.dumps(stale),
                              headers={"Content-Type": "application/json-patch+json"}) as response:
            assert response.status == 422 and (await response.json())["reason"] == "Invalid"
        stale_merge = {"metadata": {"resourceVersion": "1"}, "spec": {"plan": "free"}}
        async with http.patch(f"{HOTELS}/grand-paris", json=stale_merge,
                              headers={"Content-Type": "application/merge-patch+json"}) as response:
            assert response.status == 409 and (await response.json())["reason"] == "Conflict"
        async with http.post(HOTELS, json={k: current[k] for k in ("apiVersion", "kind", "metadata", "spec")}) as response:
            assert response.status == 409 and (await response.json())["reason"] == "AlreadyExists"
        async with http.get(f"{HOTELS}/nobody") as response:
            assert response.status == 404 and (await response.json())["reason"] == "NotFound"


async def test_a_watch_resumes_from_a_resource_version_without_losing_events(kube):
    async with aiohttp.ClientSession(kube.url) as http:
        async with http.get(HOTELS) as response:
            listed = await response.json()
        assert listed["kind"] == "HotelList" and listed["items"] == []
        await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)  # between the list and the watch
        params = {"watch": "true", "resourceVersion": listed["metadata"]["resourceVersion"], "timeoutSeconds": "1"}
        async with http.get(HOTELS, params=params) as response:
            assert response.headers["Content-Type"].startswith("application/json")
            events = [json.loads(line) async for line in response.content if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "grand-paris")]


async def test_finalizers_hold_the_object_until_removed(kube):
    await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
    await kube.kubectl("patch", "hotel", "grand-paris", "--type=merge", "-p", '{"metadata":{"finalizers":["roomee.io/x"]}}')
    await kube.kubectl("delete", "hotel", "grand-paris", "--wait=false")
    held = json.loads((await kube.kubectl("get", "hotel", "grand-paris", "-o", "json")).stdout)
    assert held["metadata"]["deletionTimestamp"]
    waiting = asyncio.create_task(kube.kubectl("wait", "--for=delete", "hotel/grand-paris", "--timeout=20s"))
    await asyncio.sleep(0.5)
    await kube.kubectl("patch", "hotel", "grand-paris", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    await waiting
    assert kube.api.objects_of("hotels") == []


async def test_the_server_validates_custom_objects_against_the_crd_schema(kube):
    manifest = open(EXAMPLE).read().replace("plan: premium", "plan: platinum")
    result = await kube.kubectl("apply", "--validate=false", "-f", "-", stdin=manifest, check=False)
    assert result.returncode != 0 and "spec.plan" in result.stderr
    assert kube.api.objects_of("hotels") == []

    with_password = open(EXAMPLE).read().replace("    locale: fr\n", "    locale: fr\n    password: hunter2\n")
    body = yaml.safe_load(with_password)
    async with aiohttp.ClientSession(kube.url) as http:
        async with http.post(HOTELS, json=body, params={"fieldValidation": "Strict"}) as response:
            assert response.status == 422 and "password" in (await response.json())["message"]
    await kube.kubectl("apply", "--validate=false", "-f", "-", stdin=with_password)  # unknown fields are pruned
    (stored,) = kube.api.objects_of("hotels")
    assert "password" not in stored["spec"]["administrator"]


async def test_kubectl_get_by_category_and_short_name_prints_the_columns(kube):
    await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
    header = (await kube.kubectl("get", "htl")).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "PLAN", "AGE"]  # QR only with -o wide
    assert "hotel.roomee.io/grand-paris" in (await kube.kubectl("get", "roomee")).stdout
