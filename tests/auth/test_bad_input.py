"""Bad input on the auth routes answers 4xx with the error document, never 500."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("token", ["abcdefghij/klmnop", "abcdefghij/", "../../members/sync", "abc%2Fdefghijkl", "abcdefghij?x=1#y"])
async def test_sign_up_with_a_token_holding_url_characters_is_refused(platform, token):
    async with platform.client() as client:
        response = await client.post("/users/signUp", json={"token": token, "password": "correct horse battery"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"] in ("invalid_invitation", "not_found", "validation_error"), response.text
