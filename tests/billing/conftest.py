"""The billing target (with auth and members, for tokens) on each provider: local, and Stripe
through the real SDK against localstripe."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.platform import RunningPlatform, make_settings, running_platform
from tests.fixtures.stripe import WEBHOOK_SECRET, LocalStripe, localstripe  # noqa: F401 (fixture)

TARGETS = "auth,members,billing"


@dataclass
class Billing:
    running: RunningPlatform
    provider: str
    stripe: LocalStripe | None

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples (``name`` as exposed) matching ``labels``, from GET /metrics."""
        async with self.running.client() as client:
            text = (await client.get("/metrics")).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    async def hotel_headers(self) -> dict[str, str]:
        """A service token of the hotel target, which holds `billing:subscriptions`."""
        return await self.running.service_headers("hotel")


@asynccontextmanager
async def billing_platform(tmp_path, provider: str, local_stripe: LocalStripe | None, **overrides):
    overrides = {"billing_provider": provider, "stripe_webhook_secret": WEBHOOK_SECRET} | overrides
    if local_stripe is not None:
        await local_stripe.reset()
        overrides = {"stripe_api_key": local_stripe.api_key, "stripe_api_url": local_stripe.url} | overrides
    settings = make_settings(tmp_path, **overrides)
    async with running_platform(settings, TARGETS) as running:
        if local_stripe is not None:
            await local_stripe.register_webhook(f"{running.url}/sub/webhook")
        yield Billing(running, provider, local_stripe)


@pytest.fixture(params=["local", "stripe"])
async def billing(request, tmp_path):
    """The billing target on each provider in turn."""
    local_stripe = request.getfixturevalue("localstripe") if request.param == "stripe" else None
    async with billing_platform(tmp_path, request.param, local_stripe) as running:
        yield running


@pytest.fixture
async def stripe_billing(tmp_path, localstripe):
    """The billing target on Stripe (localstripe), which delivers its own signed webhooks to it."""
    async with billing_platform(tmp_path, "stripe", localstripe) as running:
        yield running
