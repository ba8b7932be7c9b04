"""Auth service: sessions, refresh, throttling, service tokens, JWKS and key rotation."""

from __future__ import annotations

import jwt

from roomee.kit.auth import KeyStore, TokenIssuer, TokenVerifier
from tests.fixtures.people import PASSWORD, make_admin


async def test_me_refresh_and_sign_out(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        me = await client.get("/users/me", headers=admin.headers)
        assert me.status_code == 200
        assert me.json()["user"]["email"] == "admin@example.com"
        assert me.json()["member"]["permissions"] == ["manage_ecosystem", "manage_members", "manage_workspace",
                                                      "publish_pages"]

        refreshed = await client.post("/users/refresh", json={"refreshToken": admin.session["refreshToken"]})
        assert refreshed.status_code == 200
        assert refreshed.json()["member"]["workspaceId"] == admin.workspace_id
        # Refresh tokens are single use.
        replay = await client.post("/users/refresh", json={"refreshToken": admin.session["refreshToken"]})
        assert replay.status_code == 401 and replay.json()["error"] == "invalid_refresh_token"

        new_refresh = refreshed.json()["refreshToken"]
        assert (await client.post("/users/signOut", json={"refreshToken": new_refresh})).status_code == 204
        assert (await client.post("/users/refresh", json={"refreshToken": new_refresh})).status_code == 401


async def test_sign_in_errors_and_throttling(platform):
    async with platform.client() as client:
        await make_admin(platform, client, "admin@example.com")
        unknown = await client.post("/users/signIn", json={"email": "nobody@example.com", "password": "whatever"})
        wrong = await client.post("/users/signIn", json={"email": "admin@example.com", "password": "wrong"})
        # The same answer whether the account exists or not.
        assert unknown.status_code == wrong.status_code == 401
        assert unknown.json() == wrong.json() == {"error": "invalid_credentials", "detail": "invalid email or password"}

        for _ in range(platform.settings.login_max_failures - 1):
            assert (await client.post("/users/signIn", json={"email": "admin@example.com", "password": "no"})).status_code == 401
        throttled = await client.post("/users/signIn", json={"email": "admin@example.com", "password": PASSWORD})
        assert throttled.status_code == 429
        assert throttled.json()["error"] == "login_throttled"
        assert int(throttled.headers["retry-after"]) > 0

        malformed = await client.post("/users/signIn", json={"email": "admin@example.com"})
        assert malformed.status_code == 422


async def test_service_tokens(platform):
    async with platform.client() as client:
        bad = await client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": "news",
                                                      "client_secret": "nope"})
        assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
        grant = await client.post("/oauth/token", data={"grant_type": "password", "client_id": "news",
                                                        "client_secret": "nope"})
        assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
        good = await client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": "news",
                                                       "client_secret": platform.settings.client_secret_of("news")})
        assert good.status_code == 200
        claims = jwt.decode(good.json()["access_token"], options={"verify_signature": False})
        assert claims["typ"] == "service" and claims["sub"] == "service:news"
        # A service token is not a member: member routes refuse it.
        response = await client.get("/members/", headers={"Authorization": f"Bearer {good.json()['access_token']}"})
        assert response.status_code == 403


async def test_jwks_and_key_rotation(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        old_kid = jwt.get_unverified_header(admin.session["accessToken"])["kid"]
        jwks = (await client.get("/.well-known/jwks.json")).json()
        assert [k["kid"] for k in jwks["keys"]] == [old_kid]
        assert jwks["keys"][0]["kty"] == "RSA" and "d" not in jwks["keys"][0]

        # A verifier elsewhere (another service) caches the JWKS and refetches on an unknown kid.
        fetches = []

        async def load():
            fetches.append(1)
            return (await client.get("/.well-known/jwks.json")).json()

        verifier = TokenVerifier(platform.settings, load, min_refresh_interval=0)
        assert (await verifier.verify(admin.session["accessToken"]))["sub"]
        assert len(fetches) == 1

        keystore: KeyStore = platform.platform.services["auth"].state["keystore"]
        keystore.generate()
        keystore.reload()
        rotated = await client.post("/users/signIn", json={"email": "admin@example.com", "password": PASSWORD})
        new_kid = jwt.get_unverified_header(rotated.json()["accessToken"])["kid"]
        assert new_kid != old_kid
        assert {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]} == {old_kid, new_kid}

        assert (await verifier.verify(rotated.json()["accessToken"]))["sub"]
        assert len(fetches) == 2  # one refetch for the new kid
        assert (await verifier.verify(admin.session["accessToken"]))["sub"]  # old tokens still verify
        assert len(fetches) == 2
        headers = {"Authorization": f"Bearer {rotated.json()['accessToken']}"}
        assert (await client.get("/members/", headers=headers)).status_code == 200


def test_keys_come_from_a_mounted_secret(tmp_path):
    from tests.fixtures.platform import make_settings

    secret_dir = tmp_path / "mounted"
    generated = KeyStore(make_settings(tmp_path / "gen", auth_keys_dir=None))
    secret_dir.mkdir()
    (secret_dir / "key.pem").write_bytes((tmp_path / "gen" / "keys").glob("*.pem").__next__().read_bytes())
    mounted = KeyStore(make_settings(tmp_path / "other", auth_keys_dir=secret_dir))
    assert mounted.signing_key.kid == generated.signing_key.kid
    assert not (tmp_path / "other" / "keys").exists()
    token = TokenIssuer(mounted, make_settings(tmp_path)).service_token("hotel")
    assert jwt.get_unverified_header(token)["kid"] == generated.signing_key.kid
