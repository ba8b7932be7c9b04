"""Business rules of the billing service (api-stripe): plans, one subscription per hotel, Stripe webhooks."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import stripe
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.billing import events
from roomee.billing.plans import FALLBACK_PLAN, PLANS, Plan
from roomee.billing.providers import (
    ENDED_STATUSES,
    BillingProvider,
    Customer,
    ProviderSubscription,
    provider_from_settings,
    provider_subscription_from_stripe,
)
from roomee.billing.repository import CustomerRepository, SubscriptionRepository, WebhookEventRepository
from roomee.kit.clock import as_utc, utcnow
from roomee.kit.errors import BadRequest, Conflict, NotFound, ServiceUnavailable, Unprocessable, UpstreamError
from roomee.kit.platform import ServiceContext

log = logging.getLogger("roomee.billing")

billing_subscriptions_total = Counter(
    "billing_subscriptions_total",
    "Subscription operations by outcome (created, existing, canceled, plan_changed, ...).",
    ["operation", "outcome"],
)
billing_webhook_events_total = Counter(
    "billing_webhook_events_total", "Stripe webhook events by type and outcome.", ["type", "outcome"]
)

SUBSCRIPTION_EVENTS = ("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted")


def initialise_series() -> None:
    """Every known label set at 0 from start-up, so the first of each is an increase."""
    for operation, outcomes in (("assign", ("created", "existing", "conflict", "refused_closed")),
                                ("cancel", ("canceled", "already_canceled")),
                                ("change_plan", ("plan_changed", "unchanged")),
                                ("close", ("closed", "provider_customer_deleted", "provider_customer_anonymised"))):
        for outcome in outcomes:
            billing_subscriptions_total.labels(operation, outcome)
    for event_type in SUBSCRIPTION_EVENTS:
        for outcome in ("applied", "unchanged", "stale", "unknown_subscription", "duplicate"):
            billing_webhook_events_total.labels(event_type, outcome)
    for outcome in ("invalid_signature", "invalid_payload"):
        billing_webhook_events_total.labels("unverified", outcome)


class KeyedLocks:
    """One asyncio lock per key (a hotel), dropped when nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# Stripe retries a delivery for up to three days; ids are kept well beyond that.
WEBHOOK_EVENT_RETENTION = timedelta(days=30)
PURGE_INTERVAL_SECONDS = 3600.0


async def setup(ctx: ServiceContext) -> None:
    """The provider chosen by settings; closed when the platform stops."""
    initialise_series()
    provider = provider_from_settings(ctx.settings)
    ctx.state["provider"] = provider
    ctx.state["hotel_locks"] = KeyedLocks()
    ctx.on_stop(provider.close)


def workers(ctx: ServiceContext) -> list:
    return [functools.partial(purge_worker, ctx)]


async def purge_webhook_events(ctx: ServiceContext) -> int:
    """Forget handled event ids older than the retention (a redelivery that old cannot come)."""
    async with ctx.db.transaction() as session:
        return await WebhookEventRepository(session).delete_received_before(utcnow() - WEBHOOK_EVENT_RETENTION)


async def purge_worker(ctx: ServiceContext) -> None:
    while True:
        purged = await purge_webhook_events(ctx)
        if purged:
            log.info("forgot old webhook event ids", extra={"count": purged})
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)


def plan_of(plan_id: str) -> Plan:
    plan = PLANS.get(plan_id)
    if plan is None:
        raise Unprocessable(f"unknown plan '{plan_id}'; plans: {', '.join(PLANS)}", code="unknown_plan")
    return plan


def present_plan(plan: Plan) -> dict[str, Any]:
    return {
        "id": plan.id,
        "name": plan.name,
        "storage_quota": {"max_size": plan.max_size, "unit": "MO"},
        "amount": plan.amount,
        "currency": plan.currency,
        "interval": plan.interval,
    }


def present(row: dict[str, Any]) -> dict[str, Any]:
    plan = PLANS[row["plan_id"]]
    return {
        "id": row["external_id"],
        "customer_id": row["customer_id"],
        "product_id": row["plan_id"],
        "status": row["status"],
        "current_period_end": as_utc(row["current_period_end"]),
        "storage_quota": {"max_size": plan.max_size, "unit": "MO"},
        "provider": row["provider"],
        "provider_customer_id": row["external_customer_id"],
        "created_at": as_utc(row["created_at"]),
        "updated_at": as_utc(row["updated_at"]),
        "ended_at": as_utc(row["ended_at"]),
    }


