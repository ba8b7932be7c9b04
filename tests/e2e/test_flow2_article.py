"""Seed Flow 2 end to end, over real HTTP and the platform's broker (RabbitMQ on the real backend):
a publisher posts an article → news emits ``roomee.notification.page.created`` with the seed's
payload, its receivers taken from the news member directory → the notification target stores a
notification for each receiver, pushes to their devices (a recording OneSignal) and emits
``notification:new`` on their sockets; the author gets nothing."""

from __future__ import annotations

import asyncio

from roomee.kit.events.envelope import parse_timestamp
from roomee.notification.channels import NOTIFICATION_NEW
from roomee.notification.processor import notification_id_for
from tests.fixtures.media import direct_upload, grant_storage, jpeg
from tests.fixtures.people import make_admin
from tests.news.support import create_article, create_feed, news_team
from tests.notification.support import SocketInbox, eventually, inbox, pushed_to, register_device

SEED_ENVELOPE_KEYS = {"id", "type", "workspaceId", "ecosystemId", "workspaceName", "payload", "channels", "metadata"}


async def test_an_article_reaches_every_member_but_its_author_by_push_and_socket(tmp_path):
    async with news_team(tmp_path, members=3) as team:
        client, tap, admin, members = team.client, team.tap, team.admin, team.members
        everyone = [admin, *members]
        for person in everyone:
            await register_device(client, person, f"{person.email}-phone")
        sockets = {p.email: await SocketInbox(NOTIFICATION_NEW).connect(team.running, p) for p in everyone}
        try:
            feed = await create_feed(client, admin, "Actualités")
            article = await create_article(client, admin, feed, title="Nouvelle politique RH",
                                           content="<p>Nouveaux horaires</p>")

            envelope = await tap.wait_for("roomee.notification.page.created",
                                          lambda e: e["payload"]["id"] == article["id"])
            assert set(envelope) == SEED_ENVELOPE_KEYS
            assert envelope["type"] == "page.created"
            assert envelope["workspaceId"] == admin.workspace_id
            assert envelope["ecosystemId"] == admin.hotel_id
            assert envelope["workspaceName"] == "Hotel Test"
            assert envelope["payload"] == {
                "id": article["id"],
                "title": "Nouvelle politique RH",
                "pageType": "article",
                "parent": {"id": feed["id"], "title": "Actualités", "pageType": "feed"},
                "medias": [],
            }
            assert envelope["channels"] == ["push", "socket"]
            assert set(envelope["metadata"]) == {"timestamp", "actor", "receiverIds"}
            assert envelope["metadata"]["actor"] == {"id": admin.member_id, "name": "Ada Admin", "type": "member"}
            assert sorted(envelope["metadata"]["receiverIds"]) == sorted(m.member_id for m in members)
            assert envelope["metadata"]["timestamp"].endswith("Z")
            parse_timestamp(envelope["metadata"]["timestamp"])

            notification_id = notification_id_for(envelope["id"])

            async def all_pushed():
                return pushed_to(team.onesignal, notification_id) == sorted(f"{m.email}-phone" for m in members)

            await eventually(all_pushed)
            for member in members:
                sent = await sockets[member.email].wait(NOTIFICATION_NEW, lambda p: p["id"] == notification_id)
                assert sent["type"] == "page.created"
                assert sent["body"] == "Ada Admin a publié « Nouvelle politique RH » dans Hotel Test"
                assert notification_id in [n["id"] for n in await inbox(client, member)]
            # The author: no push, no socket notification, nothing in the inbox.
            await asyncio.sleep(0.5)
            assert f"{admin.email}-phone" not in pushed_to(team.onesignal, notification_id)
            assert [p for p in sockets[admin.email].received[NOTIFICATION_NEW] if p.get("type") == "page.created"] == []
            assert notification_id not in [n["id"] for n in await inbox(client, admin)]
        finally:
            for socket in sockets.values():
                await socket.close()


async def test_an_article_with_a_photo_carries_its_urls_and_a_foreign_or_unfinished_media_is_refused(tmp_path):
    async with news_team(tmp_path, members=1) as team:
        client, tap, admin = team.client, team.tap, team.admin
        await grant_storage(team.running, admin.hotel_id, 100)
        uploaded = await direct_upload(client, admin, jpeg(), "image/jpeg")
        assert uploaded.status_code == 200, uploaded.text
        photo = uploaded.json()
        feed = await create_feed(client, admin)
        article = await create_article(client, admin, feed, title="La nouvelle terrasse", medias=[photo["id"], photo["id"]])
        assert article["medias"] == [{"id": photo["id"], "fileUrl": photo["fileUrl"], "thumbnailUrl": photo["thumbnailUrl"]}]
        envelope = await tap.wait_for("roomee.notification.page.created", lambda e: e["payload"]["id"] == article["id"])
        assert envelope["payload"]["medias"] == [{"fileUrl": photo["fileUrl"], "thumbnailUrl": photo["thumbnailUrl"]}]
        fetched = await client.get(photo["thumbnailUrl"], headers=team.members[0].headers)
        assert fetched.status_code == 200 and fetched.headers["content-type"].startswith("image/")

        pending = await client.post("/media/generate-presigned-url",
                                    json={"fileName": "later.jpg", "contentType": "image/jpeg", "size": 1000},
                                    headers=admin.headers)
        assert pending.status_code == 201, pending.text
        refused = await client.post("/api/v1/pages", json={"pageType": "article", "parentId": feed["id"], "title": "x",
                                                           "medias": [photo["id"], pending.json()["id"]]},
                                    headers=admin.headers)
        assert refused.status_code == 422 and refused.json()["error"] == "media_not_ready"
        assert refused.json()["detail"][0]["loc"] == ["body", "medias", "1"]

        stranger = await make_admin(team.running, client, "olga@other-hotel.example.com", hotel_name="Autre Hôtel")
        await grant_storage(team.running, stranger.hotel_id, 100)
        theirs = (await direct_upload(client, stranger, jpeg(), "image/jpeg")).json()
        foreign = await client.post("/api/v1/pages", json={"pageType": "article", "parentId": feed["id"], "title": "x",
                                                           "medias": [theirs["id"]]}, headers=admin.headers)
        assert foreign.status_code == 404 and foreign.json()["error"] == "media_not_found"
        unknown = await client.patch(f"/api/v1/pages/{article['id']}", json={"medias": ["no-such-media"]},
                                     headers=admin.headers)
        assert unknown.status_code == 404 and unknown.json()["error"] == "media_not_found"
        listed = await client.get("/api/v1/pages", params={"parentId": feed["id"]}, headers=admin.headers)
        assert [p["id"] for p in listed.json()["items"]] == [article["id"]]
