"""Hot reads (roomee.kit.hot): each route marked hot is answered by the kit's own path with the bytes
FastAPI answers (same status, type and body), and every answer other than 200 (no token, a service token,
a bad parameter, an unknown id) is FastAPI's. Both backends."""

from __future__ import annotations

import asyncio

from tests.fixtures.events import event_tap
from tests.fixtures.people import invite_and_join, make_admin


def _hot_paths(running) -> set[str]:
    return {plan.route.path for plans in running.app.state.hot_routes.plans.values() for plan in plans}


async def _both(client, hot, url: str, headers: dict[str, str]):
    """The answer with the hot path on, whether it served it, and the answer of FastAPI alone."""
    served = hot.served
    fast = await client.get(url, headers=headers)
    by_hot = hot.served - served
    hot.enabled = False
    try:
        full = await client.get(url, headers=headers)
    finally:
        hot.enabled = True
    return fast, by_hot, full


async def _urls(running, client, admin) -> dict[str, str]:
    """A URL of each hot route of news, on data made through the API."""
    headers = admin.headers
    feed = (await client.post("/api/v1/pages", json={"pageType": "feed", "title": "Fil"}, headers=headers)).json()
    article = (await client.post("/api/v1/pages", headers=headers, json={
        "pageType": "article", "parentId": feed["id"], "title": "Été", "content": "<p>Les horaires changent</p>"})).json()
    made = await client.post("/api/v1/comments", json={"pageId": article["id"], "content": "Noté"}, headers=headers)
    assert made.status_code == 201, made.text
    return {
        "/api/v1/pages": f"/api/v1/pages?parentId={feed['id']}&limit=20",
        "/api/v1/pages/{page_id}": f"/api/v1/pages/{article['id']}",
        "/api/v1/pages/{page_id}/comments": f"/api/v1/pages/{article['id']}/comments",
    }


async def _staff_urls(running, client, admin) -> tuple[object, dict[str, str]]:
    """A member of the admin's workspace with a notification, a device and preferences; a URL of each hot
    route of members, notification and auth."""
    async with event_tap(running) as tap:
        staff = await invite_and_join(client, tap, admin, "staff-hot@example.com")
    headers = staff.headers
    feed = (await client.post("/api/v1/pages", json={"pageType": "feed", "title": "Fil"}, headers=admin.headers)).json()
    article = await client.post("/api/v1/pages", headers=admin.headers, json={
        "pageType": "article", "parentId": feed["id"], "title": "Nouveau", "content": "<p>Lisez</p>"})
    assert article.status_code == 201, article.text
    device = await client.post("/api/v1/subscriptions", headers=headers, json={
        "workspaceId": staff.workspace_id, "subscriptionId": "device-hot-1", "platform": "ios"})
    assert device.status_code == 201, device.text
    preferences = await client.put("/api/v1/preferences", headers=headers, json={
        "isGlobalSilent": False, "categoryPrefs": {}, "quietHours": {"start": "22:00", "end": "07:00", "mode": "skip"}})
    assert preferences.status_code == 200, preferences.text
    for _ in range(300):  # the article's notification reaches the staff member's inbox through the events
        if (await client.get("/api/v1/notifications", headers=headers)).json()["items"]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the article's notification never reached the inbox")
    return staff, {
        "/members/{member_id}": f"/members/{admin.member_id}",
        "/members/": "/members/?limit=20",
        "/workspaces": "/workspaces",
        "/workspaces/{workspace_id}": f"/workspaces/{staff.workspace_id}",
        "/api/v1/preferences": "/api/v1/preferences",
        "/api/v1/notifications": "/api/v1/notifications?limit=20",
        "/api/v1/notifications/counters": "/api/v1/notifications/counters",
        "/api/v1/subscriptions": "/api/v1/subscriptions",
        "/users/me": "/users/me",
    }


async def test_hot_reads_answer_what_fastapi_answers(platform):
    hot = platform.app.state.hot_routes
    async with platform.client() as client:
        admin = await make_admin(platform, client, "hot@example.com")
        urls = await _urls(platform, client, admin)
        staff, staff_urls = await _staff_urls(platform, client, admin)
        assert set(urls) | set(staff_urls) <= _hot_paths(platform)
        reads = [(url, admin.headers) for url in urls.values()] + [(url, staff.headers) for url in staff_urls.values()]
        reads.append(("/api/v1/notifications?limit=20&unread=true", staff.headers))
        reads.append(("/workspaces", admin.headers))  # a hotel administrator sees every workspace
        reads.append(("/users/me", admin.headers))
        empty = (await client.post("/api/v1/pages", json={"pageType": "feed", "title": "Vide"},
                                   headers=admin.headers)).json()
        reads.append((f"/api/v1/pages?parentId={empty['id']}&limit=20", admin.headers))  # asks whether the feed exists
        for url, headers in reads:
            fast, by_hot, full = await _both(client, hot, url, headers)
            assert fast.status_code == full.status_code == 200, (url, fast.text, full.text)
            assert by_hot == 1, (url, repr(hot.last_error))
            assert fast.headers["content-type"] == full.headers["content-type"] == "application/json"
            assert fast.content == full.content, url
            assert fast.headers["content-length"] == full.headers["content-length"]

        # Another page of the same list (a cursor) is a hot read too.
        first = (await client.get(urls["/api/v1/pages/{page_id}/comments"] + "?limit=1", headers=admin.headers)).json()
        assert first["nextCursor"]
        fast, by_hot, full = await _both(
            client, hot, urls["/api/v1/pages/{page_id}/comments"] + f"?limit=1&cursor={first['nextCursor']}",
            admin.headers)
        assert (fast.status_code, fast.content) == (full.status_code, full.content) and by_hot == 1


