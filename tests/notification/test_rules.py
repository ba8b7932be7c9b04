"""The pure rules under the pipeline: quiet-hours windows (midnight, daylight saving, timezones),
the channel decision, locales, and template rendering (sandboxed, HTML escaped)."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from jinja2.exceptions import SecurityError

from roomee.notification import catalog
from roomee.notification.factory import NotificationFactory, _compiled, context_of, resolve_locale
from roomee.notification.preferences import Preferences, QuietHours, decide


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


NIGHT = QuietHours(start=time(22, 0), end=time(7, 0), timezone="Europe/Paris", mode="defer")


@pytest.mark.parametrize(
    ("now", "release"),
    [
        (at(2026, 1, 15, 20, 59), None),  # 21:59 in Paris
        (at(2026, 1, 15, 21, 0), at(2026, 1, 16, 6, 0)),  # 22:00: starts, ends 07:00 next day
        (at(2026, 1, 15, 23, 30), at(2026, 1, 16, 6, 0)),  # after midnight in Paris
        (at(2026, 1, 16, 5, 59), at(2026, 1, 16, 6, 0)),
        (at(2026, 1, 16, 6, 0), None),  # 07:00: over
        (at(2026, 3, 28, 22, 0), at(2026, 3, 29, 5, 0)),  # the night clocks go forward: 07:00 CEST
        (at(2026, 10, 24, 22, 0), at(2026, 10, 25, 6, 0)),  # the night clocks go back: 07:00 CET
    ],
)
def test_quiet_window_spanning_midnight(now, release):
    assert NIGHT.window_at(now, member_timezone="America/New_York") == release


def test_same_day_window_and_member_timezone():
    siesta = QuietHours(start=time(13, 0), end=time(15, 0))
    assert siesta.window_at(at(2026, 7, 1, 17, 30), "America/New_York") == at(2026, 7, 1, 19, 0)  # 13:30 EDT
    assert siesta.window_at(at(2026, 7, 1, 13, 30), "America/New_York") is None  # 09:30 EDT
    assert siesta.window_at(at(2026, 7, 1, 13, 30), None) == at(2026, 7, 1, 15, 0)  # UTC by default
    assert siesta.window_at(at(2026, 7, 1, 13, 30), "Not/AZone") == at(2026, 7, 1, 15, 0)


def test_decision_respects_silence_categories_event_channels_and_quiet_modes():
    everything = {"push", "socket", "email"}
    now = at(2026, 1, 15, 23, 0)  # midnight in Paris
    assert decide(Preferences(is_global_silent=True), category="page", channels=everything,
                  member_timezone=None, now=now).anything is False
    partial = Preferences(category_prefs={"page": {"push": False}})
    page = decide(partial, category="page", channels=everything, member_timezone=None, now=now)
    assert (page.app, page.push, page.email) == (True, False, True)
    like = decide(partial, category="like", channels={"push"}, member_timezone=None, now=now)
    assert (like.app, like.push, like.email) == (False, True, False)

    deferred = decide(Preferences(quiet_hours=NIGHT), category="page", channels=everything, member_timezone=None, now=now)
    assert (deferred.app, deferred.push, deferred.email) == (True, False, False)
    assert deferred.deferred == ("push", "email") and deferred.release_at == at(2026, 1, 16, 6, 0)
    assert deferred.summary == "socket,push:deferred,email:deferred"
    skipped = decide(Preferences(quiet_hours=QuietHours(time(22, 0), time(7, 0), "Europe/Paris", "skip")),
                     category="page", channels=everything, member_timezone=None, now=now)
    assert (skipped.app, skipped.push, skipped.email, skipped.deferred) == (True, False, False, ())
    socket_only = decide(Preferences(quiet_hours=NIGHT), category="page", channels={"socket"},
                         member_timezone=None, now=now)
    assert (socket_only.app, socket_only.deferred) == (True, ())


def test_locale_resolution():
    assert resolve_locale("en-GB", "fr") == "en"
    assert resolve_locale(None, "fr_FR") == "fr"
    assert resolve_locale("de", None) == catalog.DEFAULT_LOCALE
    assert resolve_locale("de", "en") == "en"


def test_every_event_type_has_french_and_english_templates_that_render():
    factory = NotificationFactory()
    envelope = {"type": "page.created", "workspaceName": "Spa", "payload": {"title": "T", "email": "x@example.com"},
                "metadata": {"actor": {"name": "Ada"}}}
    for event_type in catalog.EVENT_KINDS:
        assert set(catalog.TEMPLATES[event_type]) >= {"fr", "en"}, event_type
        for locale in ("fr", "en"):
            rendered = factory.render(event_type, locale, context_of({**envelope, "type": event_type}))
            assert rendered.title and rendered.body, (event_type, locale)
            email = factory.render_email(event_type, locale, context_of({**envelope, "type": event_type}), rendered)
            assert email.subject and email.text and email.html.startswith("<!doctype html>")


def test_html_is_escaped_text_is_not_and_the_sandbox_holds():
    factory = NotificationFactory()
    context = context_of({"type": "page.created", "workspaceName": "Spa & Co",
                          "payload": {"title": "<script>alert(1)</script>"},
                          "metadata": {"actor": {"name": "Ada <b>"}}})
    rendered = factory.render("page.created", "en", context)
    assert rendered.body == "Ada <b> published “<script>alert(1)</script>” in Spa & Co"
    email = factory.render_email("page.created", "en", context, rendered)
    assert "<script>" not in email.html and "&lt;script&gt;" in email.html and "Spa &amp; Co" in email.html
    assert "<script>alert(1)</script>" in email.text
    with pytest.raises(SecurityError):
        _compiled(False, "{{ payload.__class__.__mro__[1].__subclasses__() }}").render(payload=context["payload"])


def test_onboarding_context_carries_the_link_for_the_email_only():
    factory = NotificationFactory()
    envelope = {"type": "member.onboarding", "workspaceName": "Hotel",
                "payload": {"email": "nina@example.com", "firstName": "Nina", "lastName": "New",
                            "signupLink": "https://roomee.example.com/signup?token=abc&x=1",
                            "expiresAt": "2026-01-18T10:00:00+00:00"},
                "metadata": {"actor": {"name": "Ada"}}}
    context = context_of(envelope)
    rendered = factory.render("member.onboarding", "fr", context)
    assert "token" not in rendered.body
    email = factory.render_email("member.onboarding", "fr", context, rendered)
    assert email.subject == "Ada vous invite à rejoindre Hotel sur Roomee"
    assert "https://roomee.example.com/signup?token=abc&x=1" in email.text
    assert 'href="https://roomee.example.com/signup?token=abc&amp;x=1"' in email.html
    assert "2026-01-18 10:00 UTC" in email.text
