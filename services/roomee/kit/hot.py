"""Hot reads: the routes read most often, served without FastAPI's per-request machinery.

A route opts in with :func:`hot_read` (under its ``@router.get``). Its endpoint, its dependencies and its
response model stay what FastAPI documents and runs; :class:`HotRoutes` (an ASGI layer in front of the
FastAPI app) runs the same endpoint for a plain ``GET`` with a plan made once per route instead of
FastAPI's dependency solving, and with the same rules:

- the route is found by a dict of path shapes, not a scan of every route; a route declared earlier that
  would take the same URL (``/members/invitations`` before ``/members/{member_id}``) sends it to FastAPI;
- path and query parameters are validated by FastAPI's own ``request_params_to_args`` on the route's fields;
- the kit's dependencies are resolved directly: the service context, the bearer token's principal (the
  verifier's cache), a member token, a permission, and the service's session, which becomes
  :class:`~roomee.kit.db.HotReads` (SELECTs compiled once, raw asyncpg connections); other dependencies are
  plain async functions of those, called as FastAPI would;
- the endpoint's return value is validated and encoded once by the route's response field
  (pydantic's ``dump_json``, as FastAPI does), so the bytes are FastAPI's.

Only a ``200`` is answered here. Anything else, an error of any kind included (no token, a refused one, a
validation error, a 404, a database error), leaves nothing sent and the request goes to FastAPI, which
answers it as it always does (the reads run again: they have no effect). So is a request with an
``Origin`` when CORS is configured, a ``HEAD``, or a route whose dependencies the plan does not know
(reported once at start-up).
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi._compat import Undefined, field_annotation_is_sequence
from fastapi.dependencies.utils import (
    _get_param_aliases,
    _get_param_model,
    _validate_value_with_model_field,
    request_params_to_args,
)
from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams
from starlette.routing import Mount, Route

from roomee.kit.auth import Principal, get_member, get_principal
from roomee.kit.db import HotReads

log = logging.getLogger("roomee.http.hot")

HOT = "roomee_hot_read"
_JSON_HEADERS = (b"content-type", b"application/json")


def hot_read(endpoint: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Mark a GET endpoint as a hot read (place it under ``@router.get``)."""
    setattr(endpoint, HOT, True)
    return endpoint


class Unsupported(Exception):
    """A dependency a hot read cannot resolve: the route stays FastAPI's."""


class _Fallback(Exception):
    """This request is FastAPI's (an answer other than 200 is coming)."""


class _Call:
    """One request's state while its plan runs: the principal and each service's reads, made once."""

    __slots__ = ("scope", "platform", "principal", "reads", "path_values", "query")

    def __init__(self, scope, platform, path_values) -> None:
        self.scope = scope
        self.platform = platform
        self.principal: Principal | None = None
        self.reads: dict[str, Any] = {}
        self.path_values = path_values
        self.query = None


async def _principal(call: _Call) -> Principal:
    if call.principal is None:
        authorization = None
        for name, value in call.scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        if not authorization:
            raise _Fallback
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if not scheme or not token or scheme.lower() != "bearer":
            raise _Fallback
        call.principal = await call.platform.verifier.principal(token)
    return call.principal


async def _member(call: _Call) -> Principal:
    principal = await _principal(call)
    if principal.is_service or not principal.workspace_id:
        raise _Fallback
    return principal


