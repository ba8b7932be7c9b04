"""The dispatcher (seed Flow 6): socket emits once the rows are committed, and the push and email
delivery jobs written to the outbox in the same transaction as the rows.

Jobs travel on ``roomee.delivery.push`` and ``roomee.delivery.email`` (not under
``roomee.notification.#``), one per provider request: a push job holds at most 2 000 device
subscriptions, an email job at most ``EMAIL_BATCH`` recipients, all reading one locale. Their ids
are derived from their content, so a job is the same whoever plans it again, and the provider's
idempotency key with it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.events import build_envelope
from roomee.kit.metrics import notifications_sent_total
from roomee.notification import hooks
from roomee.notification.channels import NOTIFICATION_NEW, UNREAD_COUNTERS

log = logging.getLogger("roomee.notification")

PUSH_JOBS = "roomee.delivery.push"
EMAIL_JOBS = "roomee.delivery.email"
PUSH_BATCH = 2000
EMAIL_BATCH = 100
JOB_NAMESPACE = uuid.UUID("0b7f3d0e-7c55-4b8e-a1e1-5d7c2f4f9a30")


def job_id(notification_id: str, channel: str, recipients: Iterable[str]) -> str:
    digest = hashlib.sha256("\n".join(recipients).encode()).hexdigest()
    return str(uuid.uuid5(JOB_NAMESPACE, f"{notification_id}:{channel}:{digest}"))


def chunked(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def push_jobs(
    notification: dict[str, Any],
    subscriptions_by_locale: dict[str, list[str]],
    push_data: dict[str, Any],
) -> list[tuple[str, dict]]:
    """One job per locale and batch of at most 2 000 active device subscriptions."""
    jobs = []
    for locale, subscription_ids in sorted(subscriptions_by_locale.items()):
        render = notification["renders"][locale]
        for batch in chunked(sorted(set(subscription_ids)), PUSH_BATCH):
            jobs.append(
                (
                    PUSH_JOBS,
                    _job_envelope(
                        "delivery.push",
                        notification,
                        job_id(notification["id"], "push", batch),
                        {
                            "notificationId": notification["id"],
                            "workspaceId": notification["workspace_id"],
                            "locale": locale,
                            "title": render["title"],
                            "body": render["body"],
                            "data": push_data,
                            "subscriptionIds": list(batch),
                        },
                        "push",
                    ),
                )
            )
    return jobs


def email_jobs(notification: dict[str, Any], recipients_by_locale: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict]]:
    """One job per locale and batch of recipients (``{"memberId", "to"}``)."""
    jobs = []
    for locale, recipients in sorted(recipients_by_locale.items()):
        render = notification["renders"][locale]
        # One message per address, even when two members share one.
        ordered = sorted({r["to"].lower(): r for r in recipients}.values(), key=lambda r: r["to"])
        for batch in chunked(ordered, EMAIL_BATCH):
            jobs.append(
                (
                    EMAIL_JOBS,
                    _job_envelope(
                        "delivery.email",
                        notification,
                        job_id(notification["id"], "email", [r["to"] for r in batch]),
                        {
                            "notificationId": notification["id"],
                            "workspaceId": notification["workspace_id"],
                            "locale": locale,
                            "subject": render["subject"],
                            "text": render["text"],
                            "html": render["html"],
                            "recipients": list(batch),
                        },
                        "email",
                    ),
                )
            )
    return jobs


def _job_envelope(kind: str, notification: dict[str, Any], job: str, payload: dict[str, Any], channel: str) -> dict:
    return build_envelope(
        kind,
        workspace_id=notification["workspace_id"],
        ecosystem_id=notification.get("ecosystem_id"),
        payload=payload,
        channels=(channel,),
        actor={"id": "notification", "name": "Roomee", "type": "system"},
        event_id=job,
    )


class SocketDispatcher:
    """Socket.IO side: ``notification:new`` to member rooms, counters, workspace broadcasts.

    Emits are queued on the session and run once it commits; a failed emit is logged and
    counted (the notification stays in the member's list either way).
    """

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    @property
    def socket(self):
        return self.ctx.state["channels"].socket

    def notify_after_commit(
        self,
        session: AsyncSession,
        *,
        workspace_id: str,
        payload_by_locale: dict[str, dict[str, Any]],
        members_by_locale: dict[str, list[str]],
        counters: dict[str, int],
    ) -> None:
        async def emit() -> None:
            for locale, member_ids in members_by_locale.items():
                await self._emit_members(member_ids, NOTIFICATION_NEW, payload_by_locale[locale])
            await self.emit_counters(workspace_id, counters)

        hooks.after_commit(session, emit)

    def notify_many_after_commit(
        self,
        session: AsyncSession,
        notices: list[tuple[dict[str, dict[str, Any]], dict[str, list[str]]]],
        counters_by_workspace: dict[str, dict[str, int]],
    ) -> None:
        """Several notifications of one transaction: each ``(payload_by_locale, members_by_locale)``
        to its members' rooms, then each workspace's new unread counts."""

        async def emit() -> None:
            for payload_by_locale, members_by_locale in notices:
                for locale, member_ids in members_by_locale.items():
                    await self._emit_members(member_ids, NOTIFICATION_NEW, payload_by_locale[locale])
            for workspace_id, counters in counters_by_workspace.items():
                await self.emit_counters(workspace_id, counters)

        hooks.after_commit(session, emit)

    def broadcast_after_commit(
        self, session: AsyncSession, *, workspace_id: str, payload: dict[str, Any], skip_member_ids: list[str]
    ) -> None:
        async def emit() -> None:
            try:
                await self.socket.to_workspace(workspace_id, NOTIFICATION_NEW, payload, skip_member_ids=skip_member_ids)
            except Exception:
                notifications_sent_total.labels("socket", "failed").inc()
                log.exception("socket broadcast failed", extra={"workspace_id": workspace_id})
                return
            notifications_sent_total.labels("socket", "sent").inc()

        hooks.after_commit(session, emit)

    def counters_after_commit(self, session: AsyncSession, workspace_id: str, counters: dict[str, int]) -> None:
        async def emit() -> None:
            await self.emit_counters(workspace_id, counters)

        hooks.after_commit(session, emit)

    async def emit_counters(self, workspace_id: str, counters: dict[str, int]) -> None:
        """``notification:unread`` with each member's count: one emit per distinct count value."""
        by_value: dict[int, list[str]] = defaultdict(list)
        for member_id, count in counters.items():
            by_value[count].append(member_id)
        for count, member_ids in sorted(by_value.items()):
            try:
                await self.socket.to_members(member_ids, UNREAD_COUNTERS, {"workspaceId": workspace_id, "unread": count})
            except Exception:
                log.exception("socket counter update failed", extra={"workspace_id": workspace_id})

    async def _emit_members(self, member_ids: list[str], event: str, payload: dict[str, Any]) -> None:
        try:
            await self.socket.to_members(member_ids, event, payload)
        except Exception:
            notifications_sent_total.labels("socket", "failed").inc(len(member_ids))
            log.exception("socket emit failed", extra={"notification_id": payload.get("id")})
            return
        notifications_sent_total.labels("socket", "sent").inc(len(member_ids))
