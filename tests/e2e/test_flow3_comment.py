"""Seed Flow 3 end to end, over real HTTP and the platform's broker: a member comments an article →
news stores it and counts it in one transaction, then emits the two graded ``comment.created``
events → the notification target sends the UI update on the sockets of every other member, and
push + socket to the page's author; the commenter gets nothing. Without ``enableNotifications``
only the UI update goes out. Fifty concurrent comments count fifty."""

from __future__ import annotations

import asyncio

from roomee.notification.channels import NOTIFICATION_NEW
from roomee.notification.processor import notification_id_for
from tests.news.support import comment, create_article, create_feed, every_item, news_team
from tests.notification.support import SocketInbox, eventually, inbox, pushed_to, register_device


def _about(comment_id: str):
    return lambda payload: payload.get("type") == "comment.created" and payload["data"].get("id") == comment_id


async def test_a_comment_updates_the_workspace_and_notifies_the_author(tmp_path):
    async with news_team(tmp_path, members=2) as team:
        client, tap, author, (bob, carol) = team.client, team.tap, team.admin, team.members
        everyone = [author, bob, carol]
        for person in everyone:
            await register_device(client, person, f"{person.email}-phone")
        sockets = {p.email: await SocketInbox(NOTIFICATION_NEW).connect(team.running, p) for p in everyone}
        try:
            feed = await create_feed(client, author)
            noisy = await create_article(client, author, feed, title="Planning de Noël")
            quiet = await create_article(client, author, feed, title="Menu du jour", enableNotifications=False)

            made = await comment(client, bob, noisy, content="Je prends le 24")
            assert made["commentCount"] == 1
            # The UI update reaches the second member (and the author) on the socket...
            seen_by_carol = await sockets[carol.email].wait(NOTIFICATION_NEW, _about(made["id"]))
            assert seen_by_carol["id"] is None and seen_by_carol["data"]["commentCount"] == 1
            assert seen_by_carol["body"] == "Bob Staff a commenté « Planning de Noël »"
            # ...the author gets the full notification: push + socket + inbox.
            for_author = await tap.wait_for("roomee.notification.comment.created",
                                            lambda e: e["payload"]["id"] == made["id"] and "push" in e["channels"])
            notification_id = notification_id_for(for_author["id"])

            async def pushed():
                return pushed_to(team.onesignal, notification_id) == [f"{author.email}-phone"]

            await eventually(pushed)
            await sockets[author.email].wait(NOTIFICATION_NEW, lambda p: p["id"] == notification_id)
            assert [n["id"] for n in await inbox(client, author) if n["type"] == "comment.created"] == [notification_id]
            # ...and the commenter gets nothing.
            await asyncio.sleep(0.5)
            assert [p for p in sockets[bob.email].received[NOTIFICATION_NEW] if p.get("type") == "comment.created"] == []
            assert [n for n in await inbox(client, bob) if n["type"] == "comment.created"] == []
            assert [n for n in await inbox(client, carol) if n["type"] == "comment.created"] == []

            # enableNotifications false: only the UI update.
            hushed = await comment(client, bob, quiet, content="Miam")
            await sockets[carol.email].wait(NOTIFICATION_NEW, _about(hushed["id"]))
            ui_for_author = await sockets[author.email].wait(NOTIFICATION_NEW, _about(hushed["id"]))
            assert ui_for_author["id"] is None
            await asyncio.sleep(1.0)
            hushed_events = [e for e in tap.of("roomee.notification.comment.created") if e["payload"]["id"] == hushed["id"]]
            assert [e["channels"] for e in hushed_events] == [["socket"]]
            assert [n["id"] for n in await inbox(client, author) if n["type"] == "comment.created"] == [notification_id]
            to_author = [r.json["data"]["notificationId"] for r in team.onesignal.requests_to("POST", "/notifications")
                         if f"{author.email}-phone" in r.json["include_subscription_ids"]]
            assert to_author == [notification_id]
        finally:
            for socket in sockets.values():
                await socket.close()


async def test_fifty_concurrent_comments_count_fifty_and_notify_the_author_fifty_times(tmp_path):
    async with news_team(tmp_path, members=2) as team:
        client, author, (bob, carol) = team.client, team.admin, team.members
        article = await create_article(client, author, await create_feed(client, author))
        results = await asyncio.gather(
            *(comment(client, (bob, carol)[n % 2], article, content=f"Commentaire {n}") for n in range(50))
        )
        assert len({r["id"] for r in results}) == 50
        assert sorted(r["commentCount"] for r in results) == list(range(1, 51))
        page = await client.get(f"/api/v1/pages/{article['id']}", headers=bob.headers)
        assert page.json()["commentCount"] == 50

        seen = await every_item(client, carol, f"/api/v1/pages/{article['id']}/comments", 20)
        assert sorted(c["id"] for c in seen) == sorted(r["id"] for r in results)

        async def all_notified():
            items = await inbox(client, author, limit=100)
            return len([n for n in items if n["type"] == "comment.created"]) == 50

        await eventually(all_notified, timeout=30)
