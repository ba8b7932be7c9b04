"""Delivery consumers (push and email jobs) and the release of deferred deliveries.

A job carries provider requests (see ``dispatcher.delivery_jobs``); jobs are handled in
batches. Each request's channel call (providers sit behind the platform's circuit breaker) gives
``AttemptResult``s, each recorded as a ``delivery_attempt`` row and counted in
``notifications_sent_total{channel,status}``. A job with a retryable failure (5xx, timeout, open
circuit) is handed back to the kit as failed, so the kit retries that job alone after 1 s, 2 s
and 4 s and then dead-letters it; its attempt rows commit with the batch, so failures stay on
record. A retry or a replay skips the recipients an earlier attempt of the same job reached, and
numbers its attempts after the earlier ones.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.events import Delivery, emit_many
from roomee.kit.metrics import notifications_sent_total
from roomee.kit.observability import RetryNotice, delivery_span
from roomee.notification import clock
from roomee.notification.channels import AttemptResult, EmailMessage, PushMessage
from roomee.notification.processor import Planned, plan_deliveries
from roomee.notification.repository import (
    AttemptRepository,
    DirectoryRepository,
    NotificationRepository,
    SubscriptionRepository,
)

log = logging.getLogger("roomee.notification.delivery")

DEFERRED_POLL_SECONDS = 1.0
DEFERRED_BATCH = 1000
EMAIL_CONCURRENCY = 4


class DeliveryFailed(Exception):
    """A provider request failed in a way worth retrying; the kit retries the job."""


@dataclass
class _Send:
    """One provider request of a job in a batch: what is left to send and the provider's outcome."""

    index: int  # the job's position in the batch
    job_id: str
    key: str  # the request's idempotency key: the same on every try of the job
    request: dict[str, Any]
    attempt: int
    recipients: list[Any]
    results: list[AttemptResult] = field(default_factory=list)


