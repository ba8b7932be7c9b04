"""Request and response bodies of the members service (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import EmailStr, Field

from roomee.kit.schemas import CamelModel, TimeZone

Role = Literal["admin", "manager", "editor", "staff"]


class WorkspaceCreate(CamelModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    locale: str = Field(default="fr", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    timezone: TimeZone = "Europe/Paris"


# Partial updates: a field left out keeps its value. Fields typed without `| None` refuse an
# explicit null (422), since the stored value is required; `None` is only the "left out" default.
class WorkspaceUpdate(CamelModel):
    name: str = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    locale: str = Field(default=None, pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    timezone: TimeZone = None


class WorkspaceOut(CamelModel):
    id: str
    hotel_id: str = Field(alias="ecosystemId")  # the seed's wire name for the hotel
    name: str
    description: str | None
    locale: str
    timezone: str
    created_at: datetime
    updated_at: datetime


class MemberOut(CamelModel):
    id: str
    workspace_id: str
    hotel_id: str = Field(alias="ecosystemId")
    user_id: str | None
    email: str
    first_name: str
    last_name: str
    role: Role
    permissions: list[str]
    dashboard_access: bool
    is_admin: bool
    locale: str | None
    timezone: str | None
    created_at: datetime
    updated_at: datetime


class MemberProfile(MemberOut):
    """A member with its workspace, as auth needs it at sign-in."""

    workspace_name: str
    workspace_locale: str
    workspace_timezone: str


class SyncedMember(MemberOut):
    workspace_name: str
    workspace_locale: str
    workspace_timezone: str
    deleted_at: datetime | None


class MemberUpdate(CamelModel):
    """Null `locale` / `timezone` clear the member's own setting (the workspace's applies)."""

    role: Role = None
    first_name: str = Field(default=None, max_length=100)
    last_name: str = Field(default=None, max_length=100)
    locale: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    timezone: TimeZone | None = None
    dashboard_access: bool = None


class InviteRequest(CamelModel):
    email: EmailStr
    role: Role = "staff"
    first_name: str = Field(default="", max_length=100)
    last_name: str = Field(default="", max_length=100)


class InvitationOut(CamelModel):
    id: str = Field(description="The invitation's id; with status `added`, the new member's id.")
    email: str
    role: Role
    workspace_id: str
    status: Literal["pending", "added"] = Field(default="pending", description=(
        "`pending`: a sign-up link was emailed; `added`: the email has an account, which is a member now "
        "(emailed \"you were added\" with a sign-in link, no sign-up)."))
    member_id: str | None = Field(default=None, description="The member, when one exists already.")
    expires_at: datetime | None = Field(description="When the link stops working; null with status `added`.")
    created_at: datetime


class PendingInvitation(InvitationOut):
    first_name: str
    last_name: str
    invited_by_member_id: str | None
    invited_by_name: str | None
    expired: bool = Field(description="The link no longer works; resend it for a new one.")


class HotelMemberRequest(CamelModel):
    """The seed's body for ``POST /members/add/hotel/member`` (called by the hotel service)."""

    hotel_id: str = Field(min_length=1, max_length=64)
    hotel_name: str | None = Field(default=None, max_length=200)
    email: EmailStr
    first_name: str = Field(default="", max_length=100)
    last_name: str = Field(default="", max_length=100)
    dashboard_access: bool = False
    is_admin: bool = False
    workspace_name: str | None = Field(default=None, max_length=200)
    locale: str = Field(default="fr", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    timezone: TimeZone = "Europe/Paris"
    # False when the caller signs the member up itself with the returned token (the platform's
    # bootstrap): no invitation email, whose link would already be used.
    send_invitation: bool = True


class HotelMemberOut(CamelModel):
    member: MemberOut
    workspace: WorkspaceOut
    invitation_token: str | None = Field(
        default=None, description="Sign-up token for the new member; null when the member already has an account."
    )
    invitation_expires_at: datetime | None = None


class RemovedHotelMembers(CamelModel):
    removed_member_ids: list[str]
    removed_workspace_ids: list[str]


class InvitationDetails(CamelModel):
    id: str
    email: str
    first_name: str
    last_name: str
    role: Role
    workspace_id: str
    workspace_name: str
    hotel_id: str = Field(alias="ecosystemId")
    invited_by_member_id: str | None
    expires_at: datetime


class AcceptInvitation(CamelModel):
    token: str = Field(min_length=10, max_length=200)
    user_id: str = Field(min_length=1, max_length=36)
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)


class AcceptedInvitation(CamelModel):
    member: MemberProfile
    invited_by_member_id: str | None
    invited_by_name: str | None


class SyncRequest(CamelModel):
    cursor: str | None = None
    limit: int = Field(default=500, ge=1, le=5000)
    hotel_id: str | None = Field(default=None, alias="ecosystemId")
    workspace_id: str | None = None


class AccessChange(CamelModel):
    member_id: str
    permissions: list[str] = Field(description="What tokens of this member must hold now (meaningless when deleted).")
    deleted: bool
    changed_at: datetime


class AccessChanges(CamelModel):
    items: list[AccessChange]
    position: int = Field(description="Pass back as `after` to get only later changes.")


class LookupRequest(CamelModel):
    ids: list[str] = Field(min_length=1, max_length=1000, description="Member ids (unknown ones are left out).")
