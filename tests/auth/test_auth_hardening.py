"""Auth hardening: refresh-token families, throttles keyed by address."""

from __future__ import annotations

import httpx

from tests.fixtures.people import PASSWORD, make_admin
from tests.fixtures.platform import make_settings, running_platform


def from_address(running, address: str) -> httpx.AsyncClient:
    """A client whose connections come from another loopback address (another client on the network)."""
    return running.client(transport=httpx.AsyncHTTPTransport(local_address=address))


async def test_reusing_a_rotated_refresh_token_revokes_the_family(platform):
    async with platform.client() as client:
        admin = await make_admin(platform, client, "admin@example.com")
        first = admin.session["refreshToken"]
        second = (await client.post("/users/refresh", json={"refreshToken": first})).json()["refreshToken"]
        reused = await client.post("/users/refresh", json={"refreshToken": first})
        assert reused.status_code == 401
        # The token the stolen one was exchanged for is dead too (RFC 9700 §4.14.2).
        after = await client.post("/users/refresh", json={"refreshToken": second})
        assert after.status_code == 401 and after.json()["error"] == "invalid_refresh_token"
        # Other sign-ins (other families) are untouched.
        other = (await client.post("/users/signIn", json={"email": "admin@example.com", "password": PASSWORD})).json()
        assert (await client.post("/users/refresh", json={"refreshToken": other["refreshToken"]})).status_code == 200


async def test_wrong_passwords_from_elsewhere_do_not_lock_the_owner_out(platform):
    async with platform.client() as client:
        await make_admin(platform, client, "admin@example.com")
    async with from_address(platform, "127.0.0.2") as attacker, from_address(platform, "127.0.0.3") as owner:
        for _ in range(platform.settings.login_max_failures):
            wrong = await attacker.post("/users/signIn", json={"email": "admin@example.com", "password": "guess"})
            assert wrong.status_code == 401
        locked = await attacker.post("/users/signIn", json={"email": "admin@example.com", "password": PASSWORD})
        assert locked.status_code == 429 and locked.json()["error"] == "login_throttled"
        assert int(locked.headers["retry-after"]) > 0
        signed_in = await owner.post("/users/signIn", json={"email": "admin@example.com", "password": PASSWORD})
        assert signed_in.status_code == 200, signed_in.text


async def test_softer_per_email_limit_across_addresses(tmp_path):
    settings = make_settings(tmp_path, login_max_failures=2, login_max_failures_per_email=4)
    async with running_platform(settings) as running:
        async with running.client() as client:
            await make_admin(running, client, "admin@example.com")
        for address in ("127.0.0.2", "127.0.0.3"):
            async with from_address(running, address) as attacker:
                for _ in range(2):
                    response = await attacker.post("/users/signIn", json={"email": "admin@example.com", "password": "x"})
                    assert response.status_code == 401
        # Past the per-email limit an address gets one try at this email, not a lock-out of the owner
        # (OWASP ASVS 2.2.1): a right password from an address that has not failed still signs in.
        async with from_address(running, "127.0.0.5") as guesser:
            assert (await guesser.post("/users/signIn", json={"email": "admin@example.com", "password": "x"})).status_code == 401
            refused = await guesser.post("/users/signIn", json={"email": "admin@example.com", "password": PASSWORD})
            assert refused.status_code == 429 and "retry-after" in refused.headers
            other = await guesser.post("/users/signIn", json={"email": "other@example.com", "password": "x"})
            assert other.status_code == 401  # other accounts are not affected
        async with from_address(running, "127.0.0.4") as owner:
            response = await owner.post("/users/signIn", json={"email": "admin@example.com", "password": PASSWORD})
            assert response.status_code == 200, response.text


async def test_token_sign_up_and_refresh_are_throttled_per_address(tmp_path):
    settings = make_settings(tmp_path, address_max_failures=3)
    async with running_platform(settings) as running:
        attempts = [
            ("/oauth/token", {"data": {"grant_type": "client_credentials", "client_id": "news", "client_secret": "x"}},
             401),
            ("/users/signUp", {"json": {"token": "not-an-invitation", "password": "long enough password"}}, 404),
            ("/users/refresh", {"json": {"refreshToken": "not-a-refresh-token"}}, 401),
        ]
        for n, (path, body, failure) in enumerate(attempts):
            async with from_address(running, f"127.0.1.{n + 1}") as client:
                for _ in range(3):
                    assert (await client.post(path, **body)).status_code == failure, path
                throttled = await client.post(path, **body)
                assert throttled.status_code == 429, (path, throttled.text)
                assert throttled.json()["error"] == "login_throttled" and "retry-after" in throttled.headers
            async with from_address(running, "127.0.2.1") as elsewhere:
                assert (await elsewhere.post(path, **body)).status_code == failure
