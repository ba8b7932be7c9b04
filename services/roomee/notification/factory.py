"""The notification factory (seed Flow 6): template per event type and locale, rendered with the
event's variables in a Jinja2 sandbox (HTML with autoescape)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, Template
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from roomee.notification import catalog

_text_env = SandboxedEnvironment(autoescape=False, undefined=ChainableUndefined, keep_trailing_newline=True)
_html_env = SandboxedEnvironment(autoescape=True, undefined=ChainableUndefined)


@dataclass(frozen=True)
class Rendered:
    """What a recipient reads in the app and in a push."""

    title: str
    body: str


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@lru_cache(maxsize=4096)
def resolve_locale(*candidates: str | None) -> str:
    """The first candidate we have templates for (``fr-FR`` counts as ``fr``), else the default."""
    for candidate in candidates:
        if candidate:
            language = candidate.replace("_", "-").split("-")[0].lower()
            if language in catalog.LOCALES:
                return language
    return catalog.DEFAULT_LOCALE


def _name(person: dict[str, Any] | None) -> str:
    if not isinstance(person, dict):
        return ""
    name = person.get("name") or " ".join(
        part for part in (person.get("firstName"), person.get("lastName")) if part
    )
    return str(name or "").strip()


def _first(*values: Any) -> str:
    for value in values:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _date(value: Any) -> str:
    """An ISO timestamp as ``2025-10-31 12:00 UTC`` (what an email says)."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def context_of(envelope: dict[str, Any]) -> dict[str, Any]:
    """The template variables of an event (see ``catalog``)."""
    payload = envelope.get("payload") or {}
    if not isinstance(payload, dict):
        payload = {}
    metadata = envelope.get("metadata") or {}
    actor = metadata.get("actor") or {}
    page = payload.get("page") if isinstance(payload.get("page"), dict) else {}
    hotel = payload.get("hotel") if isinstance(payload.get("hotel"), dict) else {}
    member = payload.get("member") if isinstance(payload.get("member"), dict) else {}
    if envelope.get("type") == "member.onboarding":
        member = {"firstName": payload.get("firstName"), "lastName": payload.get("lastName"), "email": payload.get("email")}
    event_type = str(envelope.get("type") or "")
    workspace = _first(
        envelope.get("workspaceName"), payload.get("name") if event_type.startswith("workspace.") else None
    )
    return {
        "actor": _first(actor.get("name"), (payload.get("inviter") or {}).get("name") if isinstance(payload.get("inviter"), dict) else None) or "Roomee",
        "workspace": workspace,
        "title": _first(
            payload.get("title"), page.get("title"), payload.get("pageTitle"), hotel.get("name"),
            payload.get("hotelName"), payload.get("name"),
        ),
        "member": {"name": _name(member), "email": member.get("email") or ""},
        "email": payload.get("email") or "",
        "link": payload.get("signupLink") or payload.get("resetLink") or payload.get("signinLink") or "",
        "expires": _date(payload.get("expiresAt")),
        "payload": payload,
    }


@lru_cache(maxsize=1024)
def _compiled(html: bool, source: str) -> Template:
    return (_html_env if html else _text_env).from_string(source)


def _templates(event_type: str, locale: str) -> dict[str, str]:
    per_type = catalog.TEMPLATES.get(event_type)
    if per_type is None:
        raise KeyError(f"no template for {event_type}")
    return per_type.get(locale) or per_type[catalog.DEFAULT_LOCALE]


class NotificationFactory:
    """Renders one event for one locale (shared by every recipient reading that locale)."""

    def render(self, event_type: str, locale: str, context: dict[str, Any]) -> Rendered:
        source = _templates(event_type, locale)
        title = _compiled(False, source["title"]).render(context).strip()
        body = _compiled(False, source["body"]).render(context).strip()
        return Rendered(title=title, body=body)

    def render_email(
        self, event_type: str, locale: str, context: dict[str, Any], rendered: Rendered, recipient: str = ""
    ) -> RenderedEmail:
        source = _templates(event_type, locale)
        defaults = catalog.EMAIL_DEFAULTS.get(locale) or catalog.EMAIL_DEFAULTS[catalog.DEFAULT_LOCALE]
        variables = {**context, "rendered_title": rendered.title, "rendered_body": rendered.body, "recipient": recipient}
        subject = _compiled(False, source.get("subject", defaults["subject"])).render(variables).strip()
        text = _compiled(False, source.get("text", defaults["text"])).render(variables)
        content = Markup(_compiled(True, source.get("html", defaults["html"])).render(variables))
        html = _compiled(True, catalog.EMAIL_LAYOUT).render(locale=locale, subject=subject, content=content)
        # A subject is one line, whatever a variable held.
        subject = " ".join(subject.split())
        return RenderedEmail(subject=subject, text=text, html=html)
