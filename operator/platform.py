"""The hotel and members HTTP APIs as the operator uses them, through the kit's ServiceClient with
the operator's own service token; transport failures become kopf's TemporaryError (retried)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import kopf

from roomee.kit import errors
from roomee.kit.auth import ServiceTokenProvider
from roomee.kit.http import ServiceClient
from roomee.operator.settings import OperatorSettings

SERVICE = "operator"


def backoff(retry: int, *, base: float = 1.0, cap: float = 30.0) -> float:
    return min(cap, base * 2 ** min(retry, 10))


class PlatformAPI:
    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        tokens = ServiceTokenProvider(settings, SERVICE)
        self.hotel = ServiceClient(SERVICE, "hotel", settings.url_of("hotel"), token_provider=tokens, settings=settings)
        self.members = ServiceClient(SERVICE, "members", settings.url_of("members"), token_provider=tokens,
                                     settings=settings)
        self._slots = asyncio.Semaphore(settings.operator_max_concurrent_calls)

    async def aclose(self) -> None:
        await self.hotel.aclose()
        await self.members.aclose()

    def poll_delay(self, retry: int) -> float:
        """How long to wait before reading a provisioning again: short first, then up to the cap."""
        return backoff(retry, base=self.settings.operator_poll_seconds, cap=self.settings.operator_max_poll_seconds)

    async def call(self, client: ServiceClient, method: str, path: str, *, retry: int, endpoint: str,
                   **kwargs: Any) -> httpx.Response:
        """One request; an unreachable or failing (5xx) service, or a circuit open, is retried later."""
        try:
            async with self._slots:
                return await client.request(method, path, endpoint=endpoint, **kwargs)
        except (errors.ServiceUnavailable, errors.UpstreamError) as exc:
            raise kopf.TemporaryError(f"{client.target} unavailable: {exc.detail}", delay=backoff(retry)) from exc


def error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        return f"{body.get('error')}: {body.get('detail')}"
    return str(body)[:500]
