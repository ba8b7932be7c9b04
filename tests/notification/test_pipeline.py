"""The notification pipeline end to end (seed Flows 2, 3 and 6) on the running platform: events in,
rows, socket emits and OneSignal requests out."""

from __future__ import annotations

import asyncio
import uuid

import sqlalchemy as sa

from roomee.kit.clock import utcnow
from roomee.kit.events.tables import inbox_table
from roomee.notification.channels import NOTIFICATION_NEW, UNREAD_COUNTERS
from roomee.notification.processor import notification_id_for
from roomee.notification.repository import DirectoryRepository, SubscriptionRepository
from tests.fixtures.people import Person, make_admin
from tests.fixtures.platform import bearer
from tests.notification.support import (
    SocketInbox,
    event,
    handled,
    inbox,
    publish,
    pushed_to,
    register_device,
    team_platform,
    unread,
    wait_attempts,
    wait_directory,
    wait_handled,
)


async def test_page_created_reaches_receivers_in_app_by_socket_and_on_their_workspace_devices(tmp_path):
    async with team_platform(tmp_path) as team:
        client, admin, (bob, carol) = team.client, team.admin, team.members
        # Bob reads English; the others the workspace's French.
        changed = await client.patch(f"/members/{bob.member_id}", json={"locale": "en"}, headers=bob.headers)
        assert changed.status_code == 200, changed.text
        await wait_directory(team.running, [bob], locale="en")

        # Devices: Bob's old phone is inactive; the admin also has a device in a second workspace.
        await register_device(client, bob, "bob-phone")
        await register_device(client, bob, "bob-old-phone", active=False)
        await register_device(client, carol, "carol-phone")
        await register_device(client, admin, "ada-ws1")
        second = await client.post("/workspaces", json={"name": "Spa"}, headers=admin.headers)
        assert second.status_code == 201, second.text
        switched = await client.post("/users/switch-workspace", json={"workspaceId": second.json()["id"]},
                                     headers=admin.headers)
        assert switched.status_code == 200, switched.text
        admin_in_spa = Person(admin.email, admin.password, switched.json())
        await register_device(client, admin_in_spa, "ada-spa")
        # Someone of another hotel, named as a receiver by mistake, is never reached from here.
        stranger = await make_admin(team.running, client, "eve@other.example.com", hotel_name="Other Hotel")
        await register_device(client, stranger, "eve-phone")
        await wait_directory(team.running, [stranger])

        bob_socket = await SocketInbox(NOTIFICATION_NEW, UNREAD_COUNTERS).connect(team.running, bob)
        try:
            await bob_socket.wait(UNREAD_COUNTERS)  # the count on connect
            page = event(admin, [admin, bob, carol, stranger])
            await publish(team.running, page)
            notification_id = notification_id_for(page["id"])

            new = await bob_socket.wait(NOTIFICATION_NEW)
            assert new["id"] == notification_id
            assert new["title"] == "New article"
            assert new["body"] == "Ada Admin published “Nouvelle politique RH” in Hotel Test"
            assert new["workspaceId"] == admin.workspace_id and new["readAt"] is None
            counter = await bob_socket.wait(UNREAD_COUNTERS, lambda p: p["unread"] == 1)
            assert counter == {"workspaceId": admin.workspace_id, "unread": 1}
        finally:
            await bob_socket.close()

        [bob_item] = await inbox(client, bob)
        assert bob_item == new
        [carol_item] = await inbox(client, carol)
        assert (carol_item["title"], carol_item["body"]) == (
            "Nouvel article", "Ada Admin a publié « Nouvelle politique RH » dans Hotel Test")
        assert await unread(client, carol) == 1
        assert await inbox(client, stranger) == []

        # Push: one request per locale, to active devices registered for this workspace only.
        requests = await team.onesignal.wait_for_requests(2)
        assert pushed_to(team.onesignal, notification_id) == ["ada-ws1", "bob-phone", "carol-phone"]
        by_language = {r.json["headings"].get("fr", r.json["headings"]["en"]): r for r in requests}
        assert set(by_language) == {"Nouvel article", "New article"}
        english = by_language["New article"].json
        assert english["include_subscription_ids"] == ["bob-phone"]
        assert english["app_id"] == "roomee-app"
        assert english["contents"]["en"] == "Ada Admin published “Nouvelle politique RH” in Hotel Test"
        assert english["data"]["notificationId"] == notification_id and english["data"]["type"] == "page.created"
        assert english["idempotency_key"]
        assert by_language["New article"].header("authorization") == "Key test-key"

        rows = await wait_attempts(team.running, page, 2)
        assert sorted((r["channel"], r["provider"], r["status"], r["attempt"]) for r in rows) == [
            ("push", "onesignal", "sent", 1), ("push", "onesignal", "sent", 1)]
        assert sorted(s for r in rows for s in r["recipients"]) == ["ada-ws1", "bob-phone", "carol-phone"]


