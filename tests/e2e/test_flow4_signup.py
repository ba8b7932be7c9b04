"""Seed Flow 4, first half, over real HTTP and the platform's broker (RabbitMQ on the real backend)."""

from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fixtures.events import event_tap
from tests.fixtures.people import PASSWORD, make_admin, token_from_link


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


async def test_invitation_to_scoped_sign_in(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        manager = await make_admin(platform, client, "manager@example.com")

        invited = await client.post(
            "/members/",
            json={"email": "Nina.New@Example.com", "role": "editor", "firstName": "Nina", "lastName": "New"},
            headers=manager.headers,
        )
        assert invited.status_code == 201, invited.text
        assert invited.json()["email"] == "nina.new@example.com"
        assert "token" not in invited.text.lower().replace("expiresat", "")

        onboarding = await tap.wait_for(
            "roomee.notification.member.onboarding", lambda e: e["payload"]["email"] == "nina.new@example.com"
        )
        # The seed's envelope, field for field, plus id and type.
        assert set(onboarding) == {"id", "type", "workspaceId", "ecosystemId", "workspaceName", "payload", "channels",
                                   "metadata"}
        assert onboarding["type"] == "member.onboarding"
        assert onboarding["workspaceId"] == manager.workspace_id
        assert onboarding["ecosystemId"] == manager.hotel_id
        assert onboarding["workspaceName"] == "Hotel Test"
        assert set(onboarding["channels"]) == {"email", "socket"}
        assert onboarding["metadata"]["actor"] == {"id": manager.member_id, "name": "Ada Admin", "type": "member"}
        assert onboarding["metadata"]["receiverIds"] == [manager.member_id]
        assert onboarding["metadata"]["timestamp"].endswith("Z")
        payload = onboarding["payload"]
        assert payload["inviter"] == {"id": manager.member_id, "name": "Ada Admin"}
        assert payload["signupLink"].startswith(f"{platform.url}/signup?token=")
        token = token_from_link(payload["signupLink"])

        signed_up = await client.post("/users/signUp", json={"token": token, "password": PASSWORD})
        assert signed_up.status_code == 201, signed_up.text
        session = signed_up.json()
        assert session["member"]["workspaceId"] == manager.workspace_id
        assert session["member"]["role"] == "editor"

        created = await tap.wait_for("roomee.auth.user.created", lambda e: e["payload"]["email"] == "nina.new@example.com")
        registered = await tap.wait_for("roomee.notification.member.registered",
                                        lambda e: e["payload"]["member"]["email"] == "nina.new@example.com")
        assert registered["metadata"]["receiverIds"] == [manager.member_id]
        assert registered["payload"]["member"]["userId"] == created["payload"]["id"]
        assert registered["payload"]["member"]["id"] == session["member"]["memberId"]

        signed_in = await client.post("/users/signIn", json={"email": "nina.new@example.com", "password": PASSWORD})
        assert signed_in.status_code == 200, signed_in.text
        claims = _claims(signed_in.json()["accessToken"])
        assert claims["wid"] == manager.workspace_id
        assert claims["hid"] == manager.hotel_id
        assert claims["mid"] == session["member"]["memberId"]
        assert claims["perms"] == ["publish_pages"]

        members = await client.get("/members/", headers=manager.headers)
        assert {m["email"] for m in members.json()["items"]} == {"manager@example.com", "nina.new@example.com"}

        # The token is single use.
        reused = await client.post("/users/signUp", json={"token": token, "password": PASSWORD})
        assert reused.status_code == 410
        assert reused.json()["error"] == "invitation_used"


async def test_expired_forged_and_replaced_invitations(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        manager = await make_admin(platform, client, "manager@example.com")
        members_settings = platform.platform.services["members"].settings

        members_settings.invitation_ttl_seconds = 0
        await client.post("/members/", json={"email": "late@example.com"}, headers=manager.headers)
        expired = await tap.wait_for("roomee.notification.member.onboarding",
                                     lambda e: e["payload"]["email"] == "late@example.com")
        members_settings.invitation_ttl_seconds = 3600
        response = await client.post("/users/signUp", json={"token": token_from_link(expired["payload"]["signupLink"]),
                                                           "password": PASSWORD})
        assert response.status_code == 410
        assert response.json()["error"] == "invitation_expired"

        forged = await client.post("/users/signUp", json={"token": "x" * 43, "password": PASSWORD})
        assert forged.status_code == 404
        assert forged.json()["error"] == "invalid_invitation"

        first = await client.post("/members/", json={"email": "twice@example.com"}, headers=manager.headers)
        second = await client.post("/members/", json={"email": "twice@example.com"}, headers=manager.headers)
        first_event = await tap.wait_for("roomee.notification.member.onboarding",
                                         lambda e: e["payload"]["onboardingId"] == first.json()["id"])
        await tap.wait_for("roomee.notification.member.onboarding",
                           lambda e: e["payload"]["onboardingId"] == second.json()["id"])
        replaced = await client.post("/users/signUp", json={
            "token": token_from_link(first_event["payload"]["signupLink"]), "password": PASSWORD})
        assert replaced.status_code == 410
        assert replaced.json()["error"] == "invitation_revoked"

        too_short = await client.post("/users/signUp", json={"token": "x" * 43, "password": "short"})
        assert too_short.status_code == 422
        assert too_short.json()["error"] == "validation_error"


async def test_forged_and_expired_access_tokens_are_rejected(platform):
    async with platform.client() as client:
        manager = await make_admin(platform, client, "manager@example.com")
        assert (await client.get("/users/me", headers=manager.headers)).status_code == 200

        stranger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        real_kid = jwt.get_unverified_header(manager.session["accessToken"])["kid"]
        claims = {**_claims(manager.session["accessToken"]), "perms": ["manage_members", "manage_ecosystem"]}
        forged = jwt.encode(claims, stranger_key, algorithm="RS256", headers={"kid": real_kid})
        response = await client.get("/members/", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"

        keystore = platform.platform.services["auth"].state["keystore"]
        expired = jwt.encode({**claims, "exp": int(time.time()) - 5}, keystore.signing_key.private_key,
                             algorithm="RS256", headers={"kid": keystore.signing_key.kid})
        response = await client.get("/members/", headers={"Authorization": f"Bearer {expired}"})
        assert response.status_code == 401
        assert response.json()["error"] == "token_expired"

        assert (await client.get("/members/")).status_code == 401
