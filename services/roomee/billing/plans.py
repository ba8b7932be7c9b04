"""The plans catalogue: what a hotel may subscribe to and the storage quota each plan grants."""

from __future__ import annotations

from dataclasses import dataclass

STORAGE_UNIT = "MO"


@dataclass(frozen=True)
class Plan:
    id: str
    name: str
    max_size: int  # storage quota, in STORAGE_UNIT (the seed's `max_size`)
    amount: int  # minor currency units per interval
    currency: str = "eur"
    interval: str = "month"

    @property
    def stripe_product_id(self) -> str:
        return f"roomee-{self.id}"

    @property
    def stripe_plan_id(self) -> str:
        return f"roomee-{self.id}-{self.interval}ly"

    @property
    def storage_quota(self) -> dict[str, int | str]:
        return {"max_size": self.max_size, "unit": STORAGE_UNIT}


PLANS: dict[str, Plan] = {
    plan.id: plan
    for plan in (
        Plan("free", "Free", max_size=1_000, amount=0),
        Plan("standard", "Standard", max_size=5_000, amount=4_900),
        # The seed's Premium: 20 000 MO ("20GB pour Premium").
        Plan("premium", "Premium", max_size=20_000, amount=14_900),
    )
}

# Where a hotel lands when its paid subscription ends.
FALLBACK_PLAN = PLANS["free"]


def plan_for_stripe_plan(stripe_plan_id: str | None) -> Plan | None:
    return next((plan for plan in PLANS.values() if plan.stripe_plan_id == stripe_plan_id), None)
