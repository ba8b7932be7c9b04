"""HTTP routes of the notification service (api-notification). Every route acts for the calling
member in the workspace of its token; another member's or workspace's data answers 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.errors import error_responses
from roomee.kit.auth import MANAGE_WORKSPACE, CurrentMember, Principal, require_permission
from roomee.kit.deps import context_of, session_for
from roomee.kit.hot import hot_read
from roomee.kit.platform import ServiceContext
from roomee.kit.schemas import Page
from roomee.notification import schemas
from roomee.notification.service import NotificationService

router = APIRouter(prefix="/api/v1", tags=["notification"])

Session = Annotated[AsyncSession, Depends(session_for("notification"), scope="function")]
Context = Annotated[ServiceContext, Depends(context_of("notification"))]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
Cursor = Annotated[str | None, Query(description="The `nextCursor` of the previous page.")]
NotificationId = Annotated[str, Path(min_length=1, max_length=64)]
SubscriptionId = Annotated[str, Path(min_length=1, max_length=128)]


async def _service(session: Session, ctx: Context) -> NotificationService:
    return NotificationService(session, ctx)


Notifications = Annotated[NotificationService, Depends(_service)]


@router.get("/preferences", responses=error_responses(403), response_model=schemas.PreferencesOut)
@hot_read
async def get_preferences(service: Notifications, principal: CurrentMember):
    """The caller's notification preferences in the current workspace (every category listed;
    defaults allow everything, no quiet hours)."""
    return await service.get_preferences(principal)


@router.put("/preferences", responses=error_responses(403), response_model=schemas.PreferencesOut)
async def put_preferences(body: schemas.PreferencesIn, service: Notifications, principal: CurrentMember):
    """Replace the caller's preferences: `isGlobalSilent`, `categoryPrefs[category].app|push|email`
    (a category left out allows everything), and `quietHours` (`start`/`end` as HH:MM, may span
    midnight; `timezone`, default the member's; `mode` `skip` or `defer`), or null for none."""
    return await service.put_preferences(principal, body.model_dump())


@router.get("/notifications", responses=error_responses(403), response_model=Page[schemas.NotificationOut])
@hot_read
async def list_notifications(
    service: Notifications,
    principal: CurrentMember,
    limit: Limit = 20,
    cursor: Cursor = None,
    unread: Annotated[bool, Query(description="Only unread notifications.")] = False,
):
    """The caller's notifications, newest first, paginated by cursor."""
    return await service.list_notifications(principal, cursor=cursor, limit=limit, unread=unread)


@router.post("/notifications/read-all", responses=error_responses(403), response_model=schemas.ReadAllOut)
async def read_all(service: Notifications, principal: CurrentMember):
    """Mark every notification of the caller in this workspace read."""
    return await service.mark_all_read(principal)


@router.get("/notifications/counters", responses=error_responses(403), response_model=schemas.Counters)
@hot_read
async def counters(service: Notifications, principal: CurrentMember):
    """The caller's unread count in this workspace."""
    return await service.counters(principal)


@router.post("/notifications/counters/recount", responses=error_responses(403), response_model=schemas.RecountOut)
async def recount(
    service: Notifications, principal: Annotated[Principal, Depends(require_permission(MANAGE_WORKSPACE))]
):
    """Recompute this workspace's unread counters from the notifications (requires `manage_workspace`)."""
    return await service.recount(principal)


@router.get("/notifications/{notification_id}", responses=error_responses(403, 404), response_model=schemas.NotificationOut)
async def get_notification(notification_id: NotificationId, service: Notifications, principal: CurrentMember):
    """One of the caller's notifications."""
    return await service.get_notification(principal, notification_id)


@router.post("/notifications/{notification_id}/read", responses=error_responses(403, 404), response_model=schemas.NotificationOut)
async def mark_read(notification_id: NotificationId, service: Notifications, principal: CurrentMember):
    """Mark one of the caller's notifications read (idempotent)."""
    return await service.mark_read(principal, notification_id)


@router.get("/subscriptions", responses=error_responses(403), response_model=list[schemas.SubscriptionOut])
@hot_read
async def list_subscriptions(service: Notifications, principal: CurrentMember):
    """The caller's push devices registered for this workspace."""
    return await service.list_subscriptions(principal)


@router.post(
    "/subscriptions", status_code=201, response_model=schemas.SubscriptionOut,
    responses={**error_responses(403), 200: {"model": schemas.SubscriptionOut,
                                              "description": "The caller's registration of this device, updated."}},
)
async def register_subscription(
    body: schemas.SubscriptionIn, service: Notifications, principal: CurrentMember, response: Response
):
    """Register a push device (OneSignal subscription id) for the caller in this workspace.

    Idempotent per caller, workspace and `subscriptionId`: 201 when new, 200 when it updated the
    caller's registration. Registering in this workspace ends the caller's own registrations of the
    device in other workspaces (it moved). A device id another account registered answers as an
    unknown one does and leaves that account's registration as it is. `workspaceId` must be the
    caller's (403).
    """
    row, created = await service.register_subscription(principal, body.model_dump())
    if not created:
        response.status_code = 200
    return row


@router.delete("/subscriptions/{subscription_id}", responses=error_responses(403, 404), status_code=204)
async def unregister_subscription(subscription_id: SubscriptionId, service: Notifications, principal: CurrentMember):
    """Unregister one of the caller's devices."""
    await service.unregister_subscription(principal, subscription_id)
    return Response(status_code=204)
