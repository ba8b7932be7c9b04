"""FastAPI dependencies giving endpoints their service context and a transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from roomee.kit.platform import ServiceContext

READ_METHODS = frozenset({"GET", "HEAD"})


def context_of(service: str) -> Callable[[Request], ServiceContext]:
    # async: a plain ``def`` dependency would be run in the thread pool, two thread hops per request.
    async def dependency(request: Request) -> ServiceContext:
        return request.app.state.platform.services[service]

    dependency.roomee_context_of = service  # what a hot read (roomee.kit.hot) resolves it to
    return dependency


def session_for(service: str) -> Callable[[Request], Any]:
    """A transaction that commits when the endpoint returns (before the response is sent); for GET and
    HEAD, a session without a transaction (:meth:`Database.reading`), since they only read.

    Use it with ``Depends(session_for(name), scope="function")`` so the commit precedes the response.
    """

    async def dependency(request: Request) -> AsyncIterator[AsyncSession]:
        ctx: ServiceContext = request.app.state.platform.services[service]
        if request.method in READ_METHODS:
            async with ctx.db.reading() as session:
                yield session
            return
        async with ctx.db.transaction() as session:
            yield session

    dependency.roomee_session_of = service  # a hot read (roomee.kit.hot) reads through HotReads
    return dependency
