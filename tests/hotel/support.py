"""Helpers of the hotel tests: a fault-injecting reverse proxy, request bodies, waiting for a status.

:class:`FaultProxy` is a real HTTP server (Starlette under uvicorn on loopback) placed between the
hotel target and the real media, billing and members targets (``ROOMEE_HOTEL_<TARGET>_URL``): it
forwards every request, except where a rule injects a 5xx, a delay (the caller's timeout), or holds
the request before or after it reaches the real service (a crash point, a lost answer).
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fixtures.people import PASSWORD, Person, token_from_link
from tests.fixtures.platform import make_settings, running_platform, sign_in

PROVISIONED_TARGETS = ("media", "billing", "members")
STEPS = ["hotel", "qr", "storage", "subscription", "admin", "announce"]


@dataclass
class Rule:
    method: str
    pattern: re.Pattern
    times: int | None  # None: every matching request
    status: int | None = None
    delay: float = 0.0
    after: bool = False  # delay/hold after the real service answered (a lost answer)
    drop: bool = False  # once released, answer 503 without forwarding (the caller died before the call)
    gate: asyncio.Event | None = None
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and self.pattern.fullmatch(path) is not None and (
            self.times is None or self.hits < self.times
        )


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, int]] = []
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=60)

    # -- programming ---------------------------------------------------------------------------

    def _add(self, method: str, path: str, times: int | None, **kwargs) -> Rule:
        rule = Rule(method.upper(), re.compile(path), times, **kwargs)
        self.rules.append(rule)
        return rule

    def fail(self, method: str, path: str, status: int = 500, times: int | None = None, delay: float = 0.0) -> Rule:
        return self._add(method, path, times, status=status, delay=delay)

    def delay(self, method: str, path: str, seconds: float, times: int | None = None, after: bool = False) -> Rule:
        return self._add(method, path, times, delay=seconds, after=after)

    def hold(self, method: str, path: str, after: bool = False, times: int | None = 1, drop: bool = False) -> Rule:
        """Requests wait (``rule.reached`` is set) until ``release(rule)``."""
        return self._add(method, path, times, gate=asyncio.Event(), after=after, drop=drop)

    @staticmethod
    def release(rule: Rule) -> None:
        assert rule.gate is not None
        rule.gate.set()

    def clear(self) -> None:
        for rule in self.rules:
            if rule.gate is not None:
                rule.gate.set()
        self.rules.clear()

    def count(self, method: str, path: str) -> int:
        pattern = re.compile(path)
        return sum(1 for m, p, _ in self.log if m == method and pattern.fullmatch(p))

    # -- serving -------------------------------------------------------------------------------

    async def _wait(self, rule: Rule) -> None:
        rule.reached.set()
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if rule.gate is not None:
            await rule.gate.wait()

    async def _handle(self, request: Request) -> Response:
        method, path = request.method, request.url.path
        # Read before any delay: a request whose caller gave up meanwhile still reaches the service late.
        body = await request.body()
        rule = next((r for r in self.rules if r.matches(method, path)), None)
        if rule is not None:
            rule.hits += 1
        if rule is not None and rule.status is not None:
            if rule.delay:  # a slow failure: the caller's timeout fires first; nothing is forwarded
                await asyncio.sleep(rule.delay)
            self.log.append((method, path, rule.status))
            return JSONResponse({"error": "injected", "detail": f"fault proxy: {rule.status}"}, status_code=rule.status)
        if rule is not None and not rule.after:
            await self._wait(rule)
            if rule.drop:
                self.log.append((method, path, 503))
                return JSONResponse({"error": "dropped", "detail": "fault proxy: dropped"}, status_code=503)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        upstream = await self._client.request(method, path, params=request.query_params, headers=headers,
                                              content=body)
        self.log.append((method, path, upstream.status_code))
        if rule is not None and rule.after:
            await self._wait(rule)
        excluded = {"content-length", "transfer-encoding", "connection", "content-encoding"}
        return Response(upstream.content, status_code=upstream.status_code,
                        headers={k: v for k, v in upstream.headers.items() if k.lower() not in excluded})

    @asynccontextmanager
    async def serving(self):
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off", access_log=False))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            yield self
        finally:
            self.clear()
            server.should_exit = True
            await task
            await self._client.aclose()


@asynccontextmanager
async def platform_behind_proxy(tmp_path, monkeypatch, **overrides):
    """The whole platform whose hotel target reaches media, billing and members through a FaultProxy."""
    settings = make_settings(tmp_path, **{**FAST_SAGA, **overrides})
    proxy = FaultProxy(settings.base_url)
    async with proxy.serving():
        for target in PROVISIONED_TARGETS:
            monkeypatch.setenv(f"ROOMEE_HOTEL_{target.upper()}_URL", proxy.url)
        async with running_platform(settings) as running:
            yield running, proxy


# Retries and leases short enough for tests (production: 8 attempts from 0.25 s, 30 s leases).
FAST_SAGA = {
    "saga_max_attempts": 3,
    "saga_backoff_base_seconds": 0.05,
    "saga_backoff_max_seconds": 0.5,
    "saga_poll_interval_seconds": 0.2,
    "hotel_storage_wait_seconds": 1.0,
    "breaker_reset_timeout_ms": 500,
    # Compensate as soon as a step's attempts are spent (waiting and retrying later: test_retry.py).
    "saga_retry_later_limit_seconds": 0,
}


def hotel_body(plan: str = "premium", admin_email: str | None = None, **changes) -> dict:
    admin_email = admin_email or f"admin-{uuid.uuid4().hex[:8]}@hotel.example.com"
    return {
        "name": "Hôtel du Lac", "email": "contact@lac.example.com", "phone": "+33 4 50 00 00 00",
        "address": "1 quai du Lac, Annecy", "type": "hotel", "settings": {"checkIn": "15:00"}, "plan": plan,
        "administrator": {"email": admin_email, "firstName": "Ada", "lastName": "Admin", "locale": "fr"},
        **changes,
    }


async def wait_for_status(client: httpx.AsyncClient, headers: dict, hotel_id: str, statuses=("ready", "failed"),
                          timeout: float = 90.0) -> dict:
    """The provisioning document once the hotel reaches one of ``statuses``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(f"/hotel/{hotel_id}/provisioning", headers=headers)
        if response.status_code == 404 and "deleted" in statuses:
            return {"status": "deleted"}
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in statuses:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"hotel {hotel_id} still {body['status']} after {timeout} s: {body}")
        await asyncio.sleep(0.05)


async def add_hotel(client: httpx.AsyncClient, headers: dict, body: dict | None = None, key: str | None = None) -> str:
    extra = {"Idempotency-Key": key} if key else {}
    response = await client.post("/hotel/add", json=body or hotel_body(), headers={**headers, **extra})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def step(document: dict, name: str) -> dict:
    return next(s for s in document["steps"] if s["name"] == name)


async def sign_up_admin(client: httpx.AsyncClient, tap, hotel_id: str, email: str) -> Person:
    """The hotel's administrator follows the invitation (``member.onboarding``), signs up and signs in."""
    onboarding = await tap.wait_for(
        "roomee.notification.member.onboarding",
        lambda e: e["ecosystemId"] == hotel_id and e["payload"]["email"] == email,
    )
    token = token_from_link(onboarding["payload"]["signupLink"])
    signed_up = await client.post("/users/signUp", json={"token": token, "password": PASSWORD})
    assert signed_up.status_code == 201, signed_up.text
    return Person(email, PASSWORD, await sign_in(client, email, PASSWORD))
