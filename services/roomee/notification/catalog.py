"""What each consumed event type becomes: its category (what preferences are keyed by) and its
templates, per locale.

Templates are Jinja2 sources rendered in a sandbox (see ``factory``). Variables:
``actor`` (name of who did it), ``workspace`` (workspace name), ``title`` (the page, comment or
hotel title when there is one), ``member`` (the member concerned: ``name``, ``email``),
``email`` (an invitee's address), ``link`` (a sign-up link), ``payload`` (the raw payload) and
``recipient`` (the recipient's name, emails only). Each template set has ``title`` and ``body``
(in-app and push); ``subject``, ``text`` and ``html`` (the email) default to title and body.
"""

from __future__ import annotations

from dataclasses import dataclass

LOCALES = ("fr", "en")
DEFAULT_LOCALE = "fr"

CATEGORIES = ("page", "comment", "like", "member", "workspace", "hotel")
CHANNEL_PREFS = ("app", "push", "email")
# Categories whose email a member asks for (``categoryPrefs[category].email: true``); off by default.
EMAIL_OPT_IN_CATEGORIES = frozenset({"page", "comment"})


@dataclass(frozen=True)
class EventKind:
    """``type``: the event's; ``category``: what preferences are keyed by; ``template``: the templates it is
    rendered with (default its type); ``email_opt_in``: email goes out to the receivers whose preferences ask
    for it (``categoryPrefs[category].email: true``, off by default: ``EMAIL_OPT_IN_CATEGORIES``), although
    the event names no email channel."""

    type: str
    category: str
    template: str | None = None
    email_opt_in: bool = False

    @property
    def templates(self) -> str:
        return self.template or self.type


def _kinds(category: str, *actions: str) -> dict[str, EventKind]:
    return {f"{category}.{action}": EventKind(f"{category}.{action}", category) for action in actions}


EVENT_KINDS: dict[str, EventKind] = {
    **_kinds("page", "updated", "deleted"),
    "page.created": EventKind("page.created", "page", email_opt_in=True),
    "comment.created": EventKind("comment.created", "comment", email_opt_in=True),
    **_kinds("comment", "updated", "deleted"),
    **_kinds("like", "created", "deleted"),
    **_kinds("member", "created", "updated", "deleted", "onboarding", "registered", "added"),
    **_kinds("workspace", "created", "updated", "deleted"),
    **_kinds("hotel", "created", "updated", "deleted", "creation_failed"),
    # Emails about a person's own account, sent to its address whatever the preferences (auth emits them).
    **_kinds("user", "password_reset", "password_changed"),
}

# Events that are one email to ``payload.email`` (it holds a secret link or concerns the account):
# never a notification of a member, never filtered by preferences.
DIRECT_EMAILS = frozenset({"member.onboarding", "user.password_reset", "user.password_changed"})


# A feed is a page too, but its creation is no "New article": a UI update with templates of its own.
FEED_KINDS: dict[str, EventKind] = {
    f"page.{action}": EventKind(f"page.{action}", "page", template=f"feed.{action}")
    for action in ("created", "updated", "deleted")
}


def kind_of(event_type: str) -> EventKind | None:
    return EVENT_KINDS.get(event_type)


def kind_for(envelope: dict) -> EventKind | None:
    """The kind of an event, with what its payload says (a feed's page events are not an article's)."""
    event_type = str(envelope.get("type") or "")
    payload = envelope.get("payload")
    if event_type in FEED_KINDS and isinstance(payload, dict) and payload.get("pageType") == "feed":
        return FEED_KINDS[event_type]
    return kind_of(event_type)


# -- templates ----------------------------------------------------------------------------------

