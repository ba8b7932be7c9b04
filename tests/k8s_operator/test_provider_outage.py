"""A Stripe outage longer than the saga's retry budget: the hotel's provisioning waits (hotel ``failed``
with ``nextRetryAt``, its own next try an hour away here), the Hotel shows Ready=False
ProviderUnavailable with a Warning Event, the operator retries it with backoff
(``POST /hotel/{id}/retry``, a RetryRequested Event each), and once Stripe is back the Hotel ends Ready
with one hotel and one subscription, nobody submitting it again. Stripe is localstripe behind a
proxy that cuts every connection while down; real kubectl against the stand-in."""

from __future__ import annotations

import asyncio
import json

from tests.billing.test_closure import stripe_leftovers
from tests.billing.test_faults import faulty  # noqa: F401 (fixture)
from tests.fixtures.platform import make_settings, running_platform
from tests.fixtures.stripe import WEBHOOK_SECRET, localstripe  # noqa: F401 (fixture)
from tests.hotel.support import FAST_SAGA
from tests.hotel.test_retry import WAIT_LONG
from tests.k8s_operator.test_hotel_lifecycle import EXAMPLE, NAME, condition, eventually, stored

OPERATOR_RETRIES = {"operator_outage_retry_seconds": 0.5, "operator_outage_retry_max_seconds": 2.0}


def reasons(kube, reason: str) -> list[dict]:
    return [e for e in kube.api.events_for(NAME) if e["reason"] == reason]


async def test_a_hotel_waiting_after_a_stripe_outage_is_retried_by_the_operator_until_ready(
        tmp_path, kube, run_operator, localstripe, faulty):  # noqa: F811
    await localstripe.reset()
    settings = make_settings(tmp_path / "platform", **{**FAST_SAGA, **WAIT_LONG}, billing_provider="stripe",
                             stripe_api_key=localstripe.api_key, stripe_api_url=faulty.url,
                             stripe_webhook_secret=WEBHOOK_SECRET, stripe_max_network_retries=0,
                             stripe_timeout_seconds=2.5)
    async with running_platform(settings) as platform, run_operator(kube, settings, **OPERATOR_RETRIES):
        faulty.down = True  # every connection to Stripe is cut
        await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
        await kube.kubectl("wait", "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=ProviderUnavailable",
                           f"hotel/{NAME}", "--timeout=60s")
        ready = condition(stored(kube), "Ready")
        assert ready["status"] == "False" and ready["message"].startswith("subscription: "), ready
        assert any(e["type"] == "Warning" for e in reasons(kube, "ProviderUnavailable"))
        hotel_id = stored(kube)["status"]["hotelId"]
        # Still down over several operator retries (0.5 s, 1 s, 2 s…): the hotel keeps waiting, nothing undone.
        await eventually(lambda: len(reasons(kube, "RetryRequested")) >= 2, timeout=60)
        async with platform.client() as client:
            operator = await platform.service_headers("operator")
            document = (await client.get(f"/hotel/{hotel_id}/provisioning", headers=operator)).json()
            assert document["status"] in ("failed", "provisioning"), document
            assert [s["status"] for s in document["steps"][:3]] == ["succeeded"] * 3, document

            faulty.down = False  # Stripe is back; the hotel service's own retry is an hour away
            await kube.kubectl("wait", "--for=condition=Ready", f"hotel/{NAME}", "--timeout=60s")
            hotel = json.loads((await kube.kubectl("get", "hotel", NAME, "-o", "json")).stdout)
            status = hotel["status"]
            assert condition(hotel, "SubscriptionReady")["status"] == "True"
            assert status["subscriptionId"] and status["observedGeneration"] == 1
            listed = (await client.get("/hotel", headers=operator)).json()["items"]
            assert [h["id"] for h in listed] == [hotel_id]
        customers, live = await stripe_leftovers(localstripe, hotel_id)
        assert len(customers) == 1 and [s["id"] for s in live] == [status["subscriptionId"]]
        retried = len(reasons(kube, "RetryRequested"))
        await asyncio.sleep(1.5)  # ready: no more retries
        assert len(reasons(kube, "RetryRequested")) == retried
        print(f"\nthe operator retried {retried} time(s) before the hotel was ready")
