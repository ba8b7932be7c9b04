"""Which kind and templates an event gets (a feed is no article), who a UI update skips (nobody hears of
their own removal), when an article or a comment is emailed (preferences ask), and the "you were added"
email of an existing account."""

from __future__ import annotations

from roomee.notification import catalog
from roomee.notification.catalog import kind_for
from roomee.notification.factory import NotificationFactory, context_of
from roomee.notification.processor import _asks_email, _removed_by
from roomee.notification.service import present_preferences


def _envelope(event_type: str, **payload) -> dict:
    return {"type": event_type, "workspaceName": "Front desk", "payload": payload,
            "metadata": {"actor": {"name": "Ada"}}}


def test_a_feed_renders_as_a_feed_and_an_article_as_an_article():
    factory = NotificationFactory()
    feed = _envelope("page.created", id="f1", title="News", pageType="feed")
    article = _envelope("page.created", id="a1", title="Lobby", pageType="article")
    assert kind_for(feed).type == "page.created" and kind_for(feed).templates == "feed.created"
    assert kind_for(article).templates == "page.created"
    for locale in ("en", "fr"):
        title = factory.render(kind_for(feed).templates, locale, context_of(feed)).title
        assert title in ("New feed", "Nouveau fil") and "article" not in title.lower()
    assert factory.render(kind_for(article).templates, "en", context_of(article)).title == "New article"
    assert factory.render("feed.created", "en", context_of(feed)).body == "Ada created the feed “News” in Front desk"
    # Every kind's templates exist in both languages.
    for kind in [*catalog.EVENT_KINDS.values(), *catalog.FEED_KINDS.values()]:
        assert set(catalog.TEMPLATES[kind.templates]) >= {"fr", "en"}, kind


def test_a_removal_skips_the_removed_members():
    member = {"id": "m-1", "email": "gone@example.com"}
    assert _removed_by(_envelope("member.deleted", member=member)) == ["m-1"]
    assert _removed_by(_envelope("workspace.deleted", id="w", removedMemberIds=["m-1", "m-2"])) == ["m-1", "m-2"]
    assert _removed_by(_envelope("member.created", member=member)) == []
    assert _removed_by(_envelope("member.deleted")) == []


def test_articles_and_comments_are_emailed_only_when_preferences_ask():
    article, comment = catalog.kind_of("page.created"), catalog.kind_of("comment.created")
    push_socket = frozenset({"push", "socket"})
    asks = {"category_prefs": {"page": {"app": True, "push": True, "email": True}}}
    declines = {"category_prefs": {"page": {"app": True, "push": True, "email": False}}}
    assert _asks_email(article, push_socket, asks) is True
    assert _asks_email(article, push_socket, declines) is False
    assert _asks_email(article, push_socket, None) is False  # the default: no article email
    assert _asks_email(comment, push_socket, asks) is False  # another category's wish
    assert _asks_email(catalog.kind_of("like.created"), push_socket,
                       {"category_prefs": {"like": {"email": True}}}) is False  # likes are never emailed
    assert _asks_email(catalog.FEED_KINDS["page.created"], frozenset({"socket"}), asks) is False
    # What GET /preferences shows by default says so.
    shown = present_preferences("m", "w", None)["category_prefs"]
    assert shown["page"]["email"] is False and shown["comment"]["email"] is False and shown["member"]["email"] is True


def test_an_existing_account_is_told_it_was_added_with_a_sign_in_link():
    factory = NotificationFactory()
    envelope = _envelope("member.added", hotelName="Second Hotel", signinLink="https://app.example/signin?email=a%40b.c",
                         member={"id": "m", "firstName": "Ada", "lastName": "Admin", "email": "a@b.c"})
    context = context_of(envelope)
    for locale, subject in (("en", "You were added to Second Hotel on Roomee"),
                            ("fr", "Vous avez été ajouté à Second Hotel sur Roomee")):
        rendered = factory.render("member.added", locale, context)
        email = factory.render_email("member.added", locale, context, rendered)
        assert email.subject == subject
        assert "\nhttps://app.example/signin?email=a%40b.c\n" in email.text  # the link on a line of its own
        assert "Create" not in email.text and "Créez" not in email.text
