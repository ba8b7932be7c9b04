"""HTTP routes of the members service (api-staff-member). Seed paths are kept exactly."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.errors import error_responses
from roomee.kit.auth import (
    MANAGE_ECOSYSTEM,
    MANAGE_MEMBERS,
    CurrentMember,
    CurrentPrincipal,
    Principal,
    require_permission,
    require_service_scope,
)
from roomee.kit.deps import context_of, session_for
from roomee.kit.hot import hot_read
from roomee.kit.platform import ServiceContext
from roomee.kit.schemas import Page
from roomee.members import schemas
from roomee.members.service import MembersService

router = APIRouter(tags=["members"])

Session = Annotated[AsyncSession, Depends(session_for("members"), scope="function")]
Context = Annotated[ServiceContext, Depends(context_of("members"))]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size.")]
Cursor = Annotated[str | None, Query(description="The `nextCursor` of the previous page.")]


async def _service(session: Session, ctx: Context) -> MembersService:
    return MembersService(session, ctx.settings)


Members = Annotated[MembersService, Depends(_service)]


@router.post("/members/", responses=error_responses(403, 409, 429), status_code=201, response_model=schemas.InvitationOut)
async def invite_member(
    body: schemas.InviteRequest,
    service: Members,
    principal: Annotated[Principal, Depends(require_permission(MANAGE_MEMBERS))],
):
    """Invite someone to the caller's workspace (requires `manage_members`).

    Creates an onboarding record with a single-use, expiring token and emits
    `roomee.notification.member.onboarding`, whose payload carries the sign-up link for the email.
    Inviting again replaces the previous pending invitation. When the email already has an account (a member
    elsewhere), the membership is made at once (`status: "added"`) and `member.added` emails a sign-in link.
    """
    return await service.invite(principal, body.model_dump())


@router.get("/members/invitations", responses=error_responses(403, 422), response_model=Page[schemas.PendingInvitation])
async def list_invitations(
    service: Members,
    principal: Annotated[Principal, Depends(require_permission(MANAGE_MEMBERS))],
    limit: Limit = 50,
    cursor: Cursor = None,
):
    """Invitations of the caller's workspace neither used nor revoked, oldest first, each with its expiry
    (`expired` once the link no longer works), paginated by cursor (requires `manage_members`)."""
    return await service.list_invitations(principal, cursor=cursor, limit=limit)


@router.post("/members/invitations/{invitation_id}/resend", responses=error_responses(403, 404, 409, 422),
             status_code=201, response_model=schemas.InvitationOut)
async def resend_invitation(
    invitation_id: uuid.UUID,
    service: Members,
    principal: Annotated[Principal, Depends(require_permission(MANAGE_MEMBERS))],
):
    """Send a pending (or expired) invitation again with a new link and expiry: the previous link stops working
    (410 `invitation_revoked`). Answers the new invitation (a new id). 404 for an invitation of another workspace,
    revoked or unknown; 409 `invitation_used` once accepted; an administrator's needs `manage_ecosystem`."""
    return await service.resend_invitation(principal, str(invitation_id))


@router.delete("/members/invitations/{invitation_id}", responses=error_responses(403, 404, 409, 422), status_code=204)
async def revoke_invitation(
    invitation_id: uuid.UUID,
    service: Members,
    principal: Annotated[Principal, Depends(require_permission(MANAGE_MEMBERS))],
) -> Response:
    """Revoke a pending invitation: its link answers 410 `invitation_revoked` from now on. 404 for an invitation
    of another workspace, already revoked or unknown; 409 `invitation_used` once accepted."""
    await service.revoke_invitation(principal, str(invitation_id))
    return Response(status_code=204)


@router.get("/members/", responses=error_responses(403), response_model=Page[schemas.MemberOut])
@hot_read
async def list_members(service: Members, principal: CurrentMember, limit: Limit = 50, cursor: Cursor = None):
    """Members of the caller's workspace, oldest first, paginated by cursor."""
    return await service.list_members(principal, cursor=cursor, limit=limit)


@router.post("/members/add/hotel/member", responses=error_responses(403, 409), status_code=201, response_model=schemas.HotelMemberOut)
async def add_hotel_member(body: schemas.HotelMemberRequest, service: Members, caller: Annotated[Principal, Depends(require_service_scope("members:add-hotel-member"))]
):
    """Service-to-service: create a hotel's member (its first workspace too, if needed).

    Idempotent by `hotelId` + `email`. When the member has no account yet, the answer carries a
    sign-up `invitationToken` and `member.onboarding` is emitted.
    """
    return await service.add_hotel_member(caller, body.model_dump())