def _resolver(dependant, *, top: bool) -> Callable[[_Call], Awaitable[Any]]:
    """A coroutine function giving ``dependant``'s value (or, at the top, the endpoint's kwargs)."""
    call = dependant.call
    if not top:
        if (service := getattr(call, "roomee_session_of", None)) is not None:
            async def session(state: _Call):
                reads = state.reads.get(service)
                if reads is None:
                    reads = state.reads[service] = HotReads(state.platform.services[service].db)
                return reads
            return session
        if (service := getattr(call, "roomee_context_of", None)) is not None:
            async def context(state: _Call):
                return state.platform.services[service]
            return context
        if call is get_principal:
            return _principal
        if call is get_member:
            return _member
        if (permission := getattr(call, "roomee_permission", None)) is not None:
            async def permitted(state: _Call):
                principal = await _member(state)
                if not principal.has(permission):
                    raise _Fallback
                return principal
            return permitted
        if not inspect.iscoroutinefunction(call):
            raise Unsupported(f"dependency {getattr(call, '__name__', call)!r} is not a coroutine function")
    if (dependant.header_params or dependant.cookie_params or dependant.body_params
            or dependant.request_param_name or dependant.websocket_param_name or dependant.response_param_name
            or dependant.background_tasks_param_name or dependant.security_scopes_param_name
            or getattr(dependant, "http_connection_param_name", None)):
        raise Unsupported(f"{getattr(call, '__name__', call)!r} takes a header, a cookie, a body or the request")
    if not top and (dependant.path_params or dependant.query_params):
        raise Unsupported(f"dependency {getattr(call, '__name__', call)!r} takes parameters of its own")
    subs = []
    for sub in dependant.dependencies:
        if sub.name is None:
            raise Unsupported("a dependency without a parameter (dependencies=[...])")
        subs.append((sub.name, _resolver(sub, top=False)))
    path_params, query_params = _params(dependant.path_params), _params(dependant.query_params)

    async def kwargs(state: _Call) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if path_params is not None:
            path_params(state.path_values, values)
        if query_params is not None:
            if state.query is None:
                state.query = QueryParams(state.scope["query_string"])
            query_params(state.query, values)
        for name, resolve in subs:
            values[name] = await resolve(state)
        return values

    if top:
        return kwargs

    async def value(state: _Call):
        return await call(**(await kwargs(state)))
    return value


def _params(fields: list) -> Callable[[Any, dict[str, Any]], None] | None:
    """Validates the request's values of ``fields`` into ``values`` as FastAPI's ``request_params_to_args``
    does (its alias, default and validation rules), raising ``_Fallback`` on an error. Plain parameters
    (the hot reads' ids, limits, cursors, flags) skip its per-request look-ups of param models and aliases."""
    if not fields:
        return None
    plain = []
    for field in fields:
        aliases = _get_param_aliases(field)
        if _get_param_model(field) is not None or field_annotation_is_sequence(field.field_info.annotation) \
                or len(aliases) != 1:
            def generic(received, values: dict[str, Any]) -> None:
                found, errors = request_params_to_args(fields, received)
                if errors:
                    raise _Fallback
                values.update(found)
            return generic
        plain.append((field, aliases[0][1], (field.field_info.in_.value, aliases[0][1])))

    def validate(received, values: dict[str, Any]) -> None:
        for field, alias, loc in plain:
            value = received.get(alias)
            found, errors = _validate_value_with_model_field(
                field=field, value=Undefined if value is None else value, values=values, loc=loc)
            if errors:
                raise _Fallback
            values[field.name] = found
    return validate


class _Plan:
    """How one hot route is served."""

    def __init__(self, route: APIRoute, earlier: list) -> None:
        if not isinstance(route.response_class, DefaultPlaceholder) or route.response_field is None:
            raise Unsupported("a hot read answers JSON through its response_model")
        if not inspect.iscoroutinefunction(route.endpoint):
            raise Unsupported("the endpoint is not a coroutine function")
        self.route = route
        self.regex = route.path_regex
        self.convertors = route.param_convertors
        self.kwargs = _resolver(route.dependant, top=True)
        self.status = route.status_code or 200
        self.field = route.response_field
        self.options = dict(include=route.response_model_include, exclude=route.response_model_exclude,
                            by_alias=route.response_model_by_alias, exclude_unset=route.response_model_exclude_unset,
                            exclude_defaults=route.response_model_exclude_defaults,
                            exclude_none=route.response_model_exclude_none)
        # Routes before this one that take a GET of some URL this one takes: FastAPI would pick them.
        self.blockers = [r.path_regex for r in earlier if _may_take_first(r, route)]

    def match(self, path: str) -> dict[str, Any] | None:
        found = self.regex.match(path)
        if found is None or any(blocker.match(path) for blocker in self.blockers):
            return None
        return {name: self.convertors[name].convert(value) for name, value in found.groupdict().items()}

    async def answer(self, call: _Call) -> bytes:
        kwargs = await self.kwargs(call)
        content = await self.route.endpoint(**kwargs)
        value, errors = self.field.validate(content, {}, loc=("response",))
        if errors:
            raise _Fallback
        return self.field.serialize_json(value, **self.options)


