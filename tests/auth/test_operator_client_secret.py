"""The operator's own client secret (ROOMEE_OPERATOR_CLIENT_SECRET, the chart's `operator-client-secret`):
auth checks the operator's client against it, and it opens no other client; the operator's pod needs nothing
else (no service secret) to get its token."""

from __future__ import annotations

import jwt
import pytest

from roomee.kit.auth import SERVICE_SCOPES, ServiceTokenProvider, scopes_of
from roomee.kit.errors import ServiceUnavailable
from roomee.kit.settings import Settings
from tests.fixtures.platform import make_settings, running_platform

OPERATOR_SECRET = "operator-own-secret-0123456789abcdef"


def _form(client_id: str, secret: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}


@pytest.fixture
async def auth(tmp_path):
    settings = make_settings(tmp_path / "auth", operator_client_secret=OPERATOR_SECRET)
    async with running_platform(settings, target="auth") as running:
        yield running


async def test_the_operators_secret_opens_the_operator_client_only(auth):
    async with auth.client() as client:
        granted = await client.post("/oauth/token", data=_form("operator", OPERATOR_SECRET))
        assert granted.status_code == 200, granted.text
        claims = jwt.decode(granted.json()["access_token"], options={"verify_signature": False})
        assert claims["sub"] == "service:operator" and set(claims["scope"].split()) == set(scopes_of("operator"))
        for client_id in [c for c in SERVICE_SCOPES if c != "operator"] + ["intruder"]:
            refused = await client.post("/oauth/token", data=_form(client_id, OPERATOR_SECRET))
            assert refused.status_code == 401, (client_id, refused.text)
            assert refused.json()["error"] == "invalid_client"
        # What service_secret derives for the operator (any pod holding it could compute it) no longer opens it.
        derived = Settings(service_secret=auth.settings.service_secret).client_secret_of("operator")
        assert derived != OPERATOR_SECRET
        stale = await client.post("/oauth/token", data=_form("operator", derived))
        assert stale.status_code == 401 and stale.json()["error"] == "invalid_client"
        # The other clients keep their own secrets.
        hotel = await client.post("/oauth/token", data=_form("hotel", auth.settings.client_secret_of("hotel")))
        assert hotel.status_code == 200, hotel.text


async def test_the_operators_pod_gets_its_token_with_only_its_own_secret(auth, tmp_path):
    # The operator pod's settings: its own secret, auth's URL, no service secret nor client-secret map.
    pod = Settings(data_dir=tmp_path / "operator-pod", auth_url=auth.url, operator_client_secret=OPERATOR_SECRET)
    assert pod.service_secret is None and pod.service_client_secrets == {}
    token = await ServiceTokenProvider(pod, "operator")()
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "service:operator"
    # The same pod cannot pass for another client.
    with pytest.raises(ServiceUnavailable, match="401"):
        await ServiceTokenProvider(pod, "hotel")()
