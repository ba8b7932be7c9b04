"""Delivery consumers (push and email jobs) and the release of deferred deliveries.

A job is one provider request's worth of recipients. Its handler calls the channel (whose
providers sit behind the platform's circuit breaker), records every ``AttemptResult`` as a
``delivery_attempt`` row and counts ``notifications_sent_total{channel,status}``. A retryable
failure (5xx, timeout, open circuit) raises, so the kit retries the job after 1 s, 2 s and 4 s and
then dead-letters it; the attempt rows are then written in their own transaction once the
consumer's has rolled back, so failures stay on record. A retry or a replay skips the recipients
an earlier attempt of the same job reached, and numbers its attempts after the earlier ones.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.events import Delivery, emit_many
from roomee.kit.metrics import notifications_sent_total
from roomee.notification import clock, hooks
from roomee.notification.channels import AttemptResult, EmailMessage, PushMessage
from roomee.notification.processor import plan_deliveries
from roomee.notification.repository import (
    AttemptRepository,
    DirectoryRepository,
    NotificationRepository,
    SubscriptionRepository,
)

log = logging.getLogger("roomee.notification.delivery")

DEFERRED_POLL_SECONDS = 1.0
DEFERRED_BATCH = 1000


class DeliveryFailed(Exception):
    """A provider request failed in a way worth retrying; the kit retries the job."""


class DeliveryHandlers:
    def __init__(self, ctx) -> None:
        self.ctx = ctx

    @property
    def channels(self):
        return self.ctx.state["channels"]

    async def push(self, session: AsyncSession, envelope: dict[str, Any], delivery: Delivery) -> None:
        job, job_id = envelope["payload"], str(envelope["id"])
        channel = self.channels.push
        last, reached = await AttemptRepository(session).history(job_id)
        remaining = [s for s in job["subscriptionIds"] if s not in reached]
        if not remaining:
            return
        message = PushMessage(
            notification_id=job["notificationId"],
            workspace_id=job["workspaceId"],
            title=job["title"],
            body=job["body"],
            data=job.get("data") or {},
            subscription_ids=remaining,
            locale=job.get("locale") or "fr",
        )
        results = await self._call(
            "push", channel.provider, remaining, lambda: channel.send(message, idempotency_key=job_id)
        )
        await self._settle(session, job_id, job["notificationId"], last + 1, results)
        invalid = sorted({r for result in results for r in (getattr(result, "invalid_recipients", None) or ())})
        if invalid:
            await SubscriptionRepository(session).deactivate(invalid, clock.now(self.ctx))
            log.info("deactivated %d push subscriptions the provider reported invalid", len(invalid))

    async def email(self, session: AsyncSession, envelope: dict[str, Any], delivery: Delivery) -> None:
        job, job_id = envelope["payload"], str(envelope["id"])
        channel = self.channels.email
        last, reached = await AttemptRepository(session).history(job_id)
        recipients = [r for r in job["recipients"] if r["to"] not in reached]
        if not recipients:
            return
        messages = [
            EmailMessage(
                notification_id=job["notificationId"],
                member_id=r.get("memberId"),
                to=r["to"],
                subject=job["subject"],
                text=job["text"],
                html=job["html"],
            )
            for r in recipients
        ]
        results = await self._call(
            "email", channel.provider, [r["to"] for r in recipients], lambda: channel.send(messages)
        )
        await self._settle(session, job_id, job["notificationId"], last + 1, results)

    async def _call(
        self, name: str, provider: str, recipients: list[str], send: Callable[[], Awaitable[list[AttemptResult]]]
    ) -> list[AttemptResult]:
        try:
            return list(await send())
        except Exception as exc:  # a channel bug or an unexpected provider error: retry like a 5xx
            log.exception("%s channel raised", name)
            return [
                AttemptResult(
                    channel=name, provider=provider, status="failed", recipients=recipients,
                    error=f"{type(exc).__name__}: {exc}"[:2000], retryable=True,
                )
            ]

    async def _settle(
        self, session: AsyncSession, job_id: str, notification_id: str, attempt: int, results: list[AttemptResult]
    ) -> None:
        now = clock.now(self.ctx)
        rows = [
            {
                "id": str(uuid.uuid4()),
                "notification_id": notification_id,
                "job_id": job_id,
                "channel": r.channel,
                "provider": r.provider,
                "status": r.status,
                "attempt": attempt,
                "recipients_count": len(r.recipients),
                "recipients": list(r.recipients),
                "provider_message_id": getattr(r, "provider_message_id", None),
                "response": r.response,
                "error": r.error,
                "created_at": now,
            }
            for r in results
        ]
        for r in results:
            notifications_sent_total.labels(r.channel, r.status).inc(max(len(r.recipients), 1))
        retryable = [r for r in results if r.status == "failed" and r.retryable]
        if not retryable:
            await AttemptRepository(session).insert_many(rows)
            return

        async def keep_attempts() -> None:
            async with self.ctx.db.transaction() as separate:
                await AttemptRepository(separate).insert_many(rows)

        hooks.after_rollback(session, keep_attempts)
        raise DeliveryFailed(
            f"{len(retryable)} of {len(results)} {retryable[0].channel} requests failed "
            f"(attempt {attempt}): {retryable[0].error}"
        )


async def release_due(ctx, limit: int = DEFERRED_BATCH) -> int:
    """Send the deferred push and email whose quiet period has ended; return how many were released."""
    now = clock.now(ctx)
    async with ctx.db.transaction() as session:
        repo = NotificationRepository(session)
        due = await repo.due_deferred(now, limit)
        if not due:
            return 0
        notifications = await repo.get_many({d["notification_id"] for d in due})
        members = await DirectoryRepository(session).members(sorted({d["member_id"] for d in due}))
        by_notification: dict[str, list[dict]] = defaultdict(list)
        for row in due:
            by_notification[row["notification_id"]].append(row)
        jobs: list[tuple[str, dict]] = []
        for notification_id, rows in by_notification.items():
            notification = notifications.get(notification_id)
            if notification is None:
                continue
            renders = notification["renders"] or {}
            push: dict[str, list[str]] = defaultdict(list)
            emails: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                entry = members.get(row["member_id"])
                if entry is not None and entry.deleted_at is not None:
                    continue
                locale = row["locale"] if row["locale"] in renders else next(iter(renders), row["locale"])
                wanted = row["channels"].split(",")
                if "push" in wanted:
                    push[locale].append(row["member_id"])
                if "email" in wanted and entry is not None and entry.email and "subject" in renders.get(locale, {}):
                    emails[locale].append({"memberId": row["member_id"], "to": entry.email})
            jobs += await plan_deliveries(session, notification, dict(push), dict(emails))
        await emit_many(session, jobs)
        await repo.mark_released([row["id"] for row in due], now)
    log.info("released %d deferred deliveries", len(due), extra={"jobs": len(jobs)})
    return len(due)


async def deferred_worker(ctx) -> None:
    """Release deferred deliveries as their quiet periods end (polls the service's clock)."""
    while True:
        try:
            released = await release_due(ctx)
        except Exception:
            log.exception("releasing deferred deliveries failed")
            released = 0
        if released < DEFERRED_BATCH:
            await asyncio.sleep(ctx.state.get("deferred_poll_seconds", DEFERRED_POLL_SECONDS))
