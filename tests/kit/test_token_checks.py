"""Token checks every service makes: signature, algorithm, issuer, expiry, audience; and allowed origins."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
from cryptography.hazmat.primitives import serialization

from tests.fixtures.people import make_admin
from tests.fixtures.platform import make_settings, running_platform


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _hs256(claims: dict, secret: bytes, kid: str) -> str:
    """A JWT "signed" with HMAC-SHA256 by hand (PyJWT refuses a public key as an HMAC secret)."""
    def part(value) -> str:
        raw = value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{part(claims)}"
    return f"{signing_input}.{part(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def _signed(platform, claims: dict, **headers) -> str:
    key = platform.platform.services["auth"].state["keystore"].signing_key
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid, **headers})


async def test_tokens_with_a_wrong_claim_or_algorithm_are_refused(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        claims = _claims(admin.session["accessToken"])
        assert claims["aud"] == platform.settings.jwt_audience
        assert (await client.get("/members/", headers=admin.headers)).status_code == 200
        key = platform.platform.services["auth"].state["keystore"].signing_key
        public_pem = key.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        without_aud = {k: v for k, v in claims.items() if k != "aud"}
        refused = {
            "expired": (_signed(platform, {**claims, "exp": int(time.time()) - 5}), "token_expired"),
            "wrong issuer": (_signed(platform, {**claims, "iss": "someone-else"}), "invalid_token"),
            "wrong audience": (_signed(platform, {**claims, "aud": "another-api"}), "invalid_token"),
            "no audience": (_signed(platform, without_aud), "invalid_token"),
            "service audience on a member token": (_signed(platform, {**claims, "aud": "members"}), "invalid_token"),
            # The public key used as an HMAC secret (algorithm confusion), and no signature at all.
            "HS256 with the public key": (
                _hs256(claims, public_pem, key.kid),
                "invalid_token"),
            "alg none": (jwt.encode(claims, None, algorithm="none", headers={"kid": key.kid}), "invalid_token"),
        }
        for case, (token, error) in refused.items():
            for path in ("/members/", "/users/me", "/api/v1/notifications"):
                response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 401, (case, path, response.text)
                assert response.json()["error"] == error, (case, path)


async def test_a_service_token_is_only_for_the_targets_of_its_scopes(platform):
    async with platform.client() as client:
        token = await platform.service_token("notification")
        claims = _claims(token)
        # members for its sync, auth for the ended sessions every verifier follows.
        assert sorted(claims["aud"]) == ["auth", "members"]
        headers = {"Authorization": f"Bearer {token}"}
        assert (await client.post("/members/sync", json={"limit": 1}, headers=headers)).status_code == 200
        # Same scope, audience of another target: refused.
        elsewhere = _signed(platform, {**claims, "aud": ["media"]})
        response = await client.post("/members/sync", json={"limit": 1},
                                     headers={"Authorization": f"Bearer {elsewhere}"})
        assert response.status_code == 403 and response.json()["error"] == "insufficient_scope"


async def test_allowed_origins_apply_to_http_and_socketio(tmp_path):
    allowed, other = "https://app.roomee.example", "https://evil.example"
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    async with running_platform(make_settings(tmp_path, allowed_origins=[allowed])) as running:
        async with running.client() as client:
            ok = await client.options("/members/", headers={"Origin": allowed, **preflight})
            assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
            assert "authorization" in ok.headers["access-control-allow-headers"].lower()
            denied = await client.options("/members/", headers={"Origin": other, **preflight})
            assert "access-control-allow-origin" not in denied.headers
            simple = await client.get("/health", headers={"Origin": allowed})
            assert simple.headers["access-control-allow-origin"] == allowed

            handshake = {"EIO": "4", "transport": "polling"}
            assert (await client.get("/socket.io/", params=handshake, headers={"Origin": allowed})).status_code == 200
            assert (await client.get("/socket.io/", params=handshake, headers={"Origin": other})).status_code == 400
            # Apps and servers send no Origin: not a browser, not concerned.
            assert (await client.get("/socket.io/", params=handshake)).status_code == 200


async def test_no_cross_origin_access_by_default(platform):
    async with platform.client() as client:
        other = "https://evil.example"
        response = await client.get("/health", headers={"Origin": other})
        assert "access-control-allow-origin" not in response.headers
        handshake = {"EIO": "4", "transport": "polling"}
        assert (await client.get("/socket.io/", params=handshake, headers={"Origin": other})).status_code == 400
