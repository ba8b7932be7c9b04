"""The notification rules through the whole platform (news, members, notification over real HTTP and the
platform's broker): a feed's creation is a UI update titled as a feed, never "New article"; a removed member
hears nothing of their own removal; an article is emailed to the members whose preferences ask for it, once,
and not during their quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime

from roomee.notification.channels import NOTIFICATION_NEW
from roomee.notification.processor import notification_id_for
from tests.news.support import create_article, create_feed, news_team
from tests.notification.support import (
    SocketInbox, attempts, emailed_to, eventually, inbox, set_clock, set_preferences, wait_delivered,
)


async def test_a_feed_creation_is_no_new_article(tmp_path):
    async with news_team(tmp_path, members=1) as team:
        client, admin, (bob,) = team.client, team.admin, team.members
        socket = await SocketInbox(NOTIFICATION_NEW).connect(team.running, bob)
        try:
            feed = await create_feed(client, admin, title="Actualités")
            update = await socket.wait(NOTIFICATION_NEW, lambda p: p["data"].get("id") == feed["id"])
            assert update["title"] == "Nouveau fil" and update["body"] == "Ada Admin a créé le fil « Actualités » dans Hotel Test"
            article = await create_article(client, admin, feed, title="Planning")
            await socket.wait(NOTIFICATION_NEW, lambda p: p["data"].get("id") == article["id"])
            titles = [p["title"] for p in socket.received[NOTIFICATION_NEW] if p["data"].get("id") == feed["id"]]
            assert titles == ["Nouveau fil"]
            assert not any(p["title"] in ("Nouvel article", "New article") for p in socket.received[NOTIFICATION_NEW]
                           if p["data"].get("id") != article["id"])
            assert [n["data"]["id"] for n in await inbox(client, bob)] == [article["id"]]  # the feed is not in it
        finally:
            await socket.close()


async def test_a_removed_member_is_not_notified_of_their_removal(tmp_path):
    async with news_team(tmp_path, members=2) as team:
        client, admin, (bob, carol) = team.client, team.admin, team.members
        sockets = {p.email: await SocketInbox(NOTIFICATION_NEW).connect(team.running, p) for p in (bob, carol)}
        try:
            removed = await client.delete(f"/members/{carol.member_id}", headers=admin.headers)
            assert removed.status_code == 204
            # Bob sees the UI update; it is one emit to the workspace's room, which skipped Carol.
            await sockets[bob.email].wait(NOTIFICATION_NEW, lambda p: p["type"] == "member.deleted"
                                          and p["data"]["member"]["id"] == carol.member_id)
            assert [p for p in sockets[carol.email].received[NOTIFICATION_NEW] if p["type"] == "member.deleted"] == []
            assert [n for n in await inbox(client, bob) if n["type"] == "member.deleted"] == []  # no inbox row
        finally:
            for socket in sockets.values():
                await socket.close()


async def test_an_article_is_emailed_when_preferences_ask_once_and_not_in_quiet_hours(tmp_path):
    async with news_team(tmp_path, members=3) as team:
        client, admin, (bob, carol, dan) = team.client, team.admin, team.members
        await set_preferences(client, bob, categoryPrefs={"page": {"app": True, "push": True, "email": True}})
        # Dan asks for email too, but it is night where he lives: quiet hours drop it (skip).
        await set_preferences(client, dan, categoryPrefs={"page": {"app": True, "push": True, "email": True}},
                              quietHours={"start": "22:00", "end": "07:00", "timezone": "Europe/Paris", "mode": "skip"})
        set_clock(team.running, datetime(2026, 1, 15, 22, 30, tzinfo=UTC))  # 23:30 in Paris
        # Carol keeps the defaults: no article email.
        assert (await client.get("/api/v1/preferences", headers=carol.headers)).json()["categoryPrefs"]["page"]["email"] is False

        feed = await create_feed(client, admin)
        article = await create_article(client, admin, feed, title="Planning de Noël")
        envelope = await team.tap.wait_for("roomee.notification.page.created",
                                           lambda e: e["payload"]["id"] == article["id"])
        assert "email" not in envelope["channels"]  # news asks for push + socket; preferences add the email
        await wait_delivered(team.running, team.onesignal, envelope, push=[], email=[bob.email])
        assert emailed_to(await attempts(team.running, envelope)) == [bob.email]

        notification_id = notification_id_for(envelope["id"])
        mail = team.running.settings.data_dir / "mail"

        async def written():
            return sorted(mail.glob(f"*-{notification_id}-*.txt"))

        (text_file,) = await eventually(written)
        text = text_file.read_text()
        assert f"To: {bob.email}" in text and "Subject: Nouvel article" in text and "Planning de Noël" in text
        assert len(list(mail.glob(f"*-{notification_id}-*.eml"))) == 1  # one email for one notification
        # Everybody still has it in the app.
        for person in (bob, carol, dan):
            assert [n["id"] for n in await inbox(client, person) if n["type"] == "page.created"] == [notification_id]
