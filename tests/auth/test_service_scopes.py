"""Service tokens: each platform client has its own credentials and only its own scopes."""

from __future__ import annotations

import jwt

from roomee.kit.auth import SERVICE_SCOPES, scopes_of
from tests.fixtures.people import make_admin

# Every service-only route and the scope it checks.
SERVICE_ROUTES = [
    ("POST", "/members/add/hotel/member", {"hotelId": "h-1", "hotelName": "H", "email": "x@h.example.com"},
     "members:add-hotel-member"),
    ("GET", "/members/get/by/hotel_id/h-1", None, "members:read-hotel-members"),
    ("GET", "/members/get/with/x@h.example.com", None, "members:profiles"),
    ("POST", "/members/sync", {"limit": 1}, "members:sync"),
    ("GET", "/members/invitations/abcdefghijkl", None, "members:invitations"),
    ("GET", "/members/access-changes", None, "members:access-changes"),
    ("POST", "/members/invitations/accept", {"token": "abcdefghijkl", "userId": "u-1"}, "members:invitations"),
]


def _form(client_id: str, secret: str, **extra) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, **extra}


async def test_each_client_has_its_own_secret_and_scopes(platform):
    settings = platform.settings
    async with platform.client() as client:
        # The shared secret material is no longer a credential of any client.
        master = await client.post("/oauth/token", data=_form("hotel", settings.service_secret))
        assert master.status_code == 401 and master.json()["error"] == "invalid_client"
        # One client's secret does not open another client.
        crossed = await client.post("/oauth/token", data=_form("hotel", settings.client_secret_of("news")))
        assert crossed.status_code == 401
        unknown = await client.post("/oauth/token", data=_form("intruder", settings.client_secret_of("intruder")))
        assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"

        for client_id in SERVICE_SCOPES:
            scopes = scopes_of(client_id)
            granted = await client.post("/oauth/token", data=_form(client_id, settings.client_secret_of(client_id)))
            assert granted.status_code == 200, (client_id, granted.text)
            claims = jwt.decode(granted.json()["access_token"], options={"verify_signature": False})
            assert claims["sub"] == f"service:{client_id}"
            assert set(claims["scope"].split()) == set(scopes) == set(granted.json()["scope"].split())

        narrowed = await client.post("/oauth/token", data=_form("hotel", settings.client_secret_of("hotel"),
                                                                 scope="media:read"))
        assert narrowed.json()["scope"] == "media:read"
        widened = await client.post("/oauth/token", data=_form("news", settings.client_secret_of("news"),
                                                                scope="members:sync members:add-hotel-member"))
        assert widened.status_code == 400 and widened.json()["error"] == "invalid_scope"
        assert "members:add-hotel-member" in widened.json()["detail"]


async def test_service_only_routes_check_their_scope(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        for method, path, body, scope in SERVICE_ROUTES:
            anonymous = await client.request(method, path, json=body)
            assert anonymous.status_code == 401, (path, anonymous.text)
            as_member = await client.request(method, path, json=body, headers=admin.headers)
            # A hotel administrator may list its own hotel's members; nobody else's.
            assert as_member.status_code in (403, 404), (path, as_member.text)
            holder = next(c for c in SERVICE_SCOPES if scope in scopes_of(c))
            other = next(c for c in SERVICE_SCOPES if scope not in scopes_of(c))
            refused = await client.request(method, path, json=body, headers=await platform.service_headers(other))
            assert refused.status_code == 403, (path, other, refused.text)
            assert refused.json()["error"] == "insufficient_scope"
            allowed = await client.request(method, path, json=body, headers=await platform.service_headers(holder))
            assert allowed.status_code not in (401, 403), (path, holder, allowed.text)


async def test_news_cannot_mint_an_admin_sign_up_for_any_hotel(platform):
    """The attack of issue 7 item 5: a service token of another service creating a hotel administrator."""
    async with platform.client() as client:
        body = {"hotelId": "victim", "hotelName": "Victim", "email": "evil@example.com", "isAdmin": True}
        for client_id in ("news", "notification", "media", "billing", "members", "auth"):
            response = await client.post("/members/add/hotel/member", json=body,
                                         headers=await platform.service_headers(client_id))
            assert response.status_code == 403, (client_id, response.text)
        hotel = await client.post("/members/add/hotel/member", json=body, headers=await platform.service_headers("hotel"))
        assert hotel.status_code == 201 and hotel.json()["invitationToken"]