_PARAM = re.compile(r"{[^}]*}")


def _segments(path: str) -> list[str | None]:
    """The path's segments, ``None`` for a parameter (a ``:path`` one makes the shape open)."""
    return [None if _PARAM.fullmatch(part) else part for part in path.split("/")]


def _may_take_first(earlier, route: APIRoute) -> bool:
    if isinstance(earlier, Mount):
        return True
    if not isinstance(earlier, Route) or "GET" not in (earlier.methods or ()):
        return False
    if ":path}" in earlier.path:
        return True
    mine, theirs = _segments(route.path), _segments(earlier.path)
    return len(mine) == len(theirs) and all(a is None or b is None or a == b for a, b in zip(mine, theirs))


def _shape(path: str) -> tuple[int, str]:
    """The lookup key of a URL path or route path: its number of segments and its first one."""
    parts = path.split("/", 2)
    return path.count("/"), parts[1] if len(parts) > 1 else ""


def _in_order(routes: list) -> list:
    """The routes in the order FastAPI tries them: an included router's routes in its place (this FastAPI
    keeps an included router as one entry); one included with a prefix or dependencies of its own is not
    looked into, and stays a blocker of every route after it."""
    flat = []
    for route in routes:
        included = getattr(route, "original_router", None)
        context = getattr(route, "include_context", None)
        if included is not None and context is not None and not context.prefix and not context.dependencies:
            flat += _in_order(included.routes)
        elif included is not None:
            flat.append(Mount(context.prefix or "/", routes=[]))
        else:
            flat.append(route)
    return flat


class HotRoutes:
    """ASGI layer in front of the FastAPI app serving its :func:`hot_read` routes (see the module)."""

    def __init__(self, app, fastapi, platform, *, cors: bool) -> None:
        self.app = app
        self.platform = platform
        self.cors = cors
        self.enabled = True  # off: every request goes to FastAPI (tests compare both answers)
        self.served = 0
        self.fell_back = 0
        self.last_error: BaseException | None = None
        self.plans: dict[tuple[int, str], list[_Plan]] = {}
        routes = _in_order(fastapi.router.routes)
        for index, route in enumerate(routes):
            if not isinstance(route, APIRoute) or not getattr(route.endpoint, HOT, False):
                continue
            if route.methods != {"GET"} or _PARAM.match(route.path.split("/")[1] if "/" in route.path else ""):
                log.warning("hot read %s %s not served as such: a GET with a literal first segment only",
                            route.methods, route.path)
                continue
            try:
                plan = _Plan(route, routes[:index])
            except Unsupported as exc:
                log.warning("hot read GET %s not served as such: %s", route.path, exc)
                continue
            self.plans.setdefault(_shape(route.path), []).append(plan)

    def plan_of(self, path: str) -> tuple[_Plan, dict[str, Any]] | None:
        for plan in self.plans.get(_shape(path), ()):
            values = plan.match(path)
            if values is not None:
                return plan, values
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path") or not self.enabled:
            return await self.app(scope, receive, send)
        found = self.plan_of(scope["path"])
        if found is None or (self.cors and any(name == b"origin" for name, _ in scope["headers"])):
            return await self.app(scope, receive, send)
        plan, path_values = found
        call = _Call(scope, self.platform, path_values)
        try:
            body = await plan.answer(call)
        except Exception as exc:
            body = None
            if not isinstance(exc, _Fallback):
                self.last_error = exc
                log.debug("hot read of %s answered by the full path: %r", plan.route.path, exc)
        finally:
            for reads in call.reads.values():
                await reads.close()
        if body is None:
            self.fell_back += 1
            return await self.app(scope, receive, send)
        self.served += 1
        scope["route"] = plan.route  # the span's and the latency histogram's name, as FastAPI's routing sets it
        await send({"type": "http.response.start", "status": plan.status,
                    "headers": [(b"content-length", str(len(body)).encode()), _JSON_HEADERS]})
        await send({"type": "http.response.body", "body": body})
