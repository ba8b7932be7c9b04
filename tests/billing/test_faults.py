"""Stripe failing under billing: 5xx, lost answers, timeouts and outages delay a subscription, never
duplicate it or leave half of it recorded. A fault-injecting proxy sits in front of localstripe."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from tests.billing.conftest import billing_platform
from tests.fixtures.platform import free_port


@dataclass
class Fault:
    method: str
    path: str
    mode: str  # "error": 500 without forwarding; "lose": forward, then answer 500; "hang": answer too late;
    # "hold": wait until ``gate`` is set (``reached`` tells the request is there), then forward
    times: int = 1
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    reached: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class FaultyStripe:
    """Forwards to localstripe, except for the requests a fault matches; records every request."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False  # every connection is cut, as when Stripe is unreachable

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.method, request.path))
        if self.down:
            request.transport.close()
            return web.Response(status=503)
        fault = next((f for f in self.faults if f.times > 0 and f.method == request.method and f.path == request.path), None)
        if fault is not None:
            fault.times -= 1
            if fault.mode == "error":
                return web.json_response({"error": {"type": "api_error", "message": "injected"}}, status=500)
            if fault.mode == "hang":
                await asyncio.sleep(4)
            if fault.mode == "hold":
                fault.reached.set()
                await fault.gate.wait()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, self.upstream + request.path_qs, data=body, headers=headers) as answer:
                payload, status = await answer.read(), answer.status
        if fault is not None and fault.mode == "lose":
            return web.json_response({"error": {"type": "api_error", "message": "answer lost"}}, status=500)
        return web.Response(body=payload, status=status, content_type="application/json")


@pytest.fixture
async def faulty(localstripe):
    proxy = FaultyStripe(localstripe.url)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    proxy.url = f"http://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        await runner.cleanup()


@pytest.fixture
async def billing_behind_faults(tmp_path, localstripe, faulty):
    # The SDK's own retries are off: what is tested is billing's find-before-create, which is what
    # protects against duplicates where idempotency keys are not honoured (localstripe).
    async with billing_platform(tmp_path, "stripe", localstripe, stripe_api_url=faulty.url,
                                stripe_max_network_retries=0, stripe_timeout_seconds=2.5) as running:
        yield running


async def _stripe_state(local_stripe):
    sdk, http = local_stripe.client()
    try:
        subscriptions = [s.to_dict() for s in (await sdk.v1.subscriptions.list_async({"status": "all"})).data]
        customers = [c.to_dict() for c in (await sdk.v1.customers.list_async()).data]
        return subscriptions, customers
    finally:
        await http.close_async()


ASSIGN = {"customerId": "hotel-f", "productId": "premium"}


@pytest.mark.parametrize("fault", [
    Fault("POST", "/v1/subscriptions", "error"),
    Fault("POST", "/v1/subscriptions", "lose"),
    Fault("POST", "/v1/customers", "lose"),
    Fault("POST", "/v1/subscriptions", "hang"),
    Fault("GET", "/v1/subscriptions", "error"),
], ids=["create-5xx", "create-answer-lost", "customer-answer-lost", "create-timeout", "lookup-5xx"])
async def test_a_failed_assign_is_retried_into_exactly_one_subscription(billing_behind_faults, faulty, fault):
    billing = billing_behind_faults
    headers = await billing.hotel_headers()
    async with billing.running.client() as client:
        assert (await client.get("/sub/plans")).status_code == 200
        faulty.faults.append(fault)
        failed = await client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers)
        assert failed.status_code == 503, failed.text
        assert failed.json()["error"] == "provider_unavailable"
        assert fault.times == 0, faulty.seen
        # Nothing half-recorded here.
        assert (await client.get("/sub/customers/hotel-f/subscription", headers=headers)).status_code == 404

        if fault.mode == "hang":
            await asyncio.sleep(3)  # the late request lands in Stripe meanwhile (4 s after it was sent)
        retried = await client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers)
        assert retried.status_code == 201, retried.text
        again = await client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers)
        assert again.status_code == 200 and again.json()["id"] == retried.json()["id"]

    subscriptions, customers = await _stripe_state(billing.stripe)
    assert [s["id"] for s in subscriptions] == [retried.json()["id"]]
    assert [c["id"] for c in customers] == [retried.json()["providerCustomerId"]]
    assert customers[0]["metadata"] == {"roomee_hotel_id": "hotel-f"}


async def test_stripe_down_means_503_then_recovery(billing_behind_faults, faulty):
    billing = billing_behind_faults
    headers = await billing.hotel_headers()
    async with billing.running.client() as client:
        created = await client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers)
        assert created.status_code == 201
        unavailable_before = await billing.metric("billing_provider_request_duration_seconds_count",
                                                  outcome="unavailable")
        faulty.down = True
        try:
            for method, path, body in [
                ("POST", "/sub/customers/hotel-f/change-plan", {"productId": "standard"}),
                ("POST", "/sub/customers/hotel-f/cancel", None),
                ("POST", "/sub/assign-subscription/", {"customerId": "hotel-g", "productId": "free"}),
            ]:
                response = await client.request(method, path, json=body, headers=headers)
                assert response.status_code == 503, (path, response.text)
                assert response.json()["error"] == "provider_unavailable"
            # Reads do not need Stripe, and nothing changed.
            current = await client.get("/sub/customers/hotel-f/subscription", headers=headers)
            assert current.json()["productId"] == "premium" and current.json()["status"] == created.json()["status"]
        finally:
            faulty.down = False
        assert await billing.metric("billing_provider_request_duration_seconds_count",
                                    outcome="unavailable") >= unavailable_before + 3
        canceled = await client.post("/sub/customers/hotel-f/cancel", headers=headers)
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    subscriptions, _ = await _stripe_state(billing.stripe)
    assert [s["status"] for s in subscriptions] == ["canceled"]


async def test_a_cancel_or_plan_change_whose_answer_was_lost_is_finished_by_the_retry(billing_behind_faults, faulty):
    billing = billing_behind_faults
    headers = await billing.hotel_headers()
    async with billing.running.client() as client:
        created = (await client.post("/sub/assign-subscription/", json=ASSIGN, headers=headers)).json()
        path = f"/v1/subscriptions/{created['id']}"

        faulty.faults.append(Fault("POST", path, "lose"))
        lost = await client.post("/sub/customers/hotel-f/change-plan", json={"productId": "standard"}, headers=headers)
        assert lost.status_code == 503, lost.text
        assert (await client.get("/sub/customers/hotel-f/subscription", headers=headers)).json()["productId"] == "premium"
        changed = await client.post("/sub/customers/hotel-f/change-plan", json={"productId": "standard"}, headers=headers)
        assert changed.status_code == 200 and changed.json()["productId"] == "standard"

        faulty.faults.append(Fault("DELETE", path, "lose"))
        lost = await client.post("/sub/customers/hotel-f/cancel", headers=headers)
        assert lost.status_code == 503, lost.text
        assert (await client.get("/sub/customers/hotel-f/subscription", headers=headers)).json()["status"] != "canceled"
        canceled = await client.post("/sub/customers/hotel-f/cancel", headers=headers)
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "canceled"

    subscriptions, _ = await _stripe_state(billing.stripe)
    assert [(s["id"], s["status"], s["plan"]["id"]) for s in subscriptions] == [
        (created["id"], "canceled", "roomee-standard-monthly")
    ]
