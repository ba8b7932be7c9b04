"""Wire shapes of the billing service (camelCase; the seed's snake_case request body is accepted too)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AliasChoices, EmailStr, Field, StringConstraints

from roomee.kit.schemas import CamelModel

HotelId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
PlanId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


class StorageQuota(CamelModel):
    max_size: int = Field(description="Storage quota of the plan.")
    unit: Literal["MO"] = "MO"


class PlanOut(CamelModel):
    id: str = Field(description="`free`, `standard` or `premium`: the `productId` to subscribe to.")
    name: str
    storage_quota: StorageQuota
    amount: int = Field(description="Price per interval in minor units (cents).")
    currency: str
    interval: str


class AssignRequest(CamelModel):
    customer_id: HotelId = Field(
        validation_alias=AliasChoices("customerId", "customer_id"), description="The hotel id (Stripe customer)."
    )
    product_id: PlanId = Field(validation_alias=AliasChoices("productId", "product_id"), description="The plan id.")
    email: EmailStr | None = Field(default=None, description="Billing email of the hotel (new customers only).")
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    generation: int = Field(default=0, ge=0, le=1_000_000, description=(
        "The hotel's provisioning attempt (0 first, +1 per retry after an undo). Billing refuses an assign "
        "whose generation was closed (`customer_closed`), so a late request cannot leave a subscription."))


class ChangePlanRequest(CamelModel):
    product_id: PlanId = Field(validation_alias=AliasChoices("productId", "product_id"), description="The new plan id.")


class SubscriptionOut(CamelModel):
    id: str = Field(description="The provider's subscription id (Stripe's `sub_…`).")
    customer_id: str = Field(description="The hotel id.")
    product_id: str = Field(description="The plan id.")
    status: str = Field(description="Stripe's status: `active`, `trialing`, `incomplete`, `past_due`, `unpaid`, `canceled`…")
    current_period_end: datetime | None
    storage_quota: StorageQuota
    provider: str = Field(description="`local` or `stripe`.")
    provider_customer_id: str | None = Field(description="The provider's customer id (Stripe's `cus_…`).")
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None


class WebhookAck(CamelModel):
    received: bool = True
    duplicate: bool = Field(description="The event id was handled before; nothing was done this time.")
    outcome: str = Field(description="`applied`, `unchanged`, `stale`, `unknown_subscription` or `ignored`.")


class CustomerClosedOut(CamelModel):
    customer_id: str = Field(description="The hotel id.")
    closed_generation: int | None = Field(description="Assigns up to this generation are refused from now on.")
    closed_for_good: bool = Field(description="Every assign is refused (the hotel was deleted).")
    canceled_subscription_id: str | None = Field(description="The live subscription this call canceled, if any.")
    provider_customers_deleted: int = Field(description="Provider (Stripe) customers of the hotel deleted.")
    provider_customers_anonymised: int = Field(
        description="Provider customers kept by the provider, with their name, email and hotel id wiped.")
