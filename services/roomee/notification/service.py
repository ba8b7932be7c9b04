"""Business rules of the notification service: start-up, background workers, and what the REST
API does for the calling member (always scoped to the caller's member and workspace)."""

from __future__ import annotations

import functools
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.auth import Principal
from roomee.kit.clock import as_utc, utcnow
from roomee.kit.db import Database
from roomee.kit.errors import Forbidden, NotFound
from roomee.kit.platform import ServiceContext
from roomee.kit.schemas import decode_time_cursor, encode_cursor
from roomee.notification import clock, directory, hooks
from roomee.notification.catalog import CATEGORIES, CHANNEL_PREFS, EMAIL_OPT_IN_CATEGORIES
from roomee.notification.channels import UNREAD_COUNTERS, build_channels
from roomee.notification.delivery import deferred_worker
from roomee.notification.dispatcher import SocketDispatcher
from roomee.notification.factory import NotificationFactory
from roomee.notification.repository import (
    CounterDrift,
    NotificationRepository,
    PreferenceRepository,
    SubscriptionRepository,
)
from roomee.notification.schemas import NotificationOut


async def setup(ctx: ServiceContext) -> None:
    """The clock, the template factory and the channels (backends chosen by settings)."""
    clock.install(ctx)
    ctx.state["factory"] = NotificationFactory()
    channels = build_channels(ctx)
    on_connect = getattr(channels.socket, "on_member_connect", None)
    if on_connect is not None:
        on_connect(functools.partial(_send_counter_on_connect, ctx))
    # Runs first at shutdown: socket emits already queued go out before the channels close.
    ctx.on_stop(hooks.drain)


async def _send_counter_on_connect(ctx: ServiceContext, sid: str, principal: Principal) -> None:
    """A socket that connects learns its unread count at once."""
    async with ctx.db.transaction() as session:
        unread = await NotificationRepository(session).counter(principal.member_id, principal.workspace_id)
    await ctx.state["channels"].socket.to_sid(sid, UNREAD_COUNTERS, {"workspaceId": principal.workspace_id, "unread": unread})


def workers(ctx: ServiceContext) -> list:
    return [functools.partial(directory.sync_worker, ctx), functools.partial(deferred_worker, ctx)]


async def recount_unread_in_bulk(db: Database, *, workspace_id: str | None = None, dry_run: bool = False) -> CounterDrift:
    """Recompute every unread counter (or one workspace's) from the receiver rows, set-based, or
    with ``dry_run`` only measure the drift; for operators, with no platform running.

    Connected sockets are not told: they get the right count at their next change or connect.
    """
    async with db.transaction() as session:
        notifications = NotificationRepository(session)
        if dry_run:
            return await notifications.counter_drift(workspace_id=workspace_id)
        return await notifications.recount_in_bulk(workspace_id=workspace_id, when=utcnow())


def _default_category_prefs() -> dict[str, dict[str, bool]]:
    """Every channel of every category, but email of articles and comments: a member asks for those."""
    return {category: {pref: pref != "email" or category not in EMAIL_OPT_IN_CATEGORIES for pref in CHANNEL_PREFS}
            for category in CATEGORIES}


def present_preferences(member_id: str, workspace_id: str, row: dict[str, Any] | None) -> dict[str, Any]:
    prefs = _default_category_prefs()
    quiet = None
    if row is not None:
        for category, values in (row["category_prefs"] or {}).items():
            if category in prefs:
                prefs[category].update({k: bool(v) for k, v in values.items() if k in CHANNEL_PREFS})
        if row["quiet_start"] and row["quiet_end"]:
            quiet = {
                "start": row["quiet_start"],
                "end": row["quiet_end"],
                "timezone": row["quiet_timezone"],
                "mode": row["quiet_mode"],
            }
    return {
        "member_id": member_id,
        "workspace_id": workspace_id,
        "is_global_silent": bool(row["is_global_silent"]) if row else False,
        "category_prefs": prefs,
        "quiet_hours": quiet,
        "updated_at": as_utc(row["updated_at"]) if row else None,
    }


