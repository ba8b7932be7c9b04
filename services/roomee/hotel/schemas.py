"""Wire shapes of the hotel service (camelCase JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import EmailStr, Field, model_validator

from roomee.kit.schemas import CamelModel

Plan = Literal["free", "standard", "premium"]
HotelStatus = Literal["provisioning", "ready", "failed", "deleting", "deleted"]
StepStatus = Literal["pending", "running", "succeeded", "failed", "compensating", "compensated"]


class Administrator(CamelModel):
    email: EmailStr
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    locale: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    send_invitation: bool = Field(default=True, description=(
        "False when the caller signs the administrator up itself (`roomee bootstrap`): no invitation email."))


class HotelCreate(CamelModel):
    """The seed's body for ``POST /hotel/add``."""

    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    phone: str = Field(min_length=3, max_length=64, pattern=r"^[0-9+()./\- ]+$")
    address: str = Field(min_length=1, max_length=500)
    type: str | None = Field(default=None, max_length=64, description="Kind of establishment (hotel, resort, …).")
    settings: dict[str, Any] | None = Field(default=None, description="Free-form hotel settings.")
    plan: Plan
    administrator: Administrator


class HotelUpdate(CamelModel):
    """The fields sent change; none of them may be null (absent means unchanged)."""

    name: str = Field(default=None, min_length=1, max_length=200)
    email: EmailStr = None
    phone: str = Field(default=None, min_length=3, max_length=64, pattern=r"^[0-9+()./\- ]+$")
    address: str = Field(default=None, min_length=1, max_length=500)
    plan: Plan = Field(default=None, description="A new plan: changed through billing, with the new storage quota.")

    @model_validator(mode="after")
    def _not_empty(self) -> "HotelUpdate":
        if not self.model_fields_set or any(getattr(self, name) is None for name in self.model_fields_set):
            raise ValueError("give at least one of name, email, phone, address, plan, none of them null")
        return self


class HotelLinks(CamelModel):
    provisioning: str


class HotelAccepted(CamelModel):
    id: str
    name: str
    status: HotelStatus
    plan: Plan
    qr_link: str | None
    links: HotelLinks


class HotelOut(CamelModel):
    id: str
    name: str
    email: str
    phone: str
    address: str
    type: str | None = None
    settings: dict[str, Any] | None = None
    plan: Plan
    status: HotelStatus
    qr_link: str | None
    subscription_id: str | None
    admin_member_id: str | None
    error: str | None = Field(default=None, description="Why provisioning failed, when it did.")
    created_at: datetime
    updated_at: datetime


class StepOut(CamelModel):
    name: str
    status: StepStatus
    attempts: int
    last_error: str | None
    external_id: str | None
    started_at: datetime | None
    finished_at: datetime | None


class ProvisioningOut(CamelModel):
    hotel_id: str
    status: HotelStatus
    next_retry_at: datetime | None = Field(default=None, description=(
        "A hotel `failed` by a provider outage longer than a step's retries is retried on its own at this "
        "time (with backoff, for hours) or at once with `POST /hotel/{id}/retry`; null otherwise."))
    steps: list[StepOut] = Field(description="hotel, qr, storage, subscription, admin, announce, in order.")
    qr_link: str | None
    subscription_id: str | None
    admin_member_id: str | None
    error: str | None = None
    deletion_steps: list[StepOut] | None = Field(
        default=None, description="members, subscription, storage, qr, announce: once the hotel is being deleted."
    )


class HealthCheckOut(CamelModel):
    name: Literal["subscription", "qr"]
    healthy: bool
    reason: Literal["SubscriptionCancelled", "SubscriptionMissing", "QRMissing"] | None = Field(
        description="Why it is not healthy (CamelCase, as a Kubernetes condition's reason); null when healthy.")
    detail: str


class HotelHealthOut(CamelModel):
    hotel_id: str
    status: HotelStatus
    healthy: bool = Field(description="Every check is healthy.")
    checks: list[HealthCheckOut] = Field(description=(
        "subscription: billing asked Stripe (or its own record) whether it is still running; qr: media asked its "
        "storage whether the QR code's object exists."))
    repaired: list[Literal["subscription", "qr"]] = Field(
        default_factory=list, description="What `POST /hotel/{id}/repair` redid (empty: nothing needed it).")
    qr_link: str | None
    subscription_id: str | None
