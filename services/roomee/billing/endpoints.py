"""HTTP routes of the billing service (api-stripe). The seed's path is kept exactly."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.billing import schemas
from roomee.billing.plans import PLANS
from roomee.billing.service import BillingService, present_plan
from roomee.kit.auth import MANAGE_ECOSYSTEM, Principal, require_permission, require_service_scope
from roomee.kit.deps import context_of, session_for
from roomee.kit.platform import ServiceContext

router = APIRouter(tags=["billing"])

SCOPE = "billing:subscriptions"
Session = Annotated[AsyncSession, Depends(session_for("billing"), scope="function")]
Context = Annotated[ServiceContext, Depends(context_of("billing"))]
Caller = Annotated[Principal, Depends(require_service_scope(SCOPE))]
HotelId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="The hotel id.")]


def _service(session: Session, ctx: Context) -> BillingService:
    return BillingService(session, ctx)


Billing = Annotated[BillingService, Depends(_service)]


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"example": {"error": "code", "detail": "..."}}}}


AUTH_ERRORS = {401: _error("No or an invalid bearer token."), 403: _error(f"Not a service token holding `{SCOPE}`.")}
PROVIDER_ERRORS = {
    402: _error("`payment_failed`: Stripe declined the payment."),
    502: _error("`provider_rejected`: Stripe refused the request."),
    503: _error("`provider_unavailable`: Stripe did not answer; retry (the call is idempotent)."),
}
NOT_FOUND = {404: _error("`subscription_not_found`: the hotel never had a subscription.")}
VALIDATION = {422: _error("`validation_error` or `unknown_plan`.")}


@router.get("/sub/plans", response_model=list[schemas.PlanOut])
async def list_plans() -> list[dict]:
    """The plans a hotel may subscribe to, with the storage quota each grants (no token needed)."""
    return [present_plan(plan) for plan in PLANS.values()]


@router.post(
    "/sub/assign-subscription/",
    response_model=schemas.SubscriptionOut,
    status_code=201,
    responses={200: {"description": "The hotel already had this subscription (a retry).", "model": schemas.SubscriptionOut},
               409: _error("`subscription_exists`: the hotel has a live subscription to another plan (use change-plan); "
                           "`customer_closed`: the hotel was closed (undone or deleted) for this generation."),
               **AUTH_ERRORS, **VALIDATION, **PROVIDER_ERRORS},
)
async def assign_subscription(body: schemas.AssignRequest, response: Response, service: Billing, _caller: Caller):
    """Subscribe a hotel (`customerId`) to a plan (`productId`); the seed's `customer_id`/`product_id` work too.

    Idempotent per hotel: while the hotel's subscription is live, a retry (even a concurrent one)
    answers 200 with the same subscription. Service token with `billing:subscriptions`.
    """
    subscription, created = await service.assign(body.model_dump())
    response.status_code = 201 if created else 200
    return subscription


router.add_api_route(
    "/sub/assign-subscription",
    assign_subscription,
    methods=["POST"],
    response_model=schemas.SubscriptionOut,
    status_code=201,
    include_in_schema=False,
)


@router.get(
    "/sub/customers/{customer_id}/subscription",
    response_model=schemas.SubscriptionOut,
    responses={**AUTH_ERRORS, **NOT_FOUND, 502: PROVIDER_ERRORS[502], 503: PROVIDER_ERRORS[503]},
)
async def get_subscription(
    customer_id: HotelId, service: Billing, _caller: Caller,
    refresh: Annotated[bool, Query(description=(
        "Ask the provider (Stripe) for the live subscription's state first and record it, as its webhook "
        "would: one canceled behind the platform's back comes back `canceled`."))] = False,
):
    """The hotel's live subscription, else the one that ended last (status `canceled`)."""
    return await service.get(customer_id, refresh=refresh)


@router.post(
    "/sub/customers/{customer_id}/cancel",
    response_model=schemas.SubscriptionOut,
    responses={**AUTH_ERRORS, **NOT_FOUND, **PROVIDER_ERRORS},
)
async def cancel_subscription(customer_id: HotelId, service: Billing, _caller: Caller):
    """Cancel the hotel's subscription at once. Idempotent: an ended one is returned as it is."""
    return await service.cancel(customer_id)


@router.delete(
    "/sub/customers/{customer_id}",
    response_model=schemas.CustomerClosedOut,
    responses={**AUTH_ERRORS, **VALIDATION, **PROVIDER_ERRORS},
)
async def close_customer(
    customer_id: HotelId, service: Billing, _caller: Caller,
    generation: Annotated[int | None, Query(ge=0, le=1_000_000, description=(
        "Close provisioning attempts up to this generation only (a saga's undo; a retry assigns with a higher "
        "one). Omitted: the hotel is closed for good (deleted)."))] = None,
):
    """Close a hotel in billing: cancel its live subscription, delete its Stripe customer (or wipe its
    name, email and hotel id where Stripe keeps it), forget its contact details, and refuse every later
    assign of a closed generation with 409 `customer_closed`, so a late request leaves nothing behind.

    Idempotent, and valid for a hotel billing never saw (its assign may still be on its way).
    """
    return await service.close(customer_id, generation)


@router.post(
    "/sub/customers/{customer_id}/change-plan",
    response_model=schemas.SubscriptionOut,
    responses={409: _error("`subscription_ended`: the subscription was canceled; assign a new one."),
               **AUTH_ERRORS, **NOT_FOUND, **VALIDATION, **PROVIDER_ERRORS},
)
async def change_plan(customer_id: HotelId, body: schemas.ChangePlanRequest, service: Billing, _caller: Caller):
    """Move the hotel's live subscription to another plan (prorated by Stripe).

    Emits `roomee.storage.media` with the new plan's quota. The same plan again changes nothing.
    """
    return await service.change_plan(customer_id, body.product_id)


@router.get(
    "/sub/subscription",
    response_model=schemas.SubscriptionOut,
    responses={401: _error("No or an invalid bearer token."), 403: _error("`permission_denied`: needs `manage_ecosystem`."),
               **NOT_FOUND},
)
async def my_hotel_subscription(
    service: Billing, principal: Annotated[Principal, Depends(require_permission(MANAGE_ECOSYSTEM))]
):
    """The subscription of the caller's own hotel (a member with `manage_ecosystem`)."""
    return await service.get(principal.hotel_id)


@router.post(
    "/sub/webhook",
    response_model=schemas.WebhookAck,
    responses={400: _error("`invalid_signature` or `invalid_payload`: nothing was changed."),
               503: _error("`webhook_not_configured`: no signing secret is set.")},
)
async def stripe_webhook(
    request: Request,
    service: Billing,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
):
    """Stripe events, verified with the endpoint's signing secret and applied once per event id.

    A subscription's status change (`past_due`, `canceled`…) or plan change is stored and emitted as
    `roomee.notification.hotel.updated`; a plan change, or a subscription that ends, also emits
    `roomee.storage.media` with the quota the hotel now has.
    """
    return await service.handle_webhook(await request.body(), stripe_signature)