async def test_hot_reads_leave_every_other_answer_to_fastapi(platform):
    hot = platform.app.state.hot_routes
    async with platform.client() as client:
        admin = await make_admin(platform, client, "cold@example.com")
        urls = await _urls(platform, client, admin)
        service = await platform.service_headers("hotel")
        odd = {
            "no token": ({}, urls["/api/v1/pages/{page_id}"], 401),
            "not a bearer token": ({"Authorization": "Basic abc"}, urls["/api/v1/pages/{page_id}"], 401),
            "a forged token": ({"Authorization": "Bearer a.b.c"}, urls["/api/v1/pages/{page_id}"], 401),
            "a service token": (service, urls["/api/v1/pages/{page_id}"], 403),
            "a service token on /users/me": (service, "/users/me", 403),
            "an unknown id": (admin.headers, "/api/v1/pages/no-such-page", 404),
            "an id too long": (admin.headers, "/api/v1/pages/" + "x" * 37, 422),
            "a limit out of range": (admin.headers, urls["/api/v1/pages"].replace("limit=20", "limit=1000"), 422),
            "a limit that is not a number": (admin.headers, urls["/api/v1/pages"].replace("limit=20", "limit=ten"), 422),
            "a cursor that is not one": (admin.headers, urls["/api/v1/pages/{page_id}/comments"] + "?cursor=nope", 422),
        }
        for what, (headers, url, status) in odd.items():
            fast, by_hot, full = await _both(client, hot, url, headers)
            assert by_hot == 0, what
            assert fast.status_code == full.status_code == status, (what, fast.text)
            assert fast.json() == full.json(), what
        # HEAD and another method of a hot path are FastAPI's too (405 both: GET routes take no HEAD).
        served = hot.served
        assert (await client.head(urls["/api/v1/pages/{page_id}"], headers=admin.headers)).status_code == 405
        assert (await client.put(urls["/api/v1/pages/{page_id}"], headers=admin.headers)).status_code == 405
        assert hot.served == served


async def test_an_earlier_route_keeps_the_urls_it_takes(platform):
    """``GET /members/invitations`` is declared before ``GET /members/{member_id}``: FastAPI's, not the hot one's."""
    hot = platform.app.state.hot_routes
    assert "/members/{member_id}" in _hot_paths(platform)
    assert hot.plan_of("/members/invitations") is None
    plan, values = hot.plan_of("/members/some-id")
    assert plan.route.path == "/members/{member_id}" and values == {"member_id": "some-id"}


async def test_a_hot_connection_the_server_ended_is_replaced(platform):
    """A hot read's connection terminated by the server (a restart, a failover) is dropped and replaced: the
    reads after it answer 200, and the hot path serves them again on a new connection."""
    import pytest
    import sqlalchemy as sa

    from tests.fixtures.platform import BACKEND

    if BACKEND != "real":
        pytest.skip("SQLite has no server connection to lose")
    hot = platform.app.state.hot_routes
    db = platform.platform.services["news"].db
    async with platform.client() as client:
        admin = await make_admin(platform, client, "lost-hot@example.com")
        url = (await _urls(platform, client, admin))["/api/v1/pages/{page_id}"]
        assert (await client.get(url, headers=admin.headers)).status_code == 200
        pids = [connection.get_server_pid() for connection, _born in db.hot_pool._idle]
        assert pids
        async with db.engine.connect() as conn:
            for pid in pids:
                await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # The connection learns it was ended (it is then replaced before use) or fails the read (FastAPI answers).
        assert (await client.get(url, headers=admin.headers)).status_code == 200
        served = hot.served
        assert (await client.get(url, headers=admin.headers)).status_code == 200
        assert hot.served == served + 1
        assert not set(pids) & {connection.get_server_pid() for connection, _born in db.hot_pool._idle}


async def test_a_connection_given_back_after_the_pool_closed_is_closed_not_kept(platform):
    """Shutdown closes the idle hot connections; one a read still holds is closed when it comes back."""
    import pytest

    from tests.fixtures.platform import BACKEND

    if BACKEND != "real":
        pytest.skip("SQLite has no hot pool")
    pool = platform.platform.services["news"].db.hot_pool
    held, born = await pool.acquire()
    await pool.close()
    assert not held.is_closed()
    pool.release(held, born, reusable=True)
    assert held.is_closed() and pool._idle == []