TEMPLATES: dict[str, dict[str, dict[str, str]]] = {
    "page.created": {
        "fr": {"title": "Nouvel article", "body": "{{ actor }} a publié « {{ title }} » dans {{ workspace }}"},
        "en": {"title": "New article", "body": "{{ actor }} published “{{ title }}” in {{ workspace }}"},
    },
    "page.updated": {
        "fr": {"title": "Article modifié", "body": "{{ actor }} a modifié « {{ title }} »"},
        "en": {"title": "Article updated", "body": "{{ actor }} updated “{{ title }}”"},
    },
    "page.deleted": {
        "fr": {"title": "Article supprimé", "body": "{{ actor }} a supprimé « {{ title }} »"},
        "en": {"title": "Article deleted", "body": "{{ actor }} deleted “{{ title }}”"},
    },
    "feed.created": {
        "fr": {"title": "Nouveau fil", "body": "{{ actor }} a créé le fil « {{ title }} » dans {{ workspace }}"},
        "en": {"title": "New feed", "body": "{{ actor }} created the feed “{{ title }}” in {{ workspace }}"},
    },
    "feed.updated": {
        "fr": {"title": "Fil modifié", "body": "{{ actor }} a modifié le fil « {{ title }} »"},
        "en": {"title": "Feed updated", "body": "{{ actor }} updated the feed “{{ title }}”"},
    },
    "feed.deleted": {
        "fr": {"title": "Fil supprimé", "body": "{{ actor }} a supprimé le fil « {{ title }} »"},
        "en": {"title": "Feed deleted", "body": "{{ actor }} deleted the feed “{{ title }}”"},
    },
    "comment.created": {
        "fr": {"title": "Nouveau commentaire", "body": "{{ actor }} a commenté « {{ title }} »"},
        "en": {"title": "New comment", "body": "{{ actor }} commented on “{{ title }}”"},
    },
    "comment.updated": {
        "fr": {"title": "Commentaire modifié", "body": "{{ actor }} a modifié son commentaire sur « {{ title }} »"},
        "en": {"title": "Comment edited", "body": "{{ actor }} edited a comment on “{{ title }}”"},
    },
    "comment.deleted": {
        "fr": {"title": "Commentaire supprimé", "body": "{{ actor }} a supprimé un commentaire sur « {{ title }} »"},
        "en": {"title": "Comment deleted", "body": "{{ actor }} deleted a comment on “{{ title }}”"},
    },
    "like.created": {
        "fr": {"title": "Nouveau j'aime", "body": "{{ actor }} aime « {{ title }} »"},
        "en": {"title": "New like", "body": "{{ actor }} likes “{{ title }}”"},
    },
    "like.deleted": {
        "fr": {"title": "J'aime retiré", "body": "{{ actor }} n'aime plus « {{ title }} »"},
        "en": {"title": "Like removed", "body": "{{ actor }} no longer likes “{{ title }}”"},
    },
    "member.created": {
        "fr": {"title": "Nouveau membre", "body": "{{ member.name or member.email }} a été ajouté à {{ workspace }}"},
        "en": {"title": "New member", "body": "{{ member.name or member.email }} was added to {{ workspace }}"},
    },
    "member.updated": {
        "fr": {"title": "Membre modifié", "body": "Le profil de {{ member.name or member.email }} a été mis à jour"},
        "en": {"title": "Member updated", "body": "{{ member.name or member.email }}'s profile was updated"},
    },
    "member.deleted": {
        "fr": {"title": "Membre retiré", "body": "{{ member.name or member.email }} a quitté {{ workspace }}"},
        "en": {"title": "Member removed", "body": "{{ member.name or member.email }} left {{ workspace }}"},
    },
    "member.onboarding": {
        "fr": {
            "title": "Invitation envoyée",
            "body": "Invitation envoyée à {{ email }} pour rejoindre {{ workspace }}",
            "subject": "{{ actor }} vous invite à rejoindre {{ workspace }} sur Roomee",
            "text": (
                "Bonjour{% if member.name %} {{ member.name }}{% endif %},\n\n"
                "{{ actor }} vous invite à rejoindre l'espace {{ workspace }} sur Roomee.\n"
                "Créez votre compte avec ce lien (valable jusqu'au {{ expires }}) :\n{{ link }}\n"
            ),
            "html": (
                "<p>Bonjour{% if member.name %} {{ member.name }}{% endif %},</p>"
                "<p>{{ actor }} vous invite à rejoindre l'espace <strong>{{ workspace }}</strong> sur Roomee.</p>"
                '<p><a href="{{ link }}">Créer mon compte</a></p>'
                "<p>Ce lien est valable jusqu'au {{ expires }}.</p>"
            ),
        },
        "en": {
            "title": "Invitation sent",
            "body": "Invitation sent to {{ email }} to join {{ workspace }}",
            "subject": "{{ actor }} invites you to join {{ workspace }} on Roomee",
            "text": (
                "Hello{% if member.name %} {{ member.name }}{% endif %},\n\n"
                "{{ actor }} invites you to join the {{ workspace }} workspace on Roomee.\n"
                "Create your account with this link (valid until {{ expires }}):\n{{ link }}\n"
            ),
            "html": (
                "<p>Hello{% if member.name %} {{ member.name }}{% endif %},</p>"
                "<p>{{ actor }} invites you to join the <strong>{{ workspace }}</strong> workspace on Roomee.</p>"
                '<p><a href="{{ link }}">Create my account</a></p>'
                "<p>This link is valid until {{ expires }}.</p>"
            ),
        },
    },
    "user.password_reset": {
        "fr": {
            "title": "Réinitialisation du mot de passe",
            "body": "Un lien pour choisir un nouveau mot de passe a été envoyé à {{ email }}",
            "subject": "Choisissez un nouveau mot de passe Roomee",
            "text": (
                "Bonjour{% if member.name %} {{ member.name }}{% endif %},\n\n"
                "Une réinitialisation du mot de passe de votre compte Roomee ({{ email }}) a été demandée.\n"
                "Choisissez un nouveau mot de passe avec ce lien (une seule fois, jusqu'au {{ expires }}) :\n"
                "{{ link }}\n\n"
                "Si vous n'avez rien demandé, ignorez ce message : votre mot de passe ne change pas.\n"
            ),
            "html": (
                "<p>Bonjour{% if member.name %} {{ member.name }}{% endif %},</p>"
                "<p>Une réinitialisation du mot de passe de votre compte Roomee ({{ email }}) a été demandée.</p>"
                '<p><a href="{{ link }}">Choisir un nouveau mot de passe</a></p>'
                "<p>Ce lien fonctionne une seule fois, jusqu'au {{ expires }}. Si vous n'avez rien demandé, "
                "ignorez ce message : votre mot de passe ne change pas.</p>"
            ),
        },
        "en": {
            "title": "Password reset",
            "body": "A link to choose a new password was sent to {{ email }}",
            "subject": "Choose a new Roomee password",
            "text": (
                "Hello{% if member.name %} {{ member.name }}{% endif %},\n\n"
                "Someone asked to reset the password of your Roomee account ({{ email }}).\n"
                "Choose a new password with this link (once, until {{ expires }}):\n"
                "{{ link }}\n\n"
                "If you did not ask for it, ignore this email: your password stays as it is.\n"
            ),
            "html": (
                "<p>Hello{% if member.name %} {{ member.name }}{% endif %},</p>"
                "<p>Someone asked to reset the password of your Roomee account ({{ email }}).</p>"
                '<p><a href="{{ link }}">Choose a new password</a></p>'
                "<p>This link works once, until {{ expires }}. If you did not ask for it, ignore this email: "
                "your password stays as it is.</p>"
            ),
        },
    },
    "user.password_changed": {
        "fr": {
            "title": "Mot de passe modifié",
            "body": "Le mot de passe de votre compte Roomee ({{ email }}) a été modifié ; vos autres sessions "
                    "sont fermées",
            "subject": "Votre mot de passe Roomee a été modifié",
            "text": (
                "Bonjour{% if member.name %} {{ member.name }}{% endif %},\n\n"
                "Le mot de passe de votre compte Roomee ({{ email }}) vient d'être modifié"
                "{% if payload.how == 'reset' %} par un lien de réinitialisation{% endif %}. "
                "Vos autres sessions ont été fermées.\n\n"
                "Si ce n'était pas vous, demandez un nouveau mot de passe tout de suite et prévenez votre "
                "administrateur.\n"
            ),
        },
        "en": {
            "title": "Password changed",
            "body": "The password of your Roomee account ({{ email }}) was changed; your other sessions were "
                    "signed out",
            "subject": "Your Roomee password was changed",
            "text": (
                "Hello{% if member.name %} {{ member.name }}{% endif %},\n\n"
                "The password of your Roomee account ({{ email }}) was just changed"
                "{% if payload.how == 'reset' %} with a reset link{% endif %}. "
                "Your other sessions were signed out.\n\n"
                "If this was not you, ask for a new password at once and tell your administrator.\n"
            ),
        },
    },
    "member.added": {
        "fr": {
            "title": "Ajouté à {{ title }}",
            "body": "{{ actor }} vous a ajouté à {{ title }} ({{ workspace }})",
            "subject": "Vous avez été ajouté à {{ title }} sur Roomee",
            "text": (
                "Bonjour{% if member.name %} {{ member.name }}{% endif %},\n\n"
                "{{ actor }} vous a ajouté à {{ title }} (espace {{ workspace }}) sur Roomee.\n"
                "Vous avez déjà un compte : connectez-vous avec votre mot de passe habituel, rien d'autre à faire.\n"
                "{{ link }}\n"
            ),
            "html": (
                "<p>Bonjour{% if member.name %} {{ member.name }}{% endif %},</p>"
                "<p>{{ actor }} vous a ajouté à <strong>{{ title }}</strong> (espace {{ workspace }}) sur Roomee.</p>"
                "<p>Vous avez déjà un compte : connectez-vous avec votre mot de passe habituel.</p>"
                '<p><a href="{{ link }}">Me connecter</a></p>'
            ),
        },
        "en": {
            "title": "Added to {{ title }}",
            "body": "{{ actor }} added you to {{ title }} ({{ workspace }})",
            "subject": "You were added to {{ title }} on Roomee",
            "text": (
                "Hello{% if member.name %} {{ member.name }}{% endif %},\n\n"
                "{{ actor }} added you to {{ title }} (the {{ workspace }} workspace) on Roomee.\n"
                "You already have an account: sign in with your usual password, nothing else to do.\n"
                "{{ link }}\n"
            ),
            "html": (
                "<p>Hello{% if member.name %} {{ member.name }}{% endif %},</p>"
                "<p>{{ actor }} added you to <strong>{{ title }}</strong> (the {{ workspace }} workspace) on Roomee.</p>"
                "<p>You already have an account: sign in with your usual password.</p>"
                '<p><a href="{{ link }}">Sign in</a></p>'
            ),
        },
    },
    "member.registered": {
        "fr": {"title": "Nouveau membre inscrit", "body": "{{ member.name or member.email }} a rejoint {{ workspace }}"},
        "en": {"title": "New member signed up", "body": "{{ member.name or member.email }} joined {{ workspace }}"},
    },
    "workspace.created": {
        "fr": {"title": "Nouvel espace", "body": "L'espace {{ workspace }} a été créé"},
        "en": {"title": "New workspace", "body": "The {{ workspace }} workspace was created"},
    },
    "workspace.updated": {
        "fr": {"title": "Espace modifié", "body": "L'espace {{ workspace }} a été mis à jour"},
        "en": {"title": "Workspace updated", "body": "The {{ workspace }} workspace was updated"},
    },
    "workspace.deleted": {
        "fr": {"title": "Espace supprimé", "body": "L'espace {{ workspace }} a été supprimé"},
        "en": {"title": "Workspace deleted", "body": "The {{ workspace }} workspace was deleted"},
    },
    "hotel.created": {
        "fr": {"title": "Hôtel prêt", "body": "L'hôtel {{ title }} est prêt : bienvenue sur Roomee !"},
        "en": {"title": "Hotel ready", "body": "The hotel {{ title }} is ready: welcome to Roomee!"},
    },
    "hotel.updated": {
        "fr": {"title": "Hôtel modifié", "body": "L'hôtel {{ title }} a été mis à jour"},
        "en": {"title": "Hotel updated", "body": "The hotel {{ title }} was updated"},
    },
    "hotel.deleted": {
        "fr": {"title": "Hôtel supprimé", "body": "L'hôtel {{ title }} a été supprimé"},
        "en": {"title": "Hotel deleted", "body": "The hotel {{ title }} was deleted"},
    },
    "hotel.creation_failed": {
        "fr": {"title": "Échec de création", "body": "La création de l'hôtel {{ title }} a échoué{% if payload.error %} : {{ payload.error }}{% endif %}"},
        "en": {"title": "Hotel creation failed", "body": "Creating the hotel {{ title }} failed{% if payload.error %}: {{ payload.error }}{% endif %}"},
    },
}

# The default email around a notification that has no email template of its own.
EMAIL_DEFAULTS: dict[str, dict[str, str]] = {
    "fr": {
        "subject": "{{ rendered_title }}",
        "text": "Bonjour{% if recipient %} {{ recipient }}{% endif %},\n\n{{ rendered_body }}\n\n— Roomee\n",
        "html": "<p>Bonjour{% if recipient %} {{ recipient }}{% endif %},</p><p>{{ rendered_body }}</p>",
    },
    "en": {
        "subject": "{{ rendered_title }}",
        "text": "Hello{% if recipient %} {{ recipient }}{% endif %},\n\n{{ rendered_body }}\n\n— Roomee\n",
        "html": "<p>Hello{% if recipient %} {{ recipient }}{% endif %},</p><p>{{ rendered_body }}</p>",
    },
}

# The HTML email layout; ``content`` is already-escaped markup from an autoescaped template.
EMAIL_LAYOUT = (
    '<!doctype html><html lang="{{ locale }}"><head><meta charset="utf-8"><title>{{ subject }}</title></head>'
    '<body style="font-family: sans-serif; color: #222;">{{ content }}'
    '<hr><p style="color: #888; font-size: 12px;">Roomee</p></body></html>'
)
