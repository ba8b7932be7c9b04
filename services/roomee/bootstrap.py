"""Create a hotel's first workspace and administrator on a running platform, over its HTTP API.

It goes through the members service (``POST /members/add/hotel/member``, as the hotel service
will) and the auth service (``POST /users/signUp``), so every rule and event applies.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

import httpx

from roomee.kit.settings import Settings


@dataclass
class BootstrapResult:
    hotel_id: str
    workspace_id: str
    member_id: str
    email: str
    password: str
    created: bool


async def bootstrap_admin(
    settings: Settings,
    *,
    hotel_name: str,
    email: str,
    password: str | None = None,
    hotel_id: str | None = None,
    first_name: str = "Admin",
    last_name: str = "",
) -> BootstrapResult:
    password = password or secrets.token_urlsafe(12)
    hotel_id = hotel_id or str(uuid.uuid4())
    async with httpx.AsyncClient(timeout=30) as client:
        auth_url, members_url = settings.url_of("auth"), settings.url_of("members")
        token_response = await client.post(
            f"{auth_url}/oauth/token",
            data={"grant_type": "client_credentials", "client_id": "cli",
                  "client_secret": settings.client_secret_of("cli")},
        )
        token_response.raise_for_status()
        service_token = token_response.json()["access_token"]
        added = await client.post(
            f"{members_url}/members/add/hotel/member",
            headers={"Authorization": f"Bearer {service_token}"},
            json={"hotelId": hotel_id, "hotelName": hotel_name, "email": email, "firstName": first_name,
                  "lastName": last_name, "dashboardAccess": True, "isAdmin": True,
                  "sendInvitation": False},  # signed up right below: no email with a used link
        )
        added.raise_for_status()
        body = added.json()
        created = body["invitationToken"] is not None
        if created:
            signed_up = await client.post(
                f"{auth_url}/users/signUp",
                json={"token": body["invitationToken"], "password": password, "firstName": first_name,
                      "lastName": last_name},
            )
            signed_up.raise_for_status()
    return BootstrapResult(hotel_id, body["workspace"]["id"], body["member"]["id"], email, password, created)