@router.get("/members/get/by/hotel_id/{hotel_id}", responses=error_responses(403, 404), response_model=Page[schemas.MemberOut])
async def members_of_hotel(
    hotel_id: str, service: Members, principal: CurrentPrincipal, limit: Limit = 200, cursor: Cursor = None
):
    """Members of every workspace of a hotel (service token, or the hotel's administrator)."""
    return await service.members_of_hotel(principal, hotel_id, cursor=cursor, limit=limit)


@router.delete("/members/by/hotel_id/{hotel_id}", responses=error_responses(403), response_model=schemas.RemovedHotelMembers)
async def remove_hotel_members(
    hotel_id: str, service: Members,
    caller: Annotated[Principal, Depends(require_service_scope("members:remove-hotel-members"))],
):
    """Service-to-service (hotel deletion, saga compensation): remove every workspace and member of a
    hotel, emitting `workspace.deleted` for each. Idempotent: a hotel with none left removes nothing."""
    return await service.remove_hotel_members(caller, hotel_id)


@router.get("/members/get/with/{email}", responses=error_responses(403), response_model=list[schemas.MemberProfile])
async def profiles_for_email(
    email: str, service: Members, _caller: Annotated[Principal, Depends(require_service_scope("members:profiles"))]
):
    """Service-to-service (auth, at every sign-in): the active member profiles of an email."""
    return await service.profiles_for_email(email)


@router.post("/members/sync", responses=error_responses(403), response_model=Page[schemas.SyncedMember])
async def sync_members(
    body: schemas.SyncRequest, service: Members, _caller: Annotated[Principal, Depends(require_service_scope("members:sync"))]
):
    """Service-to-service: members changed after `cursor` (deleted ones included, with `deletedAt`).

    Pass back `nextCursor` to continue; an empty page means the directory is up to date.
    """
    return await service.changed_members(body.model_dump())


@router.post("/members/lookup", responses=error_responses(403), response_model=list[schemas.SyncedMember])
async def lookup_members(
    body: schemas.LookupRequest,
    service: Members,
    _caller: Annotated[Principal, Depends(require_service_scope("members:sync"))],
):
    """Service-to-service: the members with these ids (deleted ones included, with `deletedAt`), for a
    directory that meets an id it has not synced yet. Ids of no member are left out."""
    return await service.lookup(body.ids)