def present_subscription(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": as_utc(row["created_at"]), "updated_at": as_utc(row["updated_at"])}


class NotificationService:
    def __init__(self, session: AsyncSession, ctx: ServiceContext) -> None:
        self.session = session
        self.ctx = ctx
        self.notifications = NotificationRepository(session)
        self.preferences = PreferenceRepository(session)
        self.subscriptions = SubscriptionRepository(session)

    # --- preferences ------------------------------------------------------------------------

    async def get_preferences(self, principal: Principal) -> dict:
        row = await self.preferences.get(principal.member_id, principal.workspace_id)
        return present_preferences(principal.member_id, principal.workspace_id, row)

    async def put_preferences(self, principal: Principal, data: dict[str, Any]) -> dict:
        quiet = data.get("quiet_hours")
        row = {
            "member_id": principal.member_id,
            "workspace_id": principal.workspace_id,
            "is_global_silent": data["is_global_silent"],
            "category_prefs": data["category_prefs"],
            "quiet_start": quiet["start"] if quiet else None,
            "quiet_end": quiet["end"] if quiet else None,
            "quiet_timezone": quiet["timezone"] if quiet else None,
            "quiet_mode": quiet["mode"] if quiet else "skip",
            "updated_at": clock.now(self.ctx),
        }
        await self.preferences.upsert(row)
        return present_preferences(principal.member_id, principal.workspace_id, row)

    # --- the inbox --------------------------------------------------------------------------

    async def list_notifications(self, principal: Principal, *, cursor: str | None, limit: int, unread: bool) -> dict:
        rows = await self.notifications.page_inbox(
            principal.member_id, principal.workspace_id, before=decode_time_cursor(cursor), limit=limit, unread_only=unread
        )
        items = [NotificationOut.of(row, row["locale"]) for row in rows]
        next_cursor = None
        if len(rows) == limit:
            last = rows[-1]
            next_cursor = encode_cursor(as_utc(last["created_at"]).isoformat(), last["id"])
        return {"items": items, "next_cursor": next_cursor}

    async def get_notification(self, principal: Principal, notification_id: str) -> NotificationOut:
        row = await self.notifications.in_inbox(notification_id, principal.member_id, principal.workspace_id)
        if row is None:
            raise NotFound("notification not found")
        return NotificationOut.of(row, row["locale"])

    async def mark_read(self, principal: Principal, notification_id: str) -> NotificationOut:
        now = clock.now(self.ctx)
        if await self.notifications.mark_read(notification_id, principal.member_id, principal.workspace_id, now):
            unread = await self.notifications.decrement_counter(principal.member_id, principal.workspace_id, 1, now)
            SocketDispatcher(self.ctx).counters_after_commit(
                self.session, principal.workspace_id, {principal.member_id: unread}
            )
        return await self.get_notification(principal, notification_id)

    async def mark_all_read(self, principal: Principal) -> dict:
        now = clock.now(self.ctx)
        marked = await self.notifications.mark_all_read(principal.member_id, principal.workspace_id, now)
        if marked:
            unread = await self.notifications.decrement_counter(principal.member_id, principal.workspace_id, marked, now)
            SocketDispatcher(self.ctx).counters_after_commit(
                self.session, principal.workspace_id, {principal.member_id: unread}
            )
        else:
            unread = await self.notifications.counter(principal.member_id, principal.workspace_id)
        return {"workspace_id": principal.workspace_id, "marked": marked, "unread": unread}

    async def counters(self, principal: Principal) -> dict:
        unread = await self.notifications.counter(principal.member_id, principal.workspace_id)
        return {"workspace_id": principal.workspace_id, "member_id": principal.member_id, "unread": unread}

    async def recount(self, principal: Principal) -> dict:
        changed = await self.notifications.recount(workspace_id=principal.workspace_id, when=clock.now(self.ctx))
        if changed:
            SocketDispatcher(self.ctx).counters_after_commit(
                self.session, principal.workspace_id, {member_id: new for member_id, _, _, new in changed}
            )
        return {"workspace_id": principal.workspace_id, "corrected": len(changed)}

    # --- device subscriptions ---------------------------------------------------------------

    async def register_subscription(self, principal: Principal, data: dict[str, Any]) -> tuple[dict, bool]:
        """Register (or update) the caller's device in this workspace: ``(row, created)``.

        Registrations are the caller's own, one per (workspace, member, device id): a device id
        another account registered answers as an unknown one does (no oracle) and takes nothing
        from that account. The same account's registrations of the device in its other workspaces
        end: the device moved to the workspace the account now acts in.
        """
        if data["workspace_id"] != principal.workspace_id:
            raise Forbidden("a device can only be registered for your current workspace", code="workspace_mismatch")
        now = clock.now(self.ctx)
        existing = await self.subscriptions.registration(principal.workspace_id, principal.member_id, data["subscription_id"])
        await self.subscriptions.forget_elsewhere(principal.subject, data["subscription_id"], principal.workspace_id)
        row = {
            "id": existing["id"] if existing else str(uuid.uuid4()),
            "member_id": principal.member_id,
            "workspace_id": principal.workspace_id,
            "user_id": principal.subject,
            "platform": data["platform"],
            "subscription_id": data["subscription_id"],
            "is_active": data["is_active"],
            "created_at": as_utc(existing["created_at"]) if existing else now,
            "updated_at": now,
        }
        await self.subscriptions.upsert(row)
        return present_subscription(row), existing is None

    async def list_subscriptions(self, principal: Principal) -> list[dict]:
        rows = await self.subscriptions.list_for(principal.member_id, principal.workspace_id)
        return [present_subscription(row) for row in rows]

    async def unregister_subscription(self, principal: Principal, subscription_id: str) -> None:
        if not await self.subscriptions.delete(subscription_id, principal.member_id, principal.workspace_id):
            raise NotFound("subscription not found")
