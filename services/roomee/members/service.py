"""Business rules of the members service: workspaces, members, roles and invitations."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urljoin

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.auth import MANAGE_ECOSYSTEM, MANAGE_MEMBERS, MANAGE_WORKSPACE, PUBLISH_PAGES, Principal
from roomee.kit.clock import as_utc, utcnow
from roomee.kit.errors import Conflict, Forbidden, Gone, NotFound
from roomee.kit.schemas import decode_cursor, decode_time_cursor, encode_cursor, invalid_cursor
from roomee.kit.settings import Settings
from roomee.members import events
from roomee.members.repository import MemberRepository, OnboardingRepository, WorkspaceRepository

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({MANAGE_MEMBERS, MANAGE_WORKSPACE, MANAGE_ECOSYSTEM, PUBLISH_PAGES}),
    "manager": frozenset({MANAGE_MEMBERS, PUBLISH_PAGES}),
    "editor": frozenset({PUBLISH_PAGES}),
    "staff": frozenset(),
}
ROLE_RANK = {"staff": 0, "editor": 1, "manager": 2, "admin": 3}


def permissions_of(role: str) -> list[str]:
    return sorted(ROLE_PERMISSIONS[role])


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_email(email: str) -> str:
    return email.strip().lower()


def present_member(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "permissions": permissions_of(row["role"]),
        "created_at": as_utc(row["created_at"]),
        "updated_at": as_utc(row["updated_at"]),
        "deleted_at": as_utc(row.get("deleted_at")),
    }


def present_workspace(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": as_utc(row["created_at"]), "updated_at": as_utc(row["updated_at"])}


def _event_member(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "userId": row["user_id"],
        "email": row["email"],
        "firstName": row["first_name"],
        "lastName": row["last_name"],
        "role": row["role"],
        "locale": row.get("locale"),
        "timezone": row.get("timezone"),
    }


def _next_cursor(rows: list[dict], limit: int, column: str) -> str | None:
    if len(rows) < limit:
        return None
    last = rows[-1]
    return encode_cursor(as_utc(last[column]).isoformat(), last["id"])


class MembersService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.workspaces = WorkspaceRepository(session)
        self.members = MemberRepository(session)
        self.onboardings = OnboardingRepository(session)

    # --- workspaces -------------------------------------------------------------------------

    async def _visible_workspace(self, principal: Principal, workspace_id: str) -> dict:
        """A workspace the caller may see; anything else is reported as absent (no tenant leak)."""
        found = await self.workspaces.get(workspace_id)
        if found is None or found["hotel_id"] != principal.hotel_id:
            raise NotFound("workspace not found")
        if workspace_id == principal.workspace_id or principal.has(MANAGE_ECOSYSTEM):
            return found
        if workspace_id in await self.members.workspace_ids_of_user(principal.subject, principal.hotel_id):
            return found
        raise NotFound("workspace not found")

    async def create_workspace(self, principal: Principal, data: dict[str, Any]) -> dict:
        now = utcnow()
        row = {"id": str(uuid.uuid4()), "hotel_id": principal.hotel_id, **data, "created_at": now, "updated_at": now}
        await self.workspaces.insert(row)
        creator = await self.members.get_in_workspace(principal.workspace_id, principal.member_id)
        if creator is not None:
            # The creator administers what they create, and can switch to it.
            await self._insert_member(
                workspace=row,
                email=creator["email"],
                user_id=creator["user_id"],
                first_name=creator["first_name"],
                last_name=creator["last_name"],
                role="admin",
                is_admin=creator["is_admin"],
                dashboard_access=creator["dashboard_access"],
                actor=events.actor_of(principal),
            )
        await events.publish(
            self.session, events.WORKSPACE_CREATED, workspace=row, payload=_event_workspace(row),
            actor=events.actor_of(principal),
        )
        return present_workspace(row)

    async def list_workspaces(self, principal: Principal) -> list[dict]:
        if principal.has(MANAGE_ECOSYSTEM):
            rows = await self.workspaces.list_in_hotel(principal.hotel_id)
        else:
            ids = set(await self.members.workspace_ids_of_user(principal.subject, principal.hotel_id))
            ids.add(principal.workspace_id)
            rows = await self.workspaces.list_in_hotel(principal.hotel_id, only_ids=sorted(ids))
        return [present_workspace(r) for r in rows]

    async def get_workspace(self, principal: Principal, workspace_id: str) -> dict:
        return present_workspace(await self._visible_workspace(principal, workspace_id))

    async def update_workspace(self, principal: Principal, workspace_id: str, changes: dict[str, Any]) -> dict:
        found = await self._visible_workspace(principal, workspace_id)
        allowed = principal.has(MANAGE_ECOSYSTEM) or (
            workspace_id == principal.workspace_id and principal.has(MANAGE_WORKSPACE)
        )
        if not allowed:
            raise Forbidden(f"permission '{MANAGE_WORKSPACE}' required", code="permission_denied")
        return await self._change_workspace(found, changes, events.actor_of(principal))

    async def _change_workspace(self, found: dict, changes: dict[str, Any], actor: dict) -> dict:
        if not changes:
            return present_workspace(found)
        changes["updated_at"] = utcnow()
        await self.workspaces.update(found["id"], changes)
        updated = {**found, **changes}
        await events.publish(
            self.session, events.WORKSPACE_UPDATED, workspace=updated, payload=_event_workspace(updated), actor=actor,
        )
        return present_workspace(updated)

    async def delete_workspace(self, principal: Principal, workspace_id: str) -> None:
        found = await self._visible_workspace(principal, workspace_id)
        if not principal.has(MANAGE_ECOSYSTEM):
            raise Forbidden(f"permission '{MANAGE_ECOSYSTEM}' required", code="permission_denied")
        await self._remove_workspace(found, events.actor_of(principal))

    async def _remove_workspace(self, workspace: dict, actor: dict) -> list[str]:
        now = utcnow()
        await self.workspaces.update(workspace["id"], {"deleted_at": now, "updated_at": now})
        removed = await self.members.soft_delete_workspace_members(workspace["id"], now)
        await events.publish(
            self.session, events.WORKSPACE_DELETED, workspace=workspace,
            payload={**_event_workspace(workspace), "removedMemberIds": removed}, actor=actor,
        )
        return removed

    # --- workspaces of a hotel, for platform services (the operator's Workspace resources) --------

    async def _hotel_workspace(self, hotel_id: str, workspace_id: str, *, include_deleted: bool = False) -> dict:
        found = await self.workspaces.get(workspace_id, include_deleted=include_deleted)
        if found is None or found["hotel_id"] != hotel_id:
            raise NotFound("workspace not found")
        return found

    async def put_hotel_workspace(
        self, caller: Principal, hotel_id: str, workspace_id: str, data: dict[str, Any]
    ) -> tuple[dict, bool]:
        """Create the workspace with the caller's id, or return it as it is: ``(workspace, created)``."""
        found = await self.workspaces.get(workspace_id, include_deleted=True)
        if found is not None:
            if found["hotel_id"] != hotel_id:
                raise NotFound("workspace not found")
            if found["deleted_at"] is not None:
                raise Gone("this workspace was deleted; its id cannot be used again", code="workspace_deleted")
            return present_workspace(found), False
        now = utcnow()
        row = {"id": workspace_id, "hotel_id": hotel_id, **data, "created_at": now, "updated_at": now}
        await self.workspaces.insert(row)
        await events.publish(
            self.session, events.WORKSPACE_CREATED, workspace=row, payload=_event_workspace(row),
            actor=events.actor_of(caller),
        )
        return present_workspace(row), True

    async def update_hotel_workspace(
        self, caller: Principal, hotel_id: str, workspace_id: str, changes: dict[str, Any]
    ) -> dict:
        found = await self._hotel_workspace(hotel_id, workspace_id)
        return await self._change_workspace(found, changes, events.actor_of(caller))

    async def delete_hotel_workspace(self, caller: Principal, hotel_id: str, workspace_id: str) -> None:
        """Idempotent: a workspace already deleted stays deleted (404 only for one that never was)."""
        found = await self._hotel_workspace(hotel_id, workspace_id, include_deleted=True)
        if found["deleted_at"] is None:
            await self._remove_workspace(found, events.actor_of(caller))

    # --- members ----------------------------------------------------------------------------

    async def _insert_member(
        self, *, workspace: dict, email: str, user_id: str | None, first_name: str, last_name: str, role: str,
        is_admin: bool, dashboard_access: bool, actor: dict, locale: str | None = None, timezone: str | None = None,
    ) -> dict:
        now = utcnow()
        row = {
            "id": str(uuid.uuid4()),
            "workspace_id": workspace["id"],
            "hotel_id": workspace["hotel_id"],
            "user_id": user_id,
            "email": email,
            "first_name": first_name,
            "last_name": last_name,
            "role": role,
            "dashboard_access": dashboard_access,
            "is_admin": is_admin,
            "locale": locale,
            "timezone": timezone,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self.session.begin_nested():
                await self.members.insert(row)
        except IntegrityError:
            raise Conflict(f"{email} is already a member of this workspace", code="already_member") from None
        row.update(workspace_name=workspace["name"], workspace_locale=workspace["locale"],
                   workspace_timezone=workspace["timezone"], deleted_at=None, version=1)
        await events.publish(
            self.session, events.MEMBER_CREATED, workspace=workspace, payload={"member": _event_member(row)}, actor=actor,
        )
        return row

    async def list_members(self, principal: Principal, *, cursor: str | None, limit: int) -> dict:
        rows = await self.members.page_in_workspace(principal.workspace_id, after=decode_time_cursor(cursor), limit=limit)
        return {"items": [present_member(r) for r in rows], "next_cursor": _next_cursor(rows, limit, "created_at")}

    async def get_member(self, principal: Principal, member_id: str) -> dict:
        found = await self.members.get_in_workspace(principal.workspace_id, member_id)
        if found is None:
            raise NotFound("member not found")
        return present_member(found)

    async def update_member(self, principal: Principal, member_id: str, changes: dict[str, Any]) -> dict:
        found = await self.members.get_in_workspace(principal.workspace_id, member_id)
        if found is None:
            raise NotFound("member not found")
        is_self = member_id == principal.member_id
        managed = {"role", "dashboard_access"}
        if (changes.keys() & managed or not is_self) and not principal.has(MANAGE_MEMBERS):
            raise Forbidden(f"permission '{MANAGE_MEMBERS}' required", code="permission_denied")
        new_role = changes.get("role")
        if new_role and new_role != found["role"]:
            caller_rank = ROLE_RANK["admin"] if principal.has(MANAGE_ECOSYSTEM) else ROLE_RANK["manager"]
            if max(ROLE_RANK[new_role], ROLE_RANK[found["role"]]) > caller_rank:
                raise Forbidden("only an administrator can grant or change the admin role", code="permission_denied")
            if found["role"] == "admin" and await self.members.count_admins(found["workspace_id"]) <= 1:
                raise Conflict("a workspace keeps at least one administrator", code="last_admin")
        if not changes:
            return present_member(found)
        changes["updated_at"] = utcnow()
        await self.members.update(member_id, changes)
        updated = {**found, **changes}
        workspace = await self.workspaces.get(found["workspace_id"])
        await events.publish(
            self.session, events.MEMBER_UPDATED, workspace=workspace,
            payload={"member": _event_member(updated), "changes": sorted(k for k in changes if k != "updated_at")},
            actor=events.actor_of(principal),
        )
        return present_member(updated)

    async def remove_member(self, principal: Principal, member_id: str) -> None:
        found = await self.members.get_in_workspace(principal.workspace_id, member_id)
        if found is None:
            raise NotFound("member not found")
        if not principal.has(MANAGE_MEMBERS):
            raise Forbidden(f"permission '{MANAGE_MEMBERS}' required", code="permission_denied")
        if found["role"] == "admin":
            if not principal.has(MANAGE_ECOSYSTEM):
                raise Forbidden("only an administrator can remove an administrator", code="permission_denied")
            if await self.members.count_admins(found["workspace_id"]) <= 1:
                raise Conflict("a workspace keeps at least one administrator", code="last_admin")
        now = utcnow()
        await self.members.update(member_id, {"deleted_at": now, "updated_at": now})
        workspace = await self.workspaces.get(found["workspace_id"])
        await events.publish(
            self.session, events.MEMBER_DELETED, workspace=workspace, payload={"member": _event_member(found)},
            actor=events.actor_of(principal),
        )

    # --- invitations ------------------------------------------------------------------------

    async def _issue_invitation(
        self, *, workspace: dict, email: str, role: str, first_name: str, last_name: str, inviter: Principal | None,
        is_admin: bool = False, dashboard_access: bool = False, member_id: str | None = None,
        send_email: bool = True,
    ) -> tuple[dict, str]:
        now = utcnow()
        await self.onboardings.revoke_pending(workspace["id"], email, now)
        token = secrets.token_urlsafe(32)
        row = {
            "id": str(uuid.uuid4()),
            "workspace_id": workspace["id"],
            "hotel_id": workspace["hotel_id"],
            "email": email,
            "first_name": first_name,
            "last_name": last_name,
            "role": role,
            "is_admin": is_admin,
            "dashboard_access": dashboard_access,
            "invited_by_member_id": inviter.member_id if inviter and not inviter.is_service else None,
            "invited_by_name": inviter.name if inviter and not inviter.is_service else None,
            "token_hash": hash_token(token),
            "expires_at": now + timedelta(seconds=self.settings.invitation_ttl_seconds),
            "member_id": member_id,
            "created_at": now,
        }
        await self.onboardings.insert(row)
        link = f"{self.settings.signup_link_base}?{urlencode({'token': token})}"
        inviter_actor = events.actor_of(inviter)
        await events.publish(
            self.session,
            events.MEMBER_ONBOARDING,
            workspace=workspace,
            payload={
                "onboardingId": row["id"],
                "email": email,
                "firstName": first_name,
                "lastName": last_name,
                "role": role,
                "inviter": {"id": inviter_actor["id"], "name": inviter_actor["name"]},
                "signupLink": link,
                "expiresAt": row["expires_at"].isoformat(),
                "locale": workspace["locale"],
            },
            actor=inviter_actor,
            receiver_ids=[row["invited_by_member_id"]] if row["invited_by_member_id"] else [],
            channels=("email", "socket") if send_email else ("socket",),
            sensitive=True,  # the sign-up link: not kept in the outbox once published
        )
        return row, token

    async def invite(self, principal: Principal, data: dict[str, Any]) -> dict:
        email = normalise_email(data["email"])
        if data["role"] == "admin" and not principal.has(MANAGE_ECOSYSTEM):
            raise Forbidden("only an administrator can invite an administrator", code="permission_denied")
        workspace = await self.workspaces.get(principal.workspace_id)
        if workspace is None:
            raise NotFound("workspace not found")
        if await self.members.get_by_email_in_workspace(workspace["id"], email):
            raise Conflict(f"{email} is already a member of this workspace", code="already_member")
        user_id = await self.members.known_user_id(email)
        if user_id is not None:
            # An account exists: the membership is made now, and the email says so (no sign-up to do).
            added = await self._add_existing_user(
                workspace=workspace, email=email, user_id=user_id, role=data["role"], first_name=data["first_name"],
                last_name=data["last_name"], is_admin=False, dashboard_access=False, adder=principal,
                hotel_name=None,
            )
            return {"id": added["id"], "email": email, "role": added["role"], "workspace_id": workspace["id"],
                    "status": "added", "member_id": added["id"], "expires_at": None,
                    "created_at": as_utc(added["created_at"])}
        row, _token = await self._issue_invitation(
            workspace=workspace, email=email, role=data["role"], first_name=data["first_name"],
            last_name=data["last_name"], inviter=principal,
        )
        return _present_invitation(row)

    async def _add_existing_user(
        self, *, workspace: dict, email: str, user_id: str, role: str, first_name: str, last_name: str,
        is_admin: bool, dashboard_access: bool, adder: Principal, hotel_name: str | None, send_email: bool = True,
        locale: str | None = None, timezone: str | None = None,
    ) -> dict:
        """A member bound at once to the account ``user_id`` already has, and ``member.added`` for its email."""
        actor = events.actor_of(adder)
        row = await self._insert_member(
            workspace=workspace, email=email, user_id=user_id, first_name=first_name, last_name=last_name, role=role,
            is_admin=is_admin, dashboard_access=dashboard_access, actor=actor, locale=locale, timezone=timezone,
        )
        await events.publish(
            self.session, events.MEMBER_ADDED, workspace=workspace,
            payload={"member": _event_member(row), "hotelName": hotel_name or workspace["name"],
                     "signinLink": f"{urljoin(self.settings.signup_link_base, 'signin')}?{urlencode({'email': email})}",
                     "addedBy": {"id": actor["id"], "name": actor["name"]}, "locale": locale or workspace["locale"]},
            actor=actor, receiver_ids=[row["id"]], channels=("email", "socket") if send_email else ("socket",),
        )
        return row

    async def _pending_invitation(self, principal: Principal, invitation_id: str) -> dict:
        """A pending invitation of the caller's workspace (``manage_members``, and ``manage_ecosystem`` for an
        administrator's); anything else is absent, so another workspace's ids reveal nothing."""
        if not principal.has(MANAGE_MEMBERS):
            raise Forbidden(f"permission '{MANAGE_MEMBERS}' required", code="permission_denied")
        found = await self.onboardings.get_in_workspace(principal.workspace_id, invitation_id, for_update=True)
        if found is None or found["revoked_at"] is not None:
            raise NotFound("invitation not found")
        if found["accepted_at"] is not None:
            raise Conflict("this invitation was already used: the person is a member", code="invitation_used")
        if found["role"] == "admin" and not principal.has(MANAGE_ECOSYSTEM):
            raise Forbidden("only an administrator can manage an administrator's invitation", code="permission_denied")
        return found

    async def list_invitations(self, principal: Principal, *, cursor: str | None, limit: int) -> dict:
        """Invitations of the caller's workspace not yet used nor revoked, oldest first, with their expiry."""
        rows = await self.onboardings.page_pending(principal.workspace_id, after=decode_time_cursor(cursor), limit=limit)
        now = utcnow()
        items = [{**_present_invitation(r), "first_name": r["first_name"], "last_name": r["last_name"],
                  "invited_by_member_id": r["invited_by_member_id"], "invited_by_name": r["invited_by_name"],
                  "expired": as_utc(r["expires_at"]) <= now} for r in rows]
        return {"items": items, "next_cursor": _next_cursor(rows, limit, "created_at")}

    async def resend_invitation(self, principal: Principal, invitation_id: str) -> dict:
        """A new token and expiry, emailed again; the previous link stops working."""
        found = await self._pending_invitation(principal, invitation_id)
        workspace = await self.workspaces.get(found["workspace_id"])
        if workspace is None:
            raise NotFound("invitation not found")
        row, _token = await self._issue_invitation(
            workspace=workspace, email=found["email"], role=found["role"], first_name=found["first_name"],
            last_name=found["last_name"], inviter=principal, is_admin=found["is_admin"],
            dashboard_access=found["dashboard_access"], member_id=found["member_id"],
        )
        return _present_invitation(row)

    async def revoke_invitation(self, principal: Principal, invitation_id: str) -> None:
        found = await self._pending_invitation(principal, invitation_id)
        await self.onboardings.revoke(found["id"], utcnow())

    async def _valid_invitation(self, token: str, *, for_update: bool = False) -> dict:
        found = await self.onboardings.by_token_hash(hash_token(token), for_update=for_update)
        if found is None:
            raise NotFound("invitation not found", code="invalid_invitation")
        if found["revoked_at"] is not None:
            raise Gone("this invitation was revoked or replaced by a newer one", code="invitation_revoked")
        if as_utc(found["expires_at"]) <= utcnow() and found["accepted_at"] is None:
            raise Gone("this invitation has expired", code="invitation_expired")
        return found

    async def invitation_details(self, token: str) -> dict:
        found = await self._valid_invitation(token)
        if found["accepted_at"] is not None:
            raise Gone("this invitation was already used", code="invitation_used")
        return {**found, "expires_at": as_utc(found["expires_at"])}

    async def accept_invitation(self, data: dict[str, Any]) -> dict:
        """Single use: the first acceptance creates (or binds) the member; a retry by the same user is a no-op."""
        found = await self._valid_invitation(data["token"], for_update=True)
        workspace = await self.workspaces.get(found["workspace_id"])
        if workspace is None:
            raise Gone("the workspace of this invitation no longer exists", code="invitation_revoked")
        if found["accepted_at"] is not None:
            if found["accepted_user_id"] != data["user_id"]:
                raise Gone("this invitation was already used", code="invitation_used")
            member_row = await self.members.get_in_workspace(found["workspace_id"], found["member_id"])
        else:
            first_name = data.get("first_name") or found["first_name"]
            last_name = data.get("last_name") or found["last_name"]
            actor = {"id": data["user_id"], "name": f"{first_name} {last_name}".strip(), "type": "user"}
            if found["member_id"]:
                member_row = await self.members.get_in_workspace(found["workspace_id"], found["member_id"])
                if member_row is None:
                    raise Gone("the member of this invitation was removed", code="invitation_revoked")
                changes = {"user_id": data["user_id"], "first_name": first_name, "last_name": last_name,
                           "updated_at": utcnow()}
                await self.members.update(member_row["id"], changes)
                member_row.update(changes)
                await events.publish(self.session, events.MEMBER_UPDATED, workspace=workspace,
                                     payload={"member": _event_member(member_row), "changes": ["user_id"]}, actor=actor)
            else:
                member_row = await self._insert_member(
                    workspace=workspace, email=found["email"], user_id=data["user_id"], first_name=first_name,
                    last_name=last_name, role=found["role"], is_admin=found["is_admin"],
                    dashboard_access=found["dashboard_access"], actor=actor,
                )
            await self.onboardings.mark_accepted(found["id"], user_id=data["user_id"], member_id=member_row["id"],
                                                 when=utcnow())
        return {
            "member": present_member(member_row),
            "invited_by_member_id": found["invited_by_member_id"],
            "invited_by_name": found["invited_by_name"],
        }

    # --- service-to-service -----------------------------------------------------------------

    async def add_hotel_member(self, caller: Principal, data: dict[str, Any]) -> dict:
        """Idempotent by (hotel, email): a retried call returns the same member."""
        email = normalise_email(data["email"])
        workspace = await self.workspaces.first_of_hotel(data["hotel_id"])
        if workspace is None:
            now = utcnow()
            workspace = {
                "id": str(uuid.uuid4()),
                "hotel_id": data["hotel_id"],
                "name": data.get("workspace_name") or data.get("hotel_name") or "Hotel",
                "description": None,
                "locale": data["locale"],
                "timezone": data["timezone"],
                "created_at": now,
                "updated_at": now,
                "deleted_at": None,
            }
            await self.workspaces.insert(workspace)
            await events.publish(self.session, events.WORKSPACE_CREATED, workspace=workspace,
                                 payload=_event_workspace(workspace), actor=events.actor_of(caller))
        role = "admin" if data["is_admin"] else "staff"
        existing = await self.members.get_by_email_in_workspace(workspace["id"], email)
        user_id = await self.members.known_user_id(email) if existing is None else None
        if user_id is not None:
            # An account exists (a member of another hotel, say): a member now, told so by email; no sign-up.
            existing = await self._add_existing_user(
                workspace=workspace, email=email, user_id=user_id, role=role, first_name=data["first_name"],
                last_name=data["last_name"], is_admin=data["is_admin"], dashboard_access=data["dashboard_access"],
                adder=caller, hotel_name=data.get("hotel_name"), send_email=data["send_invitation"],
                locale=data["locale"], timezone=data["timezone"],
            )
        elif existing is None:
            existing = await self._insert_member(
                workspace=workspace, email=email, user_id=None, first_name=data["first_name"],
                last_name=data["last_name"], role=role, is_admin=data["is_admin"],
                dashboard_access=data["dashboard_access"], actor=events.actor_of(caller),
                locale=data["locale"], timezone=data["timezone"],
            )
        token = expires_at = None
        if existing["user_id"] is None:
            invitation, token = await self._issue_invitation(
                workspace=workspace, email=email, role=role, first_name=data["first_name"],
                last_name=data["last_name"], inviter=caller, is_admin=data["is_admin"],
                dashboard_access=data["dashboard_access"], member_id=existing["id"],
                send_email=data["send_invitation"],
            )
            expires_at = invitation["expires_at"]
        return {
            "member": present_member(existing),
            "workspace": present_workspace(workspace),
            "invitation_token": token,
            "invitation_expires_at": expires_at,
        }

    async def members_of_hotel(self, principal: Principal, hotel_id: str, *, cursor: str | None, limit: int) -> dict:
        if principal.is_service:
            if not principal.has_scope("members:read-hotel-members"):
                raise Forbidden("service scope 'members:read-hotel-members' required", code="insufficient_scope")
        elif not (principal.has(MANAGE_ECOSYSTEM) and principal.hotel_id == hotel_id):
            raise NotFound("hotel not found")
        rows = await self.members.page_in_hotel(hotel_id, after=decode_time_cursor(cursor), limit=limit)
        return {"items": [present_member(r) for r in rows], "next_cursor": _next_cursor(rows, limit, "created_at")}

    async def remove_hotel_members(self, caller: Principal, hotel_id: str) -> dict:
        """Every workspace of a hotel and its members (hotel deletion, saga compensation); idempotent."""
        removed_members, removed_workspaces = [], []
        for workspace in await self.workspaces.list_in_hotel(hotel_id):
            removed_members += await self._remove_workspace(workspace, events.actor_of(caller))
            removed_workspaces.append(workspace["id"])
        return {"removed_member_ids": removed_members, "removed_workspace_ids": removed_workspaces}

    async def profiles_for_email(self, email: str) -> list[dict]:
        return [present_member(r) for r in await self.members.active_profiles_for_email(normalise_email(email))]

    async def changed_members(self, data: dict[str, Any]) -> dict:
        after = decode_cursor(data.get("cursor"))
        if after is not None and not (
            len(after) == 2 and isinstance(after[0], int) and isinstance(after[1], str)
        ):
            raise invalid_cursor()
        rows = await self.members.changed_since(
            after=tuple(after) if after else None, limit=data["limit"],
            hotel_id=data.get("hotel_id"), workspace_id=data.get("workspace_id"),
        )
        # Always a cursor to resume from, also after the last page: the caller polls with it.
        cursor = encode_cursor(rows[-1]["change_seq"], rows[-1]["id"]) if rows else None
        return {"items": [present_member(r) for r in rows], "next_cursor": cursor or data.get("cursor")}


    async def lookup(self, member_ids: list[str]) -> list[dict]:
        return [present_member(r) for r in await self.members.with_ids(sorted(set(member_ids)))]

    async def access_changes(self, after: int | None, limit: int) -> dict:
        """Members whose tokens no longer hold (removed, or permissions changed) within one access-token lifetime."""
        since = utcnow() - timedelta(seconds=self.settings.access_token_ttl_seconds + 60)
        rows, position = await self.members.access_changes(after=after or 0, since=since, limit=limit)
        items = [
            {"member_id": r["id"], "permissions": permissions_of(r["role"]), "deleted": r["deleted_at"] is not None,
             "changed_at": as_utc(r["updated_at"])}
            for r in rows
        ]
        return {"items": items, "position": position}


def _present_invitation(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "status": "pending", "member_id": row.get("member_id"), "expires_at": as_utc(row["expires_at"]),
            "created_at": as_utc(row["created_at"])}


def _event_workspace(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "ecosystemId": row["hotel_id"], "locale": row["locale"],
            "timezone": row["timezone"]}