async def test_push_to_a_large_workspace_goes_in_batches_of_at_most_2000(tmp_path):
    async with team_platform(tmp_path, members=0) as team:
        receivers = [str(uuid.uuid4()) for _ in range(2500)]
        now = utcnow()
        async with team.ctx.db.transaction() as session:
            # Members of the workspace as the directory knows them (receivers it does not know are dropped).
            await DirectoryRepository(session).upsert_members([
                {"member_id": m, "workspace_id": team.admin.workspace_id, "hotel_id": team.admin.hotel_id,
                 "user_id": m, "name": "", "email": None, "locale": None, "timezone": None, "deleted_at": None,
                 "updated_at": now} for m in receivers])
            repo = SubscriptionRepository(session)
            for n, member_id in enumerate(receivers):
                await repo.upsert({"id": str(uuid.uuid4()), "member_id": member_id, "workspace_id": team.admin.workspace_id,
                                   "user_id": member_id, "platform": "ios", "subscription_id": f"device-{n:05d}", "is_active": True,
                                   "created_at": now, "updated_at": now})
        page = event(team.admin, receivers)
        await publish(team.running, page)
        requests = await team.onesignal.wait_for_requests(2, timeout=20)
        await asyncio.sleep(0.3)
        assert sorted(len(r.json["include_subscription_ids"]) for r in team.onesignal.requests) == [500, 2000]
        assert pushed_to(team.onesignal, notification_id_for(page["id"])) == [f"device-{n:05d}" for n in range(2500)]
        assert len({r.json["idempotency_key"] for r in requests}) == 2
        rows = await wait_attempts(team.running, page, 2)
        assert sorted(r["recipients_count"] for r in rows) == [500, 2000]


async def test_comment_ui_update_reaches_the_workspace_except_its_author_and_the_page_author_is_notified(tmp_path):
    async with team_platform(tmp_path) as team:
        client, admin, (bob, carol) = team.client, team.admin, team.members
        sockets = {p.email: await SocketInbox(NOTIFICATION_NEW).connect(team.running, p) for p in (admin, bob, carol)}
        try:
            comment = {"id": "comment-1", "page": {"id": "page-1", "title": "Planning de Noël"}, "commentCount": 3}
            # Flow 3: two events, a socket-only UI update for everyone and a notification for the page author.
            ui_update = event(bob, [], type="comment.created", channels=["socket"], payload=comment,
                              actor_name="Bob Staff")
            for_author = event(bob, [admin], type="comment.created", channels=["push", "socket"], payload=comment,
                               actor_name="Bob Staff")
            await publish(team.running, ui_update, for_author)

            seen_by_carol = await sockets[carol.email].wait(NOTIFICATION_NEW)
            assert seen_by_carol["id"] is None and seen_by_carol["type"] == "comment.created"
            assert seen_by_carol["data"]["commentCount"] == 3
            assert seen_by_carol["body"] == "Bob Staff a commenté « Planning de Noël »"
            admin_new = await sockets[admin.email].wait(NOTIFICATION_NEW, lambda p: p["id"] is not None)
            assert admin_new["id"] == notification_id_for(for_author["id"])
            await wait_handled(team.running, ui_update, for_author)
            await asyncio.sleep(0.3)
            assert sockets[bob.email].received[NOTIFICATION_NEW] == []  # the author of the comment
            assert len(sockets[carol.email].received[NOTIFICATION_NEW]) == 1
        finally:
            for socket in sockets.values():
                await socket.close()
        # The UI update is not stored; the author's notification is.
        assert await inbox(client, carol) == [] and await inbox(client, bob) == []
        latest = (await inbox(client, admin))[0]
        assert (latest["type"], latest["body"]) == ("comment.created", "Bob Staff a commenté « Planning de Noël »")


