"""Billing providers (after Django's email backends): one interface, chosen by ``billing_provider``.

``local`` keeps subscriptions in this service's own tables (the embedded default); ``stripe`` keeps
them in Stripe through the official SDK. Every create carries a Stripe idempotency key, and is
preceded by a lookup (the customer by the hotel id in its metadata, the subscription by customer),
so an attempt whose answer was lost is found rather than repeated even where keys are not honoured.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar

import stripe
from prometheus_client import Histogram

from roomee.billing.plans import PLANS, Plan, plan_for_stripe_plan
from roomee.kit.clock import utcnow
from roomee.kit.errors import RoomeeError, ServiceUnavailable, UpstreamError
from roomee.kit.metrics import LATENCY_BUCKETS
from roomee.kit.settings import Settings

log = logging.getLogger("roomee.billing.provider")

billing_provider_request_duration_seconds = Histogram(
    "billing_provider_request_duration_seconds",
    "Calls to the billing provider (Stripe) by operation and outcome.",
    ["provider", "operation", "outcome"],
    buckets=LATENCY_BUCKETS,
)

ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})
T = TypeVar("T")


class PaymentRequired(RoomeeError):
    status_code, code = 402, "payment_failed"


@dataclass(frozen=True)
class ProviderSubscription:
    external_id: str
    external_customer_id: str | None
    plan_id: str | None  # None: a plan this platform does not sell (left as stored)
    status: str
    current_period_end: datetime | None


@dataclass(frozen=True)
class Customer:
    hotel_id: str
    email: str | None
    name: str | None
    known_external_id: str | None  # from an earlier subscription of the same hotel


@dataclass(frozen=True)
class ClosedCustomers:
    """What closing a hotel did at the provider: customers deleted, and customers kept (Stripe refused
    the delete) with their name, email and hotel id wiped."""

    deleted: int = 0
    anonymised: int = 0


class BillingProvider(Protocol):
    name: str

    async def subscribe(self, customer: Customer, plan: Plan, assignment_id: str) -> ProviderSubscription: ...

    async def cancel(self, stored: dict[str, Any]) -> ProviderSubscription: ...

    async def retrieve(self, stored: dict[str, Any]) -> ProviderSubscription: ...

    async def change_plan(self, stored: dict[str, Any], plan: Plan) -> ProviderSubscription: ...

    async def close_customer(self, hotel_id: str, known_external_ids: list[str]) -> ClosedCustomers: ...

    async def close(self) -> None: ...


def provider_from_settings(settings: Settings) -> BillingProvider:
    if settings.billing_provider == "stripe":
        return StripeProvider(settings)
    return LocalProvider(settings)


def one_interval_later(moment: datetime, interval: str) -> datetime:
    if interval == "year":
        return _add_months(moment, 12)
    if interval == "week":
        return moment + timedelta(weeks=1)
    if interval == "day":
        return moment + timedelta(days=1)
    return _add_months(moment, 1)


def _add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


class LocalProvider:
    """Subscriptions that exist only in this service's tables: no payment is taken."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.trial_days = settings.billing_trial_days

    async def subscribe(self, customer: Customer, plan: Plan, assignment_id: str) -> ProviderSubscription:
        now = utcnow()
        trial = plan.amount > 0 and self.trial_days > 0
        return ProviderSubscription(
            external_id=f"sub_local_{uuid.UUID(assignment_id).hex}",
            external_customer_id=customer.known_external_id or f"cus_local_{uuid.uuid5(uuid.NAMESPACE_URL, customer.hotel_id).hex}",
            plan_id=plan.id,
            status="trialing" if trial else "active",
            current_period_end=now + timedelta(days=self.trial_days) if trial else one_interval_later(now, plan.interval),
        )

    async def cancel(self, stored: dict[str, Any]) -> ProviderSubscription:
        return ProviderSubscription(
            stored["external_id"], stored["external_customer_id"], stored["plan_id"], "canceled", stored["current_period_end"]
        )

    async def retrieve(self, stored: dict[str, Any]) -> ProviderSubscription:
        """Its own record is the truth: nothing can end it behind this service's back."""
        return ProviderSubscription(
            stored["external_id"], stored["external_customer_id"], stored["plan_id"], stored["status"],
            stored["current_period_end"],
        )

    async def change_plan(self, stored: dict[str, Any], plan: Plan) -> ProviderSubscription:
        return ProviderSubscription(
            stored["external_id"], stored["external_customer_id"], plan.id, stored["status"], stored["current_period_end"]
        )

    async def close_customer(self, hotel_id: str, known_external_ids: list[str]) -> ClosedCustomers:
        return ClosedCustomers()  # the customer exists only in this service's rows

    async def close(self) -> None:
        return None


