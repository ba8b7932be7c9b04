"""Auth calls members at every sign-in; when members is down the breaker fails fast with a clear 503."""

from __future__ import annotations

from tests.fixtures.platform import free_port, make_settings, running_platform


async def test_sign_in_fails_fast_when_members_is_down(tmp_path):
    dead_members = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = make_settings(tmp_path, members_url=dead_members, breaker_volume_threshold=3)
    async with running_platform(settings, target="auth") as auth_only, auth_only.client() as client:
        statuses = []
        for _ in range(3):
            response = await client.post("/users/signUp", json={"token": "t" * 43, "password": "long enough"})
            statuses.append((response.status_code, response.json()["error"]))
        assert statuses == [(503, "service_unavailable")] * 3

        open_circuit = await client.post("/users/signUp", json={"token": "t" * 43, "password": "long enough"})
        assert open_circuit.status_code == 503
        assert open_circuit.json()["detail"] == "members is unavailable (circuit open)"
        assert int(open_circuit.headers["retry-after"]) > 0

        metrics = (await client.get("/metrics")).text
        assert 'circuit_breaker_state{service="auth",target="members"} 2.0' in metrics
