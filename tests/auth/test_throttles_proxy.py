"""Throttles behind a trusted proxy (OWASP ASVS 2.2.1): they key on the client address the proxy gives,
and nobody else's failures keep the owner of an account, with the right password, out of it."""

from __future__ import annotations

import uuid

from tests.kit.served import served

ATTACKER = "198.51.100.66"
OWNER = "203.0.113.10"


def test_a_stranger_behind_the_same_proxy_cannot_lock_the_administrator_out(tmp_path):
    with served(tmp_path, "up") as running:
        admin = running.admin_credentials()
        limit = running.settings.address_max_failures
        with running.client(forwarded_for=ATTACKER) as attacker:
            for _ in range(limit):
                email = f"{uuid.uuid4().hex[:12]}@example.com"
                wrong = attacker.post("/users/signIn", json={"email": email, "password": "guess-guess"})
                assert wrong.status_code == 401, wrong.text
            # The attacker's address is throttled, on every route that counts failures...
            for path, body in (
                ("/users/signIn", {"json": {"email": admin["email"], "password": admin["password"]}}),
                ("/users/refresh", {"json": {"refreshToken": "not-a-refresh-token"}}),
                ("/oauth/token", {"data": {"grant_type": "client_credentials", "client_id": "news",
                                           "client_secret": "guess"}}),
            ):
                throttled = attacker.post(path, **body)
                assert throttled.status_code == 429, (path, throttled.text)
                assert throttled.json()["error"] == "login_throttled"
                assert int(throttled.headers["retry-after"]) > 0
        # ...while the administrator, behind the same proxy (the same TCP peer), signs in.
        with running.client(forwarded_for=OWNER) as owner:
            signed_in = owner.post("/users/signIn", json={"email": admin["email"], "password": admin["password"]})
            assert signed_in.status_code == 200, signed_in.text
            refreshed = owner.post("/users/refresh", json={"refreshToken": signed_in.json()["refreshToken"]})
            assert refreshed.status_code == 200, refreshed.text
            wrong_client = owner.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": "news",
                                                             "client_secret": "guess"})
            assert wrong_client.status_code == 401  # judged, not throttled


def test_the_per_email_limit_does_not_lock_the_owner_out(tmp_path):
    with served(tmp_path, "up", login_max_failures=2, login_max_failures_per_email=6) as running:
        admin = running.admin_credentials()
        # Wrong passwords for the administrator's email from three addresses reach the per-email limit.
        for n in range(3):
            with running.client(forwarded_for=f"198.51.100.{n + 1}") as attacker:
                for _ in range(2):
                    wrong = attacker.post("/users/signIn", json={"email": admin["email"], "password": "guess-guess"})
                    assert wrong.status_code == 401, wrong.text
                # This address is done with this email, even with the right password.
                refused = attacker.post("/users/signIn", json={"email": admin["email"], "password": admin["password"]})
                assert refused.status_code == 429 and refused.json()["error"] == "login_throttled"
        # Past the per-email limit, another address gets one try, no more.
        with running.client(forwarded_for="198.51.100.99") as guesser:
            assert guesser.post("/users/signIn", json={"email": admin["email"], "password": "x" * 10}).status_code == 401
            again = guesser.post("/users/signIn", json={"email": admin["email"], "password": admin["password"]})
            assert again.status_code == 429 and "retry-after" in again.headers
        # The owner, from an address that has not failed, is not refused.
        with running.client(forwarded_for=OWNER) as owner:
            signed_in = owner.post("/users/signIn", json={"email": admin["email"], "password": admin["password"]})
            assert signed_in.status_code == 200, signed_in.text