class StripeProvider:
    """Stripe through the official SDK (async, over httpx). Plans are Stripe's legacy plans."""

    name = "stripe"

    def __init__(self, settings: Settings) -> None:
        if not settings.stripe_api_key:
            raise RuntimeError("ROOMEE_STRIPE_API_KEY is required when ROOMEE_BILLING_PROVIDER=stripe")
        self.trial_days = settings.billing_trial_days
        self._http = stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds)
        self.client = stripe.StripeClient(
            settings.stripe_api_key,
            base_addresses={"api": settings.stripe_api_url} if settings.stripe_api_url else None,
            http_client=self._http,
            max_network_retries=settings.stripe_max_network_retries,
        )
        self._catalogue_ready = False
        self._catalogue_lock = asyncio.Lock()
        # Stripe's search API; a stand-in without it (localstripe) is searched by listing.
        self._search_supported = True

    async def close(self) -> None:
        await self._http.close_async()

    # --- calls --------------------------------------------------------------------------------

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """One SDK call, timed; Stripe's failures become the platform's errors."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await call()
        except stripe.CardError as exc:
            outcome = "declined"
            raise PaymentRequired(exc.user_message or "the payment was declined") from None
        except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
            outcome = "unavailable"
            raise ServiceUnavailable(f"Stripe is unavailable: {type(exc).__name__}", code="provider_unavailable") from None
        except stripe.AuthenticationError:
            outcome = "unavailable"
            raise ServiceUnavailable("Stripe refused the API key", code="provider_misconfigured") from None
        except stripe.StripeError:
            outcome = "error"
            raise
        finally:
            billing_provider_request_duration_seconds.labels(self.name, operation, outcome).observe(
                time.perf_counter() - started
            )

    @staticmethod
    def _missing(exc: stripe.StripeError) -> bool:
        return exc.http_status == 404 or exc.code == "resource_missing"

    @staticmethod
    def _rejected(operation: str, exc: stripe.StripeError) -> UpstreamError:
        log.error("Stripe rejected %s: %s", operation, exc.user_message or exc, extra={"stripe_code": exc.code})
        return UpstreamError(f"Stripe rejected {operation}: {exc.user_message or exc.code or 'invalid request'}",
                             code="provider_rejected")

    # --- catalogue ----------------------------------------------------------------------------

    async def ensure_catalogue(self) -> None:
        """Create the products and plans this platform sells, once per process, if Stripe lacks them."""
        if self._catalogue_ready:
            return
        async with self._catalogue_lock:
            if self._catalogue_ready:
                return
            for plan in PLANS.values():
                await self._ensure_plan(plan)
            self._catalogue_ready = True

    async def _ensure_plan(self, plan: Plan) -> None:
        v1 = self.client.v1
        try:
            await self._call("plan.retrieve", lambda: v1.plans.retrieve_async(plan.stripe_plan_id))
            return
        except stripe.StripeError as exc:
            if not self._missing(exc):
                raise self._rejected("plan.retrieve", exc) from None
        try:
            await self._call("product.retrieve", lambda: v1.products.retrieve_async(plan.stripe_product_id))
        except stripe.StripeError as exc:
            if not self._missing(exc):
                raise self._rejected("product.retrieve", exc) from None
            await self._create_ignoring_duplicate("product.create", lambda: v1.products.create_async(
                {"id": plan.stripe_product_id, "name": f"Roomee {plan.name}", "metadata": {"roomee_plan": plan.id}},
                {"idempotency_key": f"roomee-product-{plan.stripe_product_id}"},
            ))
        await self._create_ignoring_duplicate("plan.create", lambda: v1.plans.create_async(
            {
                "id": plan.stripe_plan_id,
                "product": plan.stripe_product_id,
                "amount": plan.amount,
                "currency": plan.currency,
                "interval": plan.interval,
                "nickname": plan.name,
                "metadata": {"roomee_plan": plan.id, "storage_max_size": str(plan.max_size), "storage_unit": "MO"},
            },
            {"idempotency_key": f"roomee-plan-{plan.stripe_plan_id}"},
        ))

    async def _create_ignoring_duplicate(self, operation: str, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            await self._call(operation, call)
        except stripe.StripeError as exc:
            if exc.code != "resource_already_exists":  # another replica created it first
                raise self._rejected(operation, exc) from None

    # --- subscriptions ------------------------------------------------------------------------

    async def subscribe(self, customer: Customer, plan: Plan, assignment_id: str) -> ProviderSubscription:
        await self.ensure_catalogue()
        try:
            customer_id = customer.known_external_id or await self._find_customer(customer.hotel_id)
            if customer_id is None:
                customer_id = await self._create_customer(customer)
            found = await self._live_subscription(customer_id, customer.hotel_id)
            if found is not None:
                log.info("adopting the Stripe subscription %s of hotel %s", found["id"], customer.hotel_id)
                adopted = self._convert(found)
                if adopted.plan_id != plan.id:
                    return await self._switch_plan(found, plan)
                return adopted
            params: dict[str, Any] = {
                "customer": customer_id,
                "items": [{"plan": plan.stripe_plan_id}],
                "metadata": {"roomee_hotel_id": customer.hotel_id, "roomee_subscription_id": assignment_id},
            }
            if plan.amount > 0 and self.trial_days > 0:
                params["trial_period_days"] = self.trial_days
            created = await self._call("subscription.create", lambda: self.client.v1.subscriptions.create_async(
                params, {"idempotency_key": f"roomee-subscription-{assignment_id}"}
            ))
            return self._convert(created.to_dict())
        except stripe.StripeError as exc:
            raise self._rejected("subscribe", exc) from None

    async def _find_customer(self, hotel_id: str) -> str | None:
        found = await self._find_customers(hotel_id, limit=1)
        return found[0] if found else None

    async def _find_customers(self, hotel_id: str, limit: int = 100) -> list[str]:
        """The ids of the Stripe customers whose metadata names this hotel (at most ``limit``)."""
        v1 = self.client.v1
        if self._search_supported:
            try:
                result = await self._call("customer.search", lambda: v1.customers.search_async(
                    {"query": f"metadata['roomee_hotel_id']:'{hotel_id}'", "limit": limit}
                ))
                return [found.id for found in result.data]
            except stripe.StripeError as exc:
                if exc.http_status != 404:
                    raise
                self._search_supported = False
        listing = await self._call("customer.list", lambda: v1.customers.list_async({"limit": 100}))
        ids = []
        async for found in listing.auto_paging_iter():
            if (found.to_dict().get("metadata") or {}).get("roomee_hotel_id") == hotel_id:
                ids.append(found.id)
                if len(ids) == limit:
                    break
        return ids

    async def close_customer(self, hotel_id: str, known_external_ids: list[str]) -> ClosedCustomers:
        """End every live subscription of the hotel's customers and delete them; a customer Stripe
        will not delete is kept without its name, email and hotel id."""
        customers = self.client.v1.customers
        try:
            ids = dict.fromkeys([*known_external_ids, *await self._find_customers(hotel_id)])
        except stripe.StripeError as exc:
            raise self._rejected("customer search", exc) from None
        deleted = anonymised = 0
        for customer_id in ids:
            try:
                await self._end_live_subscriptions(customer_id)
                await self._call("customer.delete", lambda cid=customer_id: customers.delete_async(cid))
                deleted += 1
            except stripe.StripeError as exc:
                if self._missing(exc):
                    continue  # already deleted (an earlier attempt whose answer was lost)
                log.warning("Stripe kept customer %s of hotel %s (%s): anonymising it", customer_id, hotel_id,
                            exc.code or exc.http_status)
                try:
                    await self._call("customer.update", lambda cid=customer_id: customers.update_async(
                        cid, {"name": "", "email": "", "description": "", "metadata": {"roomee_hotel_id": ""}}
                    ))
                except stripe.StripeError as again:
                    raise self._rejected("customer anonymisation", again) from None
                anonymised += 1
        return ClosedCustomers(deleted, anonymised)

    async def _end_live_subscriptions(self, customer_id: str) -> None:
        listing = await self._call("subscription.list", lambda: self.client.v1.subscriptions.list_async(
            {"customer": customer_id, "status": "all", "limit": 100}
        ))
        for found in listing.data:
            if found.status not in ENDED_STATUSES:
                await self._call("subscription.cancel",
                                 lambda sid=found.id: self.client.v1.subscriptions.cancel_async(sid))

    async def _create_customer(self, customer: Customer) -> str:
        params: dict[str, Any] = {"metadata": {"roomee_hotel_id": customer.hotel_id}}
        if customer.email:
            params["email"] = customer.email
        if customer.name:
            params["name"] = customer.name
        created = await self._call("customer.create", lambda: self.client.v1.customers.create_async(
            params, {"idempotency_key": f"roomee-customer-{customer.hotel_id}"}
        ))
        return created.id

    async def _live_subscription(self, customer_id: str, hotel_id: str) -> dict[str, Any] | None:
        listing = await self._call("subscription.list", lambda: self.client.v1.subscriptions.list_async(
            {"customer": customer_id, "status": "all", "limit": 100}
        ))
        live = [s for s in (found.to_dict() for found in listing.data) if s.get("status") not in ENDED_STATUSES]
        ours = [s for s in live if (s.get("metadata") or {}).get("roomee_hotel_id") == hotel_id]
        return (ours or live or [None])[0]

    async def cancel(self, stored: dict[str, Any]) -> ProviderSubscription:
        subscriptions = self.client.v1.subscriptions
        try:
            canceled = await self._call("subscription.cancel", lambda: subscriptions.cancel_async(stored["external_id"]))
            return self._convert(canceled.to_dict())
        except stripe.StripeError as exc:
            if not (self._missing(exc) or exc.http_status == 400):
                raise self._rejected("cancel", exc) from None
        # Already gone or already canceled in Stripe (a dashboard, a webhook we have not seen yet).
        converted = await self.retrieve(stored)
        if converted.status not in ENDED_STATUSES:
            raise UpstreamError("Stripe would not cancel the subscription", code="provider_rejected")
        return converted

    async def retrieve(self, stored: dict[str, Any]) -> ProviderSubscription:
        """The subscription as Stripe has it now; one Stripe no longer knows has ended."""
        subscriptions = self.client.v1.subscriptions
        try:
            current = await self._call("subscription.retrieve", lambda: subscriptions.retrieve_async(stored["external_id"]))
        except stripe.StripeError as exc:
            if not self._missing(exc):
                raise self._rejected("retrieve", exc) from None
            return ProviderSubscription(stored["external_id"], stored["external_customer_id"], stored["plan_id"],
                                        "canceled", stored["current_period_end"])
        return self._convert(current.to_dict())

    async def change_plan(self, stored: dict[str, Any], plan: Plan) -> ProviderSubscription:
        await self.ensure_catalogue()
        subscriptions = self.client.v1.subscriptions
        try:
            current = await self._call("subscription.retrieve", lambda: subscriptions.retrieve_async(stored["external_id"]))
            return await self._switch_plan(current.to_dict(), plan)
        except stripe.StripeError as exc:
            raise self._rejected("change plan", exc) from None

    async def _switch_plan(self, current: dict[str, Any], plan: Plan) -> ProviderSubscription:
        item = current["items"]["data"][0]
        updated = await self._call("subscription.update", lambda: self.client.v1.subscriptions.update_async(
            current["id"],
            # An update sets a state, so repeating it is harmless: no idempotency key (one reused within
            # 24 h would replay an older switch, e.g. premium → standard → premium).
            {"items": [{"id": item["id"], "plan": plan.stripe_plan_id}], "metadata": {"roomee_plan": plan.id}},
        ))
        return self._convert(updated.to_dict())

    @staticmethod
    def _convert(subscription: dict[str, Any]) -> ProviderSubscription:
        return provider_subscription_from_stripe(subscription)


def provider_subscription_from_stripe(subscription: dict[str, Any]) -> ProviderSubscription:
    """Our view of a Stripe subscription object (from the API or a webhook event)."""
    items = (subscription.get("items") or {}).get("data") or []
    first_item = items[0] if items else {}
    stripe_plan = subscription.get("plan") or first_item.get("plan") or {}
    stripe_plan_id = stripe_plan.get("id") if isinstance(stripe_plan, dict) else stripe_plan
    plan = plan_for_stripe_plan(stripe_plan_id)
    # Newer API versions moved the period to the items; a trial's first period ends with the trial.
    period_end = subscription.get("current_period_end") or first_item.get("current_period_end") or subscription.get("trial_end")
    customer = subscription.get("customer")
    return ProviderSubscription(
        external_id=subscription["id"],
        external_customer_id=customer.get("id") if isinstance(customer, dict) else customer,
        plan_id=plan.id if plan else None,
        status=str(subscription.get("status") or "incomplete"),
        current_period_end=datetime.fromtimestamp(int(period_end), timezone.utc) if period_end else None,
    )