@router.get("/members/access-changes", responses=error_responses(403), response_model=schemas.AccessChanges)
async def access_changes(
    service: Members,
    _caller: Annotated[Principal, Depends(require_service_scope("members:access-changes"))],
    after: Annotated[int | None, Query(ge=0, le=2**62, description="The `position` of the previous answer.")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
):
    """Service-to-service (every service, every few seconds): members removed or whose permissions changed
    within one access-token lifetime, in commit order. Each service refuses the tokens they no longer match
    (`roomee.kit.auth.AccessChanges`)."""
    return await service.access_changes(after, limit)


@router.get("/members/invitations/{token}", responses=error_responses(403, 404, 410), response_model=schemas.InvitationDetails)
async def invitation_details(
    token: str, service: Members, _caller: Annotated[Principal, Depends(require_service_scope("members:invitations"))]
):
    """Service-to-service (auth, at sign-up): what an unused, unexpired invitation is for."""
    return await service.invitation_details(token)


@router.post("/members/invitations/accept", responses=error_responses(403, 404, 409, 410), response_model=schemas.AcceptedInvitation)
async def accept_invitation(
    body: schemas.AcceptInvitation,
    service: Members,
    _caller: Annotated[Principal, Depends(require_service_scope("members:invitations"))],
):
    """Service-to-service (auth, at sign-up): use an invitation once, creating the member profile."""
    return await service.accept_invitation(body.model_dump())


@router.get("/members/{member_id}", responses=error_responses(403, 404), response_model=schemas.MemberOut)
@hot_read
async def get_member(member_id: str, service: Members, principal: CurrentMember):
    """A member of the caller's workspace."""
    return await service.get_member(principal, member_id)


@router.patch("/members/{member_id}", responses=error_responses(403, 404, 409), response_model=schemas.MemberOut)
async def update_member(member_id: str, body: schemas.MemberUpdate, service: Members, principal: CurrentMember):
    """Change a member's role (requires `manage_members`) or one's own profile fields."""
    return await service.update_member(principal, member_id, body.model_dump(exclude_unset=True))


@router.delete("/members/{member_id}", responses=error_responses(403, 404, 409), status_code=204)
async def remove_member(member_id: str, service: Members, principal: CurrentMember) -> Response:
    """Remove a member from the caller's workspace (requires `manage_members`)."""
    await service.remove_member(principal, member_id)
    return Response(status_code=204)


@router.post("/workspaces", responses=error_responses(403), status_code=201, response_model=schemas.WorkspaceOut)
async def create_workspace(
    body: schemas.WorkspaceCreate,
    service: Members,
    principal: Annotated[Principal, Depends(require_permission(MANAGE_ECOSYSTEM))],
):
    """Create a workspace in the caller's hotel (requires `manage_ecosystem`); the creator becomes its admin."""
    return await service.create_workspace(principal, body.model_dump())


@router.get("/workspaces", responses=error_responses(403), response_model=list[schemas.WorkspaceOut])
@hot_read
async def list_workspaces(service: Members, principal: CurrentMember):
    """Workspaces of the caller's hotel that the caller belongs to (all of them for a hotel admin)."""
    return await service.list_workspaces(principal)


@router.get("/workspaces/{workspace_id}", responses=error_responses(403, 404), response_model=schemas.WorkspaceOut)
@hot_read
async def get_workspace(workspace_id: str, service: Members, principal: CurrentMember):
    """One workspace the caller may see."""
    return await service.get_workspace(principal, workspace_id)


@router.patch("/workspaces/{workspace_id}", responses=error_responses(403, 404), response_model=schemas.WorkspaceOut)
async def update_workspace(
    workspace_id: str, body: schemas.WorkspaceUpdate, service: Members, principal: CurrentMember
):
    """Rename or configure a workspace (`manage_workspace` on it, or `manage_ecosystem`)."""
    return await service.update_workspace(principal, workspace_id, body.model_dump(exclude_unset=True))


@router.delete("/workspaces/{workspace_id}", responses=error_responses(403, 404, 409), status_code=204)
async def delete_workspace(workspace_id: str, service: Members, principal: CurrentMember) -> Response:
    """Delete a workspace and its memberships (requires `manage_ecosystem`)."""
    await service.delete_workspace(principal, workspace_id)
    return Response(status_code=204)


# Workspaces of a hotel for platform services (the operator's Workspace resources), scope `members:workspaces`.
WorkspacesCaller = Annotated[Principal, Depends(require_service_scope("members:workspaces"))]
_SERVICE_ERRORS = {
    401: {"description": "`unauthorized`: no or an invalid token."},
    403: {"description": "`forbidden`/`insufficient_scope`: not a service holding `members:workspaces`."},
    404: {"description": "`not_found`: no such workspace in this hotel."},
    422: {"description": "`validation_error`: a bad body or a workspace id that is not a UUID."},
}


@router.put(
    "/members/hotels/{hotel_id}/workspaces/{workspace_id}", response_model=schemas.WorkspaceOut,
    status_code=201, responses={
        200: {"description": "The workspace already existed with this id: returned unchanged.",
              "model": schemas.WorkspaceOut},
        **_SERVICE_ERRORS,
        410: {"description": "`workspace_deleted`: a workspace with this id was deleted."},
    },
)
async def put_hotel_workspace(
    hotel_id: str, workspace_id: uuid.UUID, body: schemas.WorkspaceCreate, service: Members,
    caller: WorkspacesCaller, response: Response,
):
    """Service-to-service: create a hotel's workspace under the caller's id (201), idempotently: the
    same id again answers the existing workspace (200). Emits `workspace.created` once."""
    workspace, created = await service.put_hotel_workspace(caller, hotel_id, str(workspace_id), body.model_dump())
    response.status_code = 201 if created else 200
    return workspace


@router.patch("/members/hotels/{hotel_id}/workspaces/{workspace_id}", response_model=schemas.WorkspaceOut,
              responses=_SERVICE_ERRORS)
async def update_hotel_workspace(
    hotel_id: str, workspace_id: uuid.UUID, body: schemas.WorkspaceUpdate, service: Members, caller: WorkspacesCaller,
):
    """Service-to-service: rename or configure a hotel's workspace."""
    return await service.update_hotel_workspace(caller, hotel_id, str(workspace_id), body.model_dump(exclude_unset=True))


@router.delete("/members/hotels/{hotel_id}/workspaces/{workspace_id}", status_code=204, responses=_SERVICE_ERRORS)
async def delete_hotel_workspace(
    hotel_id: str, workspace_id: uuid.UUID, service: Members, caller: WorkspacesCaller,
) -> Response:
    """Service-to-service: delete a hotel's workspace and its memberships (`workspace.deleted`).
    Idempotent: an already deleted workspace answers 204; one that never existed here 404."""
    await service.delete_hotel_workspace(caller, hotel_id, str(workspace_id))
    return Response(status_code=204)