def _event_view(row: dict[str, Any]) -> dict[str, Any]:
    """The subscription as events carry it (camelCase, JSON-ready)."""
    shown = present(row)
    period_end = shown["current_period_end"]
    return {
        "id": shown["id"],
        "customerId": shown["customer_id"],
        "productId": shown["product_id"],
        "status": shown["status"],
        "currentPeriodEnd": period_end.isoformat() if period_end else None,
        "storageQuota": {"maxSize": shown["storage_quota"]["max_size"], "unit": "MO"},
    }


def _provider_values(found: ProviderSubscription, current_plan_id: str) -> dict[str, Any]:
    values = {
        "external_id": found.external_id,
        "external_customer_id": found.external_customer_id,
        "plan_id": found.plan_id or current_plan_id,
        "status": found.status,
        "current_period_end": found.current_period_end,
    }
    if found.status in ENDED_STATUSES:
        values["ended_at"] = utcnow()
    return values


def _is_closed(closure: dict[str, Any] | None, generation: int) -> bool:
    """Whether a hotel's closure covers an assign of ``generation``."""
    if closure is None or closure["closed_at"] is None:
        return False
    return closure["closed_for_good"] or (closure["closed_generation"] is not None and generation <= closure["closed_generation"])


def _written_now() -> dict[str, Any]:
    """Stamps of a write through the API: provider events created before it are stale."""
    now = utcnow()
    return {"updated_at": now, "last_event_created": int(now.timestamp())}