async def test_the_same_event_delivered_again_makes_one_notification_per_receiver(tmp_path):
    async with team_platform(tmp_path) as team:
        client, admin, (bob, carol) = team.client, team.admin, team.members
        await register_device(client, bob, "bob-phone")
        page = event(admin, [bob, carol])
        await publish(team.running, page, page)  # twice at once
        await wait_handled(team.running, page)
        await publish(team.running, page)  # and again later
        await team.onesignal.wait_for_requests(1)

        # Redelivery after the consumer forgot the event (inbox pruned): the notification's
        # deterministic id still makes it a no-op.
        await asyncio.sleep(0.5)
        async with team.ctx.db.transaction() as session:
            await session.execute(sa.delete(inbox_table).where(inbox_table.c.event_id == page["id"]))
        await publish(team.running, page)
        await wait_handled(team.running, page)
        await asyncio.sleep(0.5)

        for person in (bob, carol):
            items = await inbox(client, person)
            assert [i["id"] for i in items] == [notification_id_for(page["id"])]
            assert await unread(client, person) == 1
        assert len(team.onesignal.requests) == 1
        assert await handled(team.running, page)


async def test_unknown_event_types_and_events_without_channels_are_acknowledged_without_notifications(tmp_path):
    async with team_platform(tmp_path, members=1) as team:
        bob = team.members[0]
        odd = event(team.admin, [bob], type="page.archived")
        silent = event(team.admin, [bob], channels=[])
        await publish(team.running, odd, silent)
        await wait_handled(team.running, odd, silent)
        assert await inbox(team.client, bob) == []
        dead = await team.running.platform.broker.dead_letters(team.running.settings.queue_prefix + "notification_queue")
        assert dead == []


async def test_routes_need_a_member_token(platform):
    async with platform.client() as client:
        routes = [("GET", "/api/v1/preferences"), ("PUT", "/api/v1/preferences"), ("GET", "/api/v1/notifications"),
                  ("POST", "/api/v1/notifications/x/read"), ("POST", "/api/v1/notifications/read-all"),
                  ("GET", "/api/v1/notifications/counters"), ("GET", "/api/v1/subscriptions"),
                  ("POST", "/api/v1/subscriptions"), ("DELETE", "/api/v1/subscriptions/x")]
        for method, path in routes:
            response = await client.request(method, path, json={})
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"] == "unauthorized"
        service = await client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": "news",
                                                           "client_secret": platform.settings.client_secret_of("news")})
        response = await client.get("/api/v1/notifications", headers=bearer({"accessToken": service.json()["access_token"]}))
        assert response.status_code == 403


async def test_an_event_without_workspace_reaches_its_receivers_in_their_workspace(tmp_path):
    async with team_platform(tmp_path, members=0) as team:
        admin = team.admin
        hotel = event(admin, [admin], type="hotel.created", payload={"id": admin.hotel_id, "name": "Grand Hôtel"})
        hotel["workspaceId"] = None  # the hotel service speaks of the hotel, not of a workspace
        await publish(team.running, hotel)
        await wait_handled(team.running, hotel)
        [item] = [i for i in await inbox(team.client, admin) if i["type"] == "hotel.created"]
        assert item["workspaceId"] == admin.workspace_id
        assert (item["title"], item["body"]) == ("Hôtel prêt", "L'hôtel Grand Hôtel est prêt : bienvenue sur Roomee !")
