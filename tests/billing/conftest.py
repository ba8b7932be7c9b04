"""The billing target (with auth and members, for tokens) on each provider: local, and Stripe
through the real SDK against localstripe."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.fixtures.platform import RunningPlatform, make_settings, running_platform
from tests.fixtures.stripe import WEBHOOK_SECRET, LocalStripe, localstripe  # noqa: F401 (fixture)

TARGETS = "auth,members,billing"


@dataclass
class Billing:
    running: RunningPlatform
    provider: str
    stripe: LocalStripe | None

    async def hotel_headers(self) -> dict[str, str]:
        """A service token of the hotel target, which holds `billing:subscriptions`."""
        return await self.running.service_headers("hotel")


@pytest.fixture(params=["local", "stripe"])
async def billing(request, tmp_path):
    overrides = {"billing_provider": request.param, "stripe_webhook_secret": WEBHOOK_SECRET}
    local_stripe = None
    if request.param == "stripe":
        local_stripe = request.getfixturevalue("localstripe")
        await local_stripe.reset()
        overrides |= {"stripe_api_key": local_stripe.api_key, "stripe_api_url": local_stripe.url}
    settings = make_settings(tmp_path, **overrides)
    async with running_platform(settings, TARGETS) as running:
        if local_stripe is not None:
            await local_stripe.register_webhook(f"{running.url}/sub/webhook")
        yield Billing(running, request.param, local_stripe)
