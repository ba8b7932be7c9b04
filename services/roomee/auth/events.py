"""Events the auth service emits: ``roomee.auth.user.*`` and ``roomee.notification.member.registered``."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.events import build_envelope, emit

USER_CREATED = "user.created"
MEMBER_REGISTERED = "member.registered"


async def user_created(session: AsyncSession, *, user: dict[str, Any], member: dict[str, Any]) -> None:
    envelope = build_envelope(
        USER_CREATED,
        workspace_id=member["workspaceId"],
        hotel_id=member["ecosystemId"],
        workspace_name=member["workspaceName"],
        payload={"id": user["id"], "email": user["email"], "firstName": user["first_name"], "lastName": user["last_name"]},
        channels=(),
        actor={"id": user["id"], "name": f"{user['first_name']} {user['last_name']}".strip(), "type": "user"},
    )
    # A broadcast in the contract (ARCHITECTURE §5) that nothing in the platform consumes by design:
    # published without requiring a bound queue, else every sign-up would wait in the outbox forever.
    await emit(session, f"roomee.auth.{USER_CREATED}", envelope, require_consumer=False)


async def member_registered(
    session: AsyncSession, *, user: dict[str, Any], member: dict[str, Any], invited_by_member_id: str | None
) -> None:
    name = f"{member['firstName']} {member['lastName']}".strip()
    envelope = build_envelope(
        MEMBER_REGISTERED,
        workspace_id=member["workspaceId"],
        hotel_id=member["ecosystemId"],
        workspace_name=member["workspaceName"],
        payload={"member": {"id": member["id"], "userId": user["id"], "email": user["email"], "name": name,
                            "role": member["role"]}},
        channels=("push", "socket"),
        actor={"id": member["id"], "name": name, "type": "member"},
        receiver_ids=[invited_by_member_id] if invited_by_member_id else [],
    )
    await emit(session, f"roomee.notification.{MEMBER_REGISTERED}", envelope)


PASSWORD_RESET = "user.password_reset"
PASSWORD_CHANGED = "user.password_changed"


def _account_envelope(event_type: str, user: dict[str, Any], profile: dict[str, Any] | None,
                      payload: dict[str, Any]) -> dict[str, Any]:
    """An email to the account's own address (no member receives it in the app), in the member's locale
    (their first membership's, else its workspace's)."""
    profile = profile or {}
    first = profile.get("firstName") or user["first_name"]
    last = profile.get("lastName") or user["last_name"]
    return build_envelope(
        event_type,
        workspace_id=profile.get("workspaceId"),
        hotel_id=profile.get("ecosystemId"),
        workspace_name=profile.get("workspaceName"),
        payload={"email": user["email"], "locale": profile.get("locale"),
                 "member": {"firstName": first, "lastName": last, "email": user["email"]}, **payload},
        channels=("email",),
        actor={"id": user["id"], "name": f"{first} {last}".strip(), "type": "user"},
    )


async def password_reset(session: AsyncSession, *, user: dict[str, Any], profile: dict[str, Any] | None,
                         link: str, expires_at: str) -> None:
    """The reset email: it carries the link, so its outbox row is deleted once published."""
    envelope = _account_envelope(PASSWORD_RESET, user, profile, {"resetLink": link, "expiresAt": expires_at})
    await emit(session, f"roomee.notification.{PASSWORD_RESET}", envelope, sensitive=True)


async def password_changed(session: AsyncSession, *, user: dict[str, Any], profile: dict[str, Any] | None,
                           how: str, changed_at: str) -> None:
    """The notice that the password changed (``how``: ``reset`` or ``change``), so an owner who did not do
    it knows."""
    envelope = _account_envelope(PASSWORD_CHANGED, user, profile, {"how": how, "changedAt": changed_at})
    await emit(session, f"roomee.notification.{PASSWORD_CHANGED}", envelope)
