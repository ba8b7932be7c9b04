"""Who may call which billing route: service routes need `billing:subscriptions`; a member sees only
their own hotel's subscription, and only with `manage_ecosystem`."""

from __future__ import annotations

from tests.fixtures.events import event_tap
from tests.fixtures.people import invite_and_join, make_admin

SERVICE_ROUTES = [
    ("POST", "/sub/assign-subscription/", {"customerId": "h-perm", "productId": "free"}),
    ("POST", "/sub/assign-subscription", {"customer_id": "h-perm", "product_id": "free"}),
    ("GET", "/sub/customers/h-perm/subscription", None),
    ("POST", "/sub/customers/h-perm/cancel", None),
    ("POST", "/sub/customers/h-perm/change-plan", {"productId": "premium"}),
    ("DELETE", "/sub/customers/h-perm", None),
]


async def test_service_routes_need_the_billing_scope(billing):
    running = billing.running
    async with running.client() as client, event_tap(running) as tap:
        admin = await make_admin(running, client, "admin@example.com", "Hotel P")
        staff = await invite_and_join(client, tap, admin, "staff@example.com")
        refusals = [
            ({}, 401),
            ({"Authorization": "Bearer not-a-token"}, 401),
            (admin.headers, 403),  # every permission, but a member
            (staff.headers, 403),
            (await running.service_headers("news"), 403),  # a service without the scope
            (await running.service_headers("notification"), 403),
        ]
        for headers, status in refusals:
            for method, path, body in SERVICE_ROUTES:
                response = await client.request(method, path, json=body, headers=headers)
                assert response.status_code == status, (method, path, headers, response.text)
        scope_error = await client.post("/sub/customers/h-perm/cancel", headers=await running.service_headers("news"))
        assert scope_error.json()["error"] == "insufficient_scope"
        # Nothing was created by the refused calls.
        hotel = await billing.hotel_headers()
        assert (await client.get("/sub/customers/h-perm/subscription", headers=hotel)).status_code == 404


async def test_a_member_reads_only_their_own_hotels_subscription(billing):
    running = billing.running
    hotel = await billing.hotel_headers()
    async with running.client() as client, event_tap(running) as tap:
        admin_a = await make_admin(running, client, "a@example.com", "Hotel A")
        admin_b = await make_admin(running, client, "b@example.com", "Hotel B")
        staff_a = await invite_and_join(client, tap, admin_a, "staff-a@example.com")
        none_yet = await client.get("/sub/subscription", headers=admin_a.headers)
        assert none_yet.status_code == 404 and none_yet.json()["error"] == "subscription_not_found"

        created = await client.post("/sub/assign-subscription/", json={"customerId": admin_a.hotel_id,
                                                                        "productId": "premium"}, headers=hotel)
        assert created.status_code == 201, created.text
        own = await client.get("/sub/subscription", headers=admin_a.headers)
        assert own.status_code == 200 and own.json()["id"] == created.json()["id"]
        # Hotel B's administrator sees B's (none), never A's.
        other = await client.get("/sub/subscription", headers=admin_b.headers)
        assert other.status_code == 404 and created.json()["id"] not in other.text
        denied = await client.get("/sub/subscription", headers=staff_a.headers)
        assert denied.status_code == 403 and denied.json()["error"] == "permission_denied"
        assert (await client.get("/sub/subscription", headers=hotel)).status_code == 403
        assert (await client.get("/sub/subscription")).status_code == 401
        # A member cannot reach another hotel's subscription through the service routes either.
        for headers in (admin_a.headers, admin_b.headers):
            response = await client.get(f"/sub/customers/{admin_a.hotel_id}/subscription", headers=headers)
            assert response.status_code == 403

        # Public and signature-guarded routes need no token.
        assert (await client.get("/sub/plans")).status_code == 200
