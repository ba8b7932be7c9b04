"""Provision a hotel and sign its first administrator up on a running platform, over its HTTP API.

``provision_hotel`` goes through the hotel service's provisioning (``POST /hotel/add``: hotel record,
QR code, storage quota, subscription, administrator), then signs the administrator up with a password
through the members and auth services, so every rule and event applies and every feature works on the
hotel. ``bootstrap_admin`` is its second half alone: a hotel's administrator through the members
service (``POST /members/add/hotel/member``) and the auth service (``POST /users/signUp``).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import httpx

from roomee.cli_errors import answer_error
from roomee.kit.settings import Settings


@dataclass
class BootstrapResult:
    hotel_id: str
    workspace_id: str
    member_id: str
    email: str
    password: str
    created: bool


class ProvisioningFailed(RuntimeError):
    """The hotel service answered an error, or the hotel's provisioning failed or did not end in time."""


async def _service_token(client: httpx.AsyncClient, settings: Settings) -> str:
    response = await client.post(
        f"{settings.url_of('auth')}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "cli", "client_secret": settings.client_secret_of("cli")},
    )
    response.raise_for_status()
    return response.json()["access_token"]


async def provision_hotel(
    settings: Settings,
    *,
    hotel_name: str,
    email: str,
    phone: str,
    address: str,
    plan: str = "premium",
    locale: str = "en",
    password: str | None = None,
    first_name: str = "Admin",
    last_name: str = "Roomee",
    timeout_seconds: float = 120.0,
) -> BootstrapResult:
    """``POST /hotel/add`` (Idempotency-Key from the hotel name and email: running it again finds the same
    hotel for 24 h), wait until the hotel is ``ready``, then sign the administrator up with ``password``."""
    key = "bootstrap-" + hashlib.sha256(f"{hotel_name}\n{email.strip().lower()}".encode()).hexdigest()[:32]
    body = {"name": hotel_name, "email": email, "phone": phone, "address": address, "plan": plan,
            "settings": {"locale": locale},
            "administrator": {"email": email, "firstName": first_name, "lastName": last_name, "locale": locale,
                              "sendInvitation": False}}  # signed up below: no email with a link used at once
    hotel_url = settings.url_of("hotel")
    async with httpx.AsyncClient(timeout=30) as client:
        headers = {"Authorization": f"Bearer {await _service_token(client, settings)}"}
        added = await client.post(f"{hotel_url}/hotel/add", json=body, headers=headers | {"Idempotency-Key": key})
        if added.status_code not in (200, 201, 202):
            raise ProvisioningFailed(answer_error(added))
        hotel_id = added.json()["id"]
        deadline = time.monotonic() + timeout_seconds
        while True:
            hotel = await client.get(f"{hotel_url}/hotel/{hotel_id}", headers=headers)
            status = hotel.json().get("status") if hotel.status_code == 200 else None
            if status == "ready":
                break
            if status in ("failed", "deleting", "deleted") or time.monotonic() > deadline:
                raise ProvisioningFailed(f"hotel {hotel_id} is {status or hotel.status_code}: "
                                         f"see GET /hotel/{hotel_id}/provisioning")
            await asyncio.sleep(0.2)
    return await bootstrap_admin(settings, hotel_name=hotel_name, email=email, password=password,
                                 hotel_id=hotel_id, first_name=first_name, last_name=last_name, locale=locale)


async def bootstrap_admin(
    settings: Settings,
    *,
    hotel_name: str,
    email: str,
    password: str | None = None,
    hotel_id: str | None = None,
    first_name: str = "Admin",
    last_name: str = "",
    locale: str = "fr",
) -> BootstrapResult:
    password = password or secrets.token_urlsafe(12)
    hotel_id = hotel_id or str(uuid.uuid4())
    async with httpx.AsyncClient(timeout=30) as client:
        auth_url, members_url = settings.url_of("auth"), settings.url_of("members")
        service_token = await _service_token(client, settings)
        added = await client.post(
            f"{members_url}/members/add/hotel/member",
            headers={"Authorization": f"Bearer {service_token}"},
            json={"hotelId": hotel_id, "hotelName": hotel_name, "email": email, "firstName": first_name,
                  "lastName": last_name, "dashboardAccess": True, "isAdmin": True,
                  "locale": locale, "sendInvitation": False},  # signed up right below: no email with a used link
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
