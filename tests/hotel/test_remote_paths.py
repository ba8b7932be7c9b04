"""The sagas' calls to media, billing and members put each id in the path as one encoded segment.

Hotel ids are UUIDs today, but a saga key, a media id or a subscription id is only a string to the
steps: one with ``/``, ``?``, ``#``, ``%`` or a space must reach the same route, not another one.
The calls go to a real HTTP server (uvicorn on loopback) that records the raw request paths.
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager
from types import SimpleNamespace

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from roomee.hotel.provisioning import CALLS_IN_FLIGHT, Provisioner
from roomee.kit.http import ServiceClient
from roomee.kit.settings import Settings

ODD_ID = "hotel/1 ?x=#%2F"
ENCODED = "hotel%2F1%20%3Fx%3D%23%252F"
QUOTA = 20000


@asynccontextmanager
async def recorder(hold: float = 0.0, in_flight: dict[str, int] | None = None):
    """A server answering what each step expects; ``seen`` holds (method, raw path) of every request.
    ``hold``: each request waits that long first; ``in_flight["most"]``: the most requests it held at once."""
    seen: list[tuple[str, str]] = []
    in_flight = in_flight if in_flight is not None else {}

    async def answer(request: Request) -> JSONResponse:
        path = request.scope["raw_path"].decode()
        seen.append((request.method, path))
        in_flight["now"] = in_flight.get("now", 0) + 1
        in_flight["most"] = max(in_flight.get("most", 0), in_flight["now"])
        try:
            await asyncio.sleep(hold)
        finally:
            in_flight["now"] -= 1
        if path == "/sub/plans":
            return JSONResponse([{"id": "premium", "storageQuota": {"maxSize": QUOTA, "unit": "MO"}}])
        if path.startswith("/media/storage/") and request.method == "GET":
            return JSONResponse({"maxSize": QUOTA, "unit": "MO"})
        if path.startswith("/members/get/by/hotel_id/"):
            return JSONResponse({"items": [], "nextCursor": None})
        if path == "/sub/assign-subscription/":
            return JSONResponse({"id": "sub-1"}, status_code=201)
        if path.startswith("/sub/customers/") and request.method == "DELETE":
            return JSONResponse({"customerId": "closed"})
        return JSONResponse({"error": "not_found", "detail": "gone"}, status_code=404)

    app = Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST", "DELETE"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", seen
    finally:
        server.should_exit = True
        await task


def provisioner_at(url: str) -> Provisioner:
    """The saga steps without their engines (no database is touched by the calls tested here)."""
    settings = Settings(hotel_storage_wait_seconds=1.0)
    clients = {target: ServiceClient("hotel", target, url, token_provider=None, settings=settings)
               for target in ("media", "billing", "members")}
    provisioner = Provisioner.__new__(Provisioner)
    provisioner.ctx = SimpleNamespace(settings=settings, client=clients.__getitem__)
    provisioner._plans, provisioner._plans_at, provisioner._slots = {}, 0.0, {}
    return provisioner


def run_of(name: str, **values) -> SimpleNamespace:
    fields = {"key": ODD_ID, "name": name, "attempt": 1, "external_id": None, "data": {}, "resumed": True}
    return SimpleNamespace(**{**fields, **values})


async def test_every_remote_id_is_one_encoded_segment():
    async with recorder() as (url, seen):
        provisioner = provisioner_at(url)
        await provisioner.delete_qr(run_of("qr", external_id=ODD_ID))
        await provisioner.delete_qr(run_of("qr"))
        await provisioner.create_storage(run_of("storage", external_id="event-1", data={"plan": "premium"}))
        await provisioner.wait_for_storage(run_of("storage", external_id="event-1", data={"plan": "premium"}))
        await provisioner.release_storage(run_of("storage"))
        await provisioner.cancel_subscription(run_of("subscription"))
        await provisioner.delete_members(run_of("members"))
        await provisioner.delete_qr_object(run_of("qr", data={"qrMediaId": ODD_ID}))
        # Resumed, the step looks for an earlier subscription first (billing answers 404: none).
        await provisioner.assign_subscription(run_of(
            "subscription", data={"plan": "premium", "email": "a@b.example.com", "name": "Lac"}))

    assert seen == [
        ("DELETE", f"/media/{ENCODED}"),
        ("DELETE", f"/media/storage/{ENCODED}"),
        ("GET", "/sub/plans"),
        ("GET", f"/media/storage/{ENCODED}"),
        ("DELETE", f"/media/storage/{ENCODED}"),
        ("DELETE", f"/sub/customers/{ENCODED}"),  # ?generation=0 in the query
        ("GET", f"/members/get/by/hotel_id/{ENCODED}"),
        ("DELETE", f"/members/by/hotel_id/{ENCODED}"),
        ("DELETE", f"/media/{ENCODED}"),
        ("GET", f"/sub/customers/{ENCODED}/subscription"),
        ("POST", "/sub/assign-subscription/"),
    ]


async def test_a_burst_of_sagas_keeps_a_bounded_number_of_calls_in_flight_per_service():
    """Many sagas at once queue in the hotel service, not in the callee (where they would outlast the
    call timeout); each service has its own slots."""
    counts: dict[str, int] = {}
    async with recorder(hold=0.2, in_flight=counts) as (url, seen):
        provisioner = provisioner_at(url)
        reads = (provisioner._find_admin(f"hotel-{n}", "a@b.example.com") for n in range(3 * CALLS_IN_FLIGHT))
        await asyncio.gather(*reads, provisioner.plans())
    assert len(seen) == 3 * CALLS_IN_FLIGHT + 1
    # The members reads filled their slots, and billing's read was not kept waiting behind them.
    assert counts["most"] == CALLS_IN_FLIGHT + 1
