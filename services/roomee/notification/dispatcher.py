"""The dispatcher (seed Flow 6): socket emits once the rows are committed, and the push and email
delivery jobs written to the outbox in the same transaction as the rows.

Jobs travel on ``roomee.delivery.push`` and ``roomee.delivery.email`` (not under
``roomee.notification.#``). A job carries up to ``REQUESTS_PER_JOB`` provider requests (and
``RECIPIENTS_PER_JOB`` recipients) of one workspace, from one or several notifications of a
transaction (many single-receiver events make few jobs): a push request holds at most 2 000 device subscriptions, an email request at most
``EMAIL_BATCH`` recipients, all reading one locale. Job ids are derived from their content, so a
job is the same whoever plans it again, and the provider's idempotency keys with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.events import build_envelope
from roomee.kit.metrics import notifications_sent_total
from roomee.kit.observability import delivery_span
from roomee.notification import hooks
from roomee.notification.channels import NOTIFICATION_NEW, UNREAD_COUNTERS

log = logging.getLogger("roomee.notification")

PUSH_JOBS = "roomee.delivery.push"
EMAIL_JOBS = "roomee.delivery.email"
PUSH_BATCH = 2000
EMAIL_BATCH = 100
REQUESTS_PER_JOB = 50
RECIPIENTS_PER_JOB = 10_000
JOB_NAMESPACE = uuid.UUID("0b7f3d0e-7c55-4b8e-a1e1-5d7c2f4f9a30")


def chunked(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def push_requests(
    notification: dict[str, Any],
    subscriptions_by_locale: dict[str, list[str]],
    push_data: dict[str, Any],
) -> list[dict[str, Any]]:
    """One OneSignal request per locale and batch of at most 2 000 active device subscriptions."""
    requests = []
    for locale, subscription_ids in sorted(subscriptions_by_locale.items()):
        render = notification["renders"][locale]
        for batch in chunked(sorted(set(subscription_ids)), PUSH_BATCH):
            requests.append(
                {
                    "notificationId": notification["id"],
                    "workspaceId": notification["workspace_id"],
                    "ecosystemId": notification.get("hotel_id"),
                    "locale": locale,
                    "title": render["title"],
                    "body": render["body"],
                    "data": push_data,
                    "subscriptionIds": list(batch),
                }
            )
    return requests


def email_requests(notification: dict[str, Any], recipients_by_locale: dict[str, list[dict[str, Any]]]) -> list[dict]:
    """One email request per locale and batch of recipients (``{"memberId", "to"}``)."""
    requests = []
    for locale, recipients in sorted(recipients_by_locale.items()):
        render = notification["renders"][locale]
        # One message per address, even when two members share one.
        ordered = sorted({r["to"].lower(): r for r in recipients}.values(), key=lambda r: r["to"])
        for batch in chunked(ordered, EMAIL_BATCH):
            requests.append(
                {
                    "notificationId": notification["id"],
                    "workspaceId": notification["workspace_id"],
                    "ecosystemId": notification.get("hotel_id"),
                    "locale": locale,
                    "subject": render["subject"],
                    "text": render["text"],
                    "html": render["html"],
                    "recipients": list(batch),
                }
            )
    return requests


def _job_batches(requests: list[dict[str, Any]], recipients_key: str) -> list[list[dict[str, Any]]]:
    """Requests cut into jobs of at most ``REQUESTS_PER_JOB`` requests and ``RECIPIENTS_PER_JOB``
    recipients: a big fan-out makes several jobs, which replicas deliver in parallel and which
    stay small messages."""
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    recipients = 0
    for request in requests:
        size = len(request[recipients_key])
        if current and (len(current) == REQUESTS_PER_JOB or recipients + size > RECIPIENTS_PER_JOB):
            batches.append(current)
            current, recipients = [], 0
        current.append(request)
        recipients += size
    if current:
        batches.append(current)
    return batches


def delivery_jobs(channel: str, requests: list[dict[str, Any]]) -> list[tuple[str, dict]]:
    """The jobs (outbox ``(routing key, envelope)``) carrying these requests, per workspace (see
    ``_job_batches``). A job's id is derived from its requests, so planning the same
    requests again gives the same job."""
    routing_key, recipients_key = (PUSH_JOBS, "subscriptionIds") if channel == "push" else (EMAIL_JOBS, "recipients")
    by_workspace: dict[tuple[str | None, str | None], list[dict[str, Any]]] = defaultdict(list)
    for request in requests:
        by_workspace[(request["workspaceId"], request.get("ecosystemId"))].append(request)
    jobs = []
    for (workspace_id, hotel_id), grouped in by_workspace.items():
        for batch in _job_batches(grouped, recipients_key):
            keys = "\n".join(
                f"{r['notificationId']}:{r['locale']}:"
                + ",".join(x if isinstance(x, str) else x["to"] for x in r[recipients_key])
                for r in batch
            )
            job = str(uuid.uuid5(JOB_NAMESPACE, f"{channel}:{hashlib.sha256(keys.encode()).hexdigest()}"))
            envelope = build_envelope(
                f"delivery.{channel}",
                workspace_id=workspace_id,
                hotel_id=hotel_id,
                payload={"requests": list(batch)},
                channels=(channel,),
                actor={"id": "notification", "name": "Roomee", "type": "system"},
                event_id=job,
            )
            jobs.append((routing_key, envelope))
    return jobs


class SocketDispatcher:
    """Socket.IO side: ``notification:new`` to member rooms, counters, workspace broadcasts.

    Emits are queued on the session and run once it commits, all those of one transaction
    together (one RabbitMQ message to the other replicas); a failed emit is logged and counted
    (the notification stays in the member's list either way).
    """

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    @property
    def socket(self):
        return self.ctx.state["channels"].socket

    def notify_many_after_commit(
        self,
        session: AsyncSession,
        notices: list[tuple[dict[str, dict[str, Any]], dict[str, list[str]]]],
        counters_by_workspace: dict[str, dict[str, int]],
    ) -> None:
        """Several notifications of one transaction: each ``(payload_by_locale, members_by_locale)``
        to its members' rooms, then each workspace's new unread counts."""

        async def emit() -> None:
            emits: list[tuple[str, dict[str, Any], list[str]]] = []
            receivers = 0
            for payload_by_locale, members_by_locale in notices:
                for locale, member_ids in members_by_locale.items():
                    emits.append((NOTIFICATION_NEW, payload_by_locale[locale], member_ids))
                    receivers += len(member_ids)
            for workspace_id, counters in counters_by_workspace.items():
                emits += counter_emits(workspace_id, counters)
            try:
                with delivery_span("socket", "emit", receivers):
                    await self.socket.to_members_many(emits)
            except (Exception, asyncio.CancelledError):
                if hooks.cancelled_from_outside():
                    raise
                notifications_sent_total.labels("socket", "failed").inc(receivers)
                log.exception("socket emit failed", extra={"notifications": len(notices)})
                return
            notifications_sent_total.labels("socket", "sent").inc(receivers)

        hooks.after_commit(session, emit)

    def broadcast_after_commit(
        self, session: AsyncSession, *, workspace_id: str, payload: dict[str, Any], skip_member_ids: list[str]
    ) -> None:
        async def emit() -> None:
            try:
                with delivery_span("socket", "emit", 0):  # a workspace room: its receivers are not counted here
                    await self.socket.to_workspace(workspace_id, NOTIFICATION_NEW, payload, skip_member_ids=skip_member_ids)
            except (Exception, asyncio.CancelledError):
                if hooks.cancelled_from_outside():
                    raise
                notifications_sent_total.labels("socket", "failed").inc()
                log.exception("socket broadcast failed", extra={"workspace_id": workspace_id})
                return
            notifications_sent_total.labels("socket", "sent").inc()

        hooks.after_commit(session, emit)

    def counters_after_commit(self, session: AsyncSession, workspace_id: str, counters: dict[str, int]) -> None:
        async def emit() -> None:
            try:
                await self.socket.to_members_many(counter_emits(workspace_id, counters))
            except Exception:
                log.exception("socket counter update failed", extra={"workspace_id": workspace_id})

        hooks.after_commit(session, emit)


def counter_emits(workspace_id: str, counters: dict[str, int]) -> list[tuple[str, dict[str, Any], list[str]]]:
    """``notification:unread`` with each member's count: one emit per distinct count value."""
    by_value: dict[int, list[str]] = defaultdict(list)
    for member_id, count in counters.items():
        by_value[count].append(member_id)
    return [
        (UNREAD_COUNTERS, {"workspaceId": workspace_id, "unread": count}, member_ids)
        for count, member_ids in sorted(by_value.items())
    ]
