"""FastAPI dependencies giving endpoints their service context and a transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.platform import ServiceContext


def context_of(service: str) -> Callable[[Request], ServiceContext]:
    def dependency(request: Request) -> ServiceContext:
        return request.app.state.platform.services[service]

    return dependency


def session_for(service: str) -> Callable[[Request], Any]:
    """A transaction that commits when the endpoint returns (before the response is sent).

    Use it with ``Depends(session_for(name), scope="function")`` so the commit precedes the response.
    """

    async def dependency(request: Request) -> AsyncIterator[AsyncSession]:
        ctx: ServiceContext = request.app.state.platform.services[service]
        async with ctx.db.transaction() as session:
            yield session

    return dependency