class DeliveryHandlers:
    """Batch handlers of the push and email job queues.

    A batch of jobs shares the consumer's transaction: one query for the jobs' earlier attempts,
    every provider request of the batch concurrently (each channel bounds its own concurrency),
    one insert for every attempt. A job with a retryable failure is returned to the kit as
    failed, so that job alone goes down the retry path while its attempt rows commit with the
    rest of the batch.
    """

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    @property
    def channels(self):
        return self.ctx.state["channels"]

    async def push(self, session: AsyncSession, items: list[tuple[dict[str, Any], Delivery]]) -> dict[int, Exception]:
        channel = self.channels.push
        sends = await self._pending(session, items, "subscriptionIds", lambda subscription_id: subscription_id)

        async def send(unit: _Send) -> None:
            request = unit.request
            message = PushMessage(
                notification_id=request["notificationId"],
                workspace_id=request["workspaceId"],
                title=request["title"],
                body=request["body"],
                data=request.get("data") or {},
                subscription_ids=unit.recipients,
                locale=request.get("locale") or "fr",
            )
            unit.results = await self._call(
                "push", channel.provider, unit.recipients, lambda: channel.send(message, idempotency_key=unit.key)
            )

        await asyncio.gather(*(send(unit) for unit in sends))
        failures = await self._settle(session, sends)
        invalid = sorted(
            {r for unit in sends for result in unit.results for r in (getattr(result, "invalid_recipients", None) or ())}
        )
        if invalid:
            await SubscriptionRepository(session).deactivate(invalid, clock.now(self.ctx))
            log.info("deactivated %d push subscriptions the provider reported invalid", len(invalid))
        return failures

    async def email(self, session: AsyncSession, items: list[tuple[dict[str, Any], Delivery]]) -> dict[int, Exception]:
        channel = self.channels.email
        sends = await self._pending(session, items, "recipients", lambda recipient: recipient["to"])
        # Each SMTP request opens its own connection: a few at a time.
        semaphore = asyncio.Semaphore(EMAIL_CONCURRENCY)

        async def send(unit: _Send) -> None:
            request = unit.request
            messages = [
                EmailMessage(
                    notification_id=request["notificationId"],
                    member_id=r.get("memberId"),
                    to=r["to"],
                    subject=request["subject"],
                    text=request["text"],
                    html=request["html"],
                )
                for r in unit.recipients
            ]
            async with semaphore:
                unit.results = await self._call(
                    "email", channel.provider, [r["to"] for r in unit.recipients], lambda: channel.send(messages)
                )

        await asyncio.gather(*(send(unit) for unit in sends))
        return await self._settle(session, sends)

    async def _pending(
        self,
        session: AsyncSession,
        items: list[tuple[dict[str, Any], Delivery]],
        recipients_key: str,
        address: Callable[[Any], str],
    ) -> list[_Send]:
        """The requests of a batch's jobs with what they still have to send: a retry or a replay
        skips the recipients an earlier attempt of the job reached for that notification, and
        numbers its attempt after the earlier ones."""
        histories = await AttemptRepository(session).histories([str(envelope["id"]) for envelope, _ in items])
        sends = []
        for index, (envelope, _delivery) in enumerate(items):
            job_id = str(envelope["id"])
            last, reached = histories.get(job_id, (0, set()))
            for position, request in enumerate(envelope["payload"]["requests"]):
                notification_id = request["notificationId"]
                remaining = [r for r in request[recipients_key] if (notification_id, address(r)) not in reached]
                if remaining:
                    sends.append(_Send(index, job_id, f"{job_id}/{position}", request, last + 1, remaining))
        return sends

    async def _call(
        self, name: str, provider: str, recipients: list[str], send: Callable[[], Awaitable[list[AttemptResult]]]
    ) -> list[AttemptResult]:
        try:
            with delivery_span(name, provider, len(recipients)):
                return list(await send())
        except Exception as exc:  # a channel bug or an unexpected provider error: retry like a 5xx
            log.exception("%s channel raised", name)
            return [
                AttemptResult(
                    channel=name, provider=provider, status="failed", recipients=recipients,
                    error=f"{type(exc).__name__}: {exc}"[:2000], retryable=True,
                )
            ]

    async def _settle(self, session: AsyncSession, sends: list[_Send]) -> dict[int, Exception]:
        """Record every attempt (one insert), count them, and name the jobs to retry."""
        now = clock.now(self.ctx)
        rows = []
        failures: dict[int, Exception] = {}
        for unit in sends:
            for r in unit.results:
                rows.append(
                    {
                        "id": str(uuid.uuid4()),
                        "notification_id": unit.request["notificationId"],
                        "job_id": unit.job_id,
                        "channel": r.channel,
                        "provider": r.provider,
                        "status": r.status,
                        "attempt": unit.attempt,
                        "recipients_count": len(r.recipients),
                        "recipients": list(r.recipients),
                        "provider_message_id": getattr(r, "provider_message_id", None),
                        "response": r.response,
                        "error": r.error,
                        "created_at": now,
                    }
                )
                notifications_sent_total.labels(r.channel, r.status).inc(max(len(r.recipients), 1))
            retryable = [r for r in unit.results if r.status == "failed" and r.retryable]
            if retryable and unit.index not in failures:
                failures[unit.index] = DeliveryFailed(
                    f"{retryable[0].channel} request failed (attempt {unit.attempt}): {retryable[0].error}"
                )
        await AttemptRepository(session).insert_many(rows)
        return failures


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
        planned = Planned()
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
            await plan_deliveries(session, notification, dict(push), dict(emails), planned)
        jobs = planned.jobs()
        await emit_many(session, jobs)
        await repo.mark_released([row["id"] for row in due], now)
    log.info("released %d deferred deliveries", len(due), extra={"jobs": len(jobs)})
    return len(due)


async def deferred_worker(ctx) -> None:
    """Release deferred deliveries as their quiet periods end (polls the service's clock)."""
    notice = RetryNotice(log, "releasing deferred deliveries")  # an outage: said once, and its end once
    while True:
        try:
            released = await release_due(ctx)
            notice.succeeded()
        except Exception as exc:
            notice.failed(exc, traceback=not isinstance(exc, (OSError, DBAPIError)))
            released = 0
        if released < DEFERRED_BATCH:
            await asyncio.sleep(ctx.state.get("deferred_poll_seconds", DEFERRED_POLL_SECONDS))
