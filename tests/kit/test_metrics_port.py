"""``ROOMEE_METRICS_PORT``: /metrics answers on its own listener only, not on the API port the Ingress exposes."""

from __future__ import annotations

import httpx

from tests.fixtures.platform import free_port, make_settings, running_platform


async def test_metrics_on_their_own_port_and_not_on_the_api_port(tmp_path):
    port = free_port()
    async with running_platform(make_settings(tmp_path, log_level="ERROR", metrics_port=port)) as running, \
            running.client() as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 404
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as metrics:
            scraped = await metrics.get("/metrics")
            assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
            assert "http_request_duration_seconds" in scraped.text
            assert (await metrics.get("/health")).status_code == 404
            assert (await metrics.post("/metrics")).status_code == 405
    # Closed with the process.
    async with httpx.AsyncClient() as late:
        try:
            await late.get(f"http://127.0.0.1:{port}/metrics")
            raise AssertionError("the metrics listener outlived the platform")
        except httpx.ConnectError:
            pass


async def test_without_the_setting_metrics_stay_on_the_api_port(tmp_path):
    async with running_platform(make_settings(tmp_path, log_level="ERROR")) as running, running.client() as client:
        assert (await client.get("/metrics")).status_code == 200