class BillingService:
    def __init__(self, session: AsyncSession, ctx: ServiceContext) -> None:
        self.session = session
        self.settings = ctx.settings
        self.provider: BillingProvider = ctx.state["provider"]
        self.hotel_locks: KeyedLocks = ctx.state["hotel_locks"]
        is_postgres = ctx.db.is_postgres
        self.subscriptions = SubscriptionRepository(session, lock_rows=is_postgres)
        self.customers = CustomerRepository(session, lock_rows=is_postgres)
        self.webhook_events = WebhookEventRepository(session)

    # --- subscriptions ------------------------------------------------------------------------

    async def assign(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The hotel's live subscription, created on the first call; ``(subscription, created)``.

        Retries of one hotel queue on a per-hotel lock in this process. PostgreSQL (replicas):
        the insert of the live row is the lock across processes, held while the provider is
        called, so a concurrent retry elsewhere waits and then reads the winner's row; a crash
        leaves nothing recorded here and the next attempt adopts what the provider kept. SQLite
        (one process): the provider is called first and the row recorded after, so the database's
        single write lock is not held during the call (an unlucky late reader adopts the same
        provider subscription and loses the insert).
        """
        plan = plan_of(data["product_id"])
        hotel_id = data["customer_id"]
        async with self._hotel_exclusively(hotel_id):
            closure = await self.customers.hold(hotel_id)
            if _is_closed(closure, data.get("generation") or 0):
                billing_subscriptions_total.labels("assign", "refused_closed").inc()
                log.info("late subscription request refused: the hotel was closed", extra={"hotel_id": hotel_id})
                raise Conflict(f"hotel '{hotel_id}' was closed (its provisioning was undone or it was deleted); "
                               "no subscription is created for it", code="customer_closed")
            if self.subscriptions.lock_rows:
                return await self._record_then_subscribe(hotel_id, plan, data)
            return await self._subscribe_then_record(hotel_id, plan, data)

    @asynccontextmanager
    async def _hotel_exclusively(self, hotel_id: str) -> AsyncIterator[None]:
        """Hold the hotel's lock until this request's writes are committed: released before the commit,
        it would let the next request of that hotel read the row as it was and change it a second time
        (two quota events for one plan change)."""
        async with self.hotel_locks.hold(hotel_id):
            yield
            await self.session.commit()

    def _new_row(self, hotel_id: str, plan: Plan, data: dict[str, Any]) -> dict[str, Any]:
        now = utcnow()
        return {
            "id": str(uuid.uuid4()),
            "customer_id": hotel_id,
            "plan_id": plan.id,
            "status": "pending",
            "provider": self.provider.name,
            "email": data.get("email"),
            "name": data.get("name"),
            "created_at": now,
            "updated_at": now,
            "external_id": None,
            "external_customer_id": None,
            "current_period_end": None,
            "ended_at": None,
            "last_event_created": None,
        }

    async def _record_then_subscribe(self, hotel_id: str, plan: Plan, data: dict[str, Any]) -> tuple[dict, bool]:
        row = self._new_row(hotel_id, plan, data)
        won = await self.subscriptions.insert_if_none_live(row)
        live = await self.subscriptions.live_for_customer(hotel_id)
        if not won:
            return self._existing(hotel_id, plan, live), False
        found = await self._subscribe(hotel_id, plan, data, row["id"])
        values = _provider_values(found, plan.id) | _written_now()
        await self.subscriptions.update(row["id"], values)
        return self._created({**live, **values}), True

    async def _subscribe_then_record(self, hotel_id: str, plan: Plan, data: dict[str, Any]) -> tuple[dict, bool]:
        live = await self.subscriptions.live_for_customer(hotel_id)
        if live is not None:
            return self._existing(hotel_id, plan, live), False
        row = self._new_row(hotel_id, plan, data)
        found = await self._subscribe(hotel_id, plan, data, row["id"])
        row |= _provider_values(found, plan.id) | _written_now()
        if not await self.subscriptions.insert_if_none_live(row):
            return self._existing(hotel_id, plan, await self.subscriptions.live_for_customer(hotel_id)), False
        return self._created(row), True

    async def _subscribe(self, hotel_id: str, plan: Plan, data: dict[str, Any], assignment_id: str) -> ProviderSubscription:
        closure = await self.customers.hold(hotel_id)
        # A closed hotel's provider customer was deleted: a retried hotel gets a new one.
        previous = None if closure and closure["closed_at"] else await self.subscriptions.latest_ended_for_customer(hotel_id)
        customer = Customer(hotel_id, data.get("email"), data.get("name"),
                            previous["external_customer_id"] if previous else None)
        found = await self.provider.subscribe(customer, plan, assignment_id)
        known = await self.subscriptions.by_external_id(found.external_id)
        if known is not None and known["ended_at"] is not None:
            # Stripe still runs one we recorded as ended (its cancel event was forged, or lost).
            raise UpstreamError(f"the provider reports subscription {found.external_id} as live, but it ended here; "
                                "cancel it at the provider first", code="provider_out_of_sync")
        return found

    @staticmethod
    def _existing(hotel_id: str, plan: Plan, live: dict[str, Any] | None) -> dict[str, Any]:
        if live is None:  # the live one ended between our insert and our read: a retry will do
            raise Conflict("the hotel's subscription changed meanwhile; retry", code="subscription_busy")
        if live["plan_id"] != plan.id:
            billing_subscriptions_total.labels("assign", "conflict").inc()
            raise Conflict(
                f"hotel '{hotel_id}' already has a '{live['plan_id']}' subscription; use change-plan",
                code="subscription_exists",
            )
        billing_subscriptions_total.labels("assign", "existing").inc()
        return present(live)

    @staticmethod
    def _created(row: dict[str, Any]) -> dict[str, Any]:
        billing_subscriptions_total.labels("assign", "created").inc()
        log.info("subscription assigned", extra={"hotel_id": row["customer_id"], "plan": row["plan_id"],
                                                 "status": row["status"], "subscription_id": row["external_id"]})
        return present(row)

    async def get(self, hotel_id: str, *, refresh: bool = False) -> dict[str, Any]:
        if refresh:
            async with self._hotel_exclusively(hotel_id):
                await self._refresh(hotel_id)
        row = await self.subscriptions.latest_for_customer(hotel_id)
        if row is None:
            raise NotFound(f"hotel '{hotel_id}' has no subscription", code="subscription_not_found")
        return present(row)

    async def _refresh(self, hotel_id: str) -> None:
        """Ask the provider for the live subscription's state now, and apply it as its webhook would: one
        canceled behind the platform's back (Stripe's dashboard, a webhook never delivered) is recorded ended."""
        row = await self.subscriptions.live_for_customer(hotel_id)
        if row is None or row["external_id"] is None:  # none, or an assign still talking to the provider
            return
        outcome = await self._apply_provider_state(row, await self.provider.retrieve(row), None)
        if outcome == "applied":
            log.info("subscription refreshed from the provider", extra={"hotel_id": hotel_id,
                                                                       "subscription_id": row["external_id"]})

    async def cancel(self, hotel_id: str) -> dict[str, Any]:
        """Cancel the live subscription now; a hotel whose subscription already ended gets it back as is."""
        async with self._hotel_exclusively(hotel_id):
            return await self._cancel(hotel_id)

    async def _cancel(self, hotel_id: str) -> dict[str, Any]:
        row = await self.subscriptions.live_for_customer(hotel_id)
        if row is None:
            ended = await self.subscriptions.latest_for_customer(hotel_id)
            if ended is None:
                raise NotFound(f"hotel '{hotel_id}' has no subscription", code="subscription_not_found")
            billing_subscriptions_total.labels("cancel", "already_canceled").inc()
            return present(ended)
        return present(await self._record_canceled(row, await self.provider.cancel(row)))

    async def _record_canceled(self, row: dict[str, Any], found: ProviderSubscription) -> dict[str, Any]:
        values = _provider_values(found, row["plan_id"]) | {"status": "canceled", "ended_at": utcnow()} | _written_now()
        await self.subscriptions.update(row["id"], values)
        billing_subscriptions_total.labels("cancel", "canceled").inc()
        log.info("subscription canceled", extra={"hotel_id": row["customer_id"], "subscription_id": row["external_id"]})
        return {**row, **values}

    async def close(self, hotel_id: str, generation: int | None) -> dict[str, Any]:
        """Close a hotel: cancel its live subscription, delete its provider customer (or wipe it where
        the provider keeps it), forget its contact details, and remember the closure so that a late
        assign of a closed generation (None: every generation, the hotel is deleted) is refused.

        Race-safe with assign: both hold the hotel (its row on PostgreSQL, its lock in-process), so an
        assign in flight finishes first and what it created is canceled here. Idempotent; a hotel
        billing never saw is closed all the same (its assign may still be on its way)."""
        async with self._hotel_exclusively(hotel_id):
            await self.customers.hold(hotel_id)
            # Provider calls first, writes after: SQLite's single write lock is not held during a call.
            live = await self.subscriptions.live_for_customer(hotel_id)
            canceled = await self.provider.cancel(live) if live is not None else None
            closed = await self.provider.close_customer(hotel_id, await self.subscriptions.external_customer_ids(hotel_id))
            if live is not None:
                await self._record_canceled(live, canceled)
            record = await self.customers.close(hotel_id, generation, utcnow())
            await self.subscriptions.forget_contact(hotel_id)
        billing_subscriptions_total.labels("close", "closed").inc()
        if closed.deleted:
            billing_subscriptions_total.labels("close", "provider_customer_deleted").inc(closed.deleted)
        if closed.anonymised:
            billing_subscriptions_total.labels("close", "provider_customer_anonymised").inc(closed.anonymised)
        log.info("hotel closed in billing", extra={"hotel_id": hotel_id, "generation": generation,
                                                    "customers_deleted": closed.deleted,
                                                    "customers_anonymised": closed.anonymised})
        return {
            "customer_id": hotel_id,
            "closed_generation": record["closed_generation"],
            "closed_for_good": record["closed_for_good"],
            "canceled_subscription_id": live["external_id"] if live is not None else None,
            "provider_customers_deleted": closed.deleted,
            "provider_customers_anonymised": closed.anonymised,
        }

    async def change_plan(self, hotel_id: str, plan_id: str) -> dict[str, Any]:
        """Move the live subscription to another plan; the hotel's storage quota follows."""
        plan = plan_of(plan_id)
        async with self._hotel_exclusively(hotel_id):
            return await self._change_plan(hotel_id, plan)

    async def _change_plan(self, hotel_id: str, plan: Plan) -> dict[str, Any]:
        row = await self.subscriptions.live_for_customer(hotel_id)
        if row is None:
            if await self.subscriptions.latest_for_customer(hotel_id) is None:
                raise NotFound(f"hotel '{hotel_id}' has no subscription", code="subscription_not_found")
            raise Conflict(f"the subscription of hotel '{hotel_id}' has ended; assign a new one", code="subscription_ended")
        if row["plan_id"] == plan.id:
            billing_subscriptions_total.labels("change_plan", "unchanged").inc()
            return present(row)
        found = await self.provider.change_plan(row, plan)
        values = _provider_values(found, plan.id) | {"plan_id": plan.id} | _written_now()
        await self.subscriptions.update(row["id"], values)
        await events.storage_quota(self.session, hotel_id, plan)
        billing_subscriptions_total.labels("change_plan", "plan_changed").inc()
        log.info("subscription plan changed", extra={"hotel_id": hotel_id, "from": row["plan_id"], "to": plan.id})
        return present({**row, **values})

    # --- Stripe webhooks ----------------------------------------------------------------------

    async def handle_webhook(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """Verify a Stripe event, then apply it once per event id."""
        secret = self.settings.stripe_webhook_secret
        if not secret:
            raise ServiceUnavailable("Stripe webhooks are not configured (ROOMEE_STRIPE_WEBHOOK_SECRET)",
                                     code="webhook_not_configured")
        try:
            event = stripe.Webhook.construct_event(
                payload, signature, secret, tolerance=self.settings.stripe_webhook_tolerance_seconds
            ).to_dict()
        except stripe.SignatureVerificationError:
            billing_webhook_events_total.labels("unverified", "invalid_signature").inc()
            raise BadRequest("the Stripe-Signature header does not match the payload", code="invalid_signature") from None
        except (ValueError, KeyError, TypeError):
            billing_webhook_events_total.labels("unverified", "invalid_payload").inc()
            raise BadRequest("the payload is not a Stripe event", code="invalid_payload") from None
        event_id, event_type = event.get("id"), event.get("type")
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            raise BadRequest("the payload is not a Stripe event", code="invalid_payload")
        created = event.get("created") if isinstance(event.get("created"), int) else None
        first_time = await self.webhook_events.record_once(
            {"id": event_id, "type": event_type[:100], "created": created, "outcome": "received", "received_at": utcnow()}
        )
        if not first_time:
            billing_webhook_events_total.labels(event_type, "duplicate").inc()
            return {"received": True, "duplicate": True, "outcome": "duplicate"}
        outcome = "ignored"
        if event_type in SUBSCRIPTION_EVENTS:
            outcome = await self._apply_subscription_event(event, created)
        await self.webhook_events.set_outcome(event_id, outcome)
        billing_webhook_events_total.labels(event_type, outcome).inc()
        log.info("stripe event handled", extra={"event_id": event_id, "event_type": event_type, "outcome": outcome})
        return {"received": True, "duplicate": False, "outcome": outcome}

    async def _apply_subscription_event(self, event: dict[str, Any], created: int | None) -> str:
        data = (event.get("data") or {}).get("object")
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise BadRequest("the event carries no subscription", code="invalid_payload")
        row = await self.subscriptions.by_external_id(data["id"])
        if row is None:
            return "unknown_subscription"
        if created is not None and row["last_event_created"] is not None and created < row["last_event_created"]:
            return "stale"  # Stripe does not deliver in order; a newer state is already applied
        try:
            found = provider_subscription_from_stripe(data)
        except (KeyError, TypeError, ValueError):
            raise BadRequest("the event's subscription is malformed", code="invalid_payload") from None
        if event["type"] == "customer.subscription.deleted":
            found = ProviderSubscription(found.external_id, found.external_customer_id, found.plan_id, "canceled",
                                         found.current_period_end)
        return await self._apply_provider_state(row, found, created)

    async def _apply_provider_state(self, row: dict[str, Any], found: ProviderSubscription, created: int | None) -> str:
        """Store the provider's view of a subscription; a status or plan change is emitted (and its quota)."""
        if row["ended_at"] is not None:
            return "unchanged"  # an ended subscription never comes back in Stripe
        values = _provider_values(found, row["plan_id"]) | {"updated_at": utcnow()}
        if created is not None:
            values["last_event_created"] = created
        status_changed = values["status"] != row["status"]
        plan_changed = values["plan_id"] != row["plan_id"]
        await self.subscriptions.update(row["id"], values)
        if not (status_changed or plan_changed):
            return "unchanged"
        updated = {**row, **values}
        hotel_id = row["customer_id"]
        change = "plan" if plan_changed else "status"
        await events.hotel_updated(self.session, hotel_id, change=change, subscription=_event_view(updated),
                                   previous={"status": row["status"], "productId": row["plan_id"]})
        if plan_changed:
            await events.storage_quota(self.session, hotel_id, PLANS[updated["plan_id"]])
        elif values["status"] in ENDED_STATUSES:
            # A paid subscription that ends (unpaid, canceled in Stripe) leaves the hotel on the free plan.
            await events.storage_quota(self.session, hotel_id, FALLBACK_PLAN)
        return "applied"

