"""Benchmark of the notification pipeline (issue 3, item 8). A script, not a test.

    python bench/notification_fanout.py [--backend real|embedded] [--sizes 1000,10000,100000]
                                        [--events 5000] [--naive-cap 10000] [--naive-events 1000]
                                        [--replicas 1]

``real`` (default): PostgreSQL + RabbitMQ on this machine, in schemas, an exchange and queues of
their own (the test suite's isolation), all dropped at the end. ``embedded``: SQLite + the
in-process bus in a temporary directory.

The platform runs on uvloop, as ``roomee run`` does. ``--replicas N`` (real only) adds N - 1
notification processes on the same database and queues, as more pods of the notification
Deployment would; socket emits of the other replicas are timed when this process's Socket.IO
manager receives them from RabbitMQ.

The platform runs on real HTTP (uvicorn) with ``push_backend=onesignal`` pointed at the suite's
recording OneSignal fake, served by a child process (like a real provider, it does not share the
platform's CPU; it listens with TCP_NODELAY, see ``OneSignalFake``). On ``real`` the throughput
events are published by another child process (as the producing service would). Measured from the
publish of the envelope(s) to the broker:

- fan-out (one ``page.created`` with N receivers, a workspace of N members seeded in bulk into the
  notification directory, each with one active push subscription for that workspace):
  (a) all N receiver rows committed: when the socket channel is handed the emits, which it is just
      after the commit (the rows are then counted from a separate transaction, once),
  (b) all ceil(N / 2000) push requests received by the fake,
  (c) the socket emit of the notification done: the socket channel's ``to_members_many`` wrapped, the
      time is when the emits to the member rooms (python-socketio ``emit``) returned; no client is
      connected, so this is the server-side cost of the emit;
- throughput: K single-receiver events published at once; until all K receiver rows are committed
  and their K socket emits done; separately, until all K push requests reached the fake.

Each measurement also gives the CPU time this process spent (user + system, ``getrusage``): on a
shared machine the seconds vary with the neighbours' load, the CPU per event much less. The
PostgreSQL and RabbitMQ servers, the fake and the publisher are other processes, not counted.

Naive baseline, in the same run, against the same database and fake: for each receiver, one
transaction (its ``notification_receiver`` row + its unread counter upsert; one ``notification``
row per event for the single-event case) and one OneSignal request of one subscription, one after
the other. Above ``--naive-cap`` receivers (and ``--naive-events`` events) it is measured on the
cap and extrapolated linearly (it is linear by construction); the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("real", "embedded"), default="real")
    parser.add_argument("--sizes", default="1000,10000,100000", help="fan-out sizes, comma-separated")
    parser.add_argument("--events", type=int, default=5000, help="single-receiver events for the throughput")
    parser.add_argument("--naive-cap", type=int, default=10000, help="largest naive fan-out measured in full")
    parser.add_argument("--naive-events", type=int, default=1000, help="naive single events measured in full")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one measurement")
    parser.add_argument("--replicas", type=int, default=1,
                        help="notification processes sharing the queues (real backend; the extra ones are children)")
    parser.add_argument("--serve-fake", metavar="URL_FILE", help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--serve-replica", metavar="SETTINGS_FILE", help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--publish-file", metavar="JSON", help=argparse.SUPPRESS)  # a child process
    return parser.parse_args()


ARGS = parse_args()
if ARGS.replicas > 1 and ARGS.backend != "real":
    sys.exit("--replicas needs --backend real (replicas share RabbitMQ queues and PostgreSQL)")
os.environ["ROOMEE_TEST_BACKEND"] = ARGS.backend

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from roomee.kit.events import Message, build_envelope  # noqa: E402
from roomee.kit.loop import run  # noqa: E402
from roomee.notification.models import (  # noqa: E402
    notification,
    notification_receiver,
    push_subscription,
    unread_counter,
    workspace_directory,
)
from roomee.notification.processor import notification_id_for  # noqa: E402
from roomee.notification.repository import DirectoryRepository  # noqa: E402
from tests.fixtures.fakes import RecordedRequest, RecordingHttpServer  # noqa: E402
from tests.fixtures.platform import drop_test_resources, free_port, make_settings, running_platform  # noqa: E402

PUSH_BATCH = 2000
POLL = 0.005


def cpu_seconds() -> float:
    """CPU time of this process so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class OneSignalFake(RecordingHttpServer):
    """The suite's recording fake, listening with ``TCP_NODELAY`` (inherited by accepted sockets).

    Without it, the fake's response (headers and body written separately by uvicorn) meets Nagle's
    algorithm and the client's delayed ACK: every request waits ~40 ms on loopback, an artefact a
    real provider does not have (measured: 44 ms per sequential request, 1.1 ms with it).
    """

    async def start(self) -> "OneSignalFake":
        original = socket.socket.bind

        def bind(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return original(sock, address)

        socket.socket.bind = bind
        try:
            return await super().start()
        finally:
            socket.socket.bind = original


class FakeTally:
    """What the fake OneSignal received (in the fake's process), by notification id."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = defaultdict(int)
        self.ids: dict[str, int] = defaultdict(int)
        self.total = 0
        self.last = 0.0  # time.perf_counter(): CLOCK_MONOTONIC, the same clock in every process

    def created(self, request: RecordedRequest):
        body = request.json or {}
        key = (body.get("data") or {}).get("notificationId") or (body.get("data") or {}).get("naive") or "?"
        self.requests[key] += 1
        self.ids[key] += len(body.get("include_subscription_ids") or ())
        self.total += 1
        self.last = time.perf_counter()
        return 200, {"id": str(uuid.uuid4()), "errors": None}

    def stats(self, request: RecordedRequest):
        key = request.query.partition("id=")[2]
        return 200, {"total": self.total, "last": self.last, "requests": self.requests.get(key, 0),
                     "ids": self.ids.get(key, 0)}


async def serve_replica(settings_file: str) -> None:
    """The child process: one more notification replica on the same database and broker."""
    from roomee.kit.settings import Settings

    settings = Settings.model_validate_json(Path(settings_file).read_text())
    async with running_platform(settings, "notification"):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def start_replicas(settings, count: int, tmp: Path) -> list[subprocess.Popen]:
    children = []
    for n in range(count):
        port = free_port()
        path = tmp / f"replica-{n}.json"
        path.write_text(settings.model_copy(update={"port": port, "public_url": f"http://127.0.0.1:{port}"})
                        .model_dump_json())
        child = subprocess.Popen([sys.executable, __file__, "--serve-replica", str(path)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if child.stdout.readline().strip() != b"ready":
            raise RuntimeError("a notification replica did not start")
        children.append(child)
    return children


async def serve_fake(url_file: str) -> None:
    """The child process: the recording OneSignal fake, until its parent closes our stdin."""
    tally = FakeTally()
    async with OneSignalFake(name="onesignal") as fake:
        fake.respond_with("POST", "/notifications", tally.created)
        fake.respond_with("GET", "/_bench/stats", tally.stats)
        Path(url_file).write_text(fake.url)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


class Probe:
    """What the fake OneSignal (another process, like a real provider) and the socket channel saw."""

    def __init__(self, fake_url: str) -> None:
        self.fake_url = fake_url
        self.http: aiohttp.ClientSession | None = None  # aiohttp: polling costs this process little CPU
        self.socket_done: dict[str, float] = {}  # notification id -> when its emit returned
        self.socket_called: dict[str, float] = {}  # notification id -> when its emit began (after the commit)
        self.socket_total = 0

    async def push(self, notification_id: str = "") -> dict:
        if self.http is None:
            self.http = aiohttp.ClientSession(raise_for_status=True)
        async with self.http.get(f"{self.fake_url}/_bench/stats", params={"id": notification_id}) as response:
            return await response.json()

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.close()

    def wrap_socket(self, socket) -> None:
        original = socket.to_members_many

        async def to_members_many(emits):
            called = time.perf_counter()  # just after the commit: the emits wait for it
            await original(emits)
            done = time.perf_counter()
            for event, payload, _members in emits:
                if event == "notification:new":
                    self.socket_called[payload.get("id")] = called
                    self.socket_done[payload.get("id")] = done
                    self.socket_total += 1

        socket.to_members_many = to_members_many

        manager = socket.manager
        if hasattr(manager, "_unpack"):  # the emits of the other replicas, as this one receives them
            unpack = manager._unpack

            def counting_unpack(body):
                messages = unpack(body)
                done = time.perf_counter()
                for message in messages:
                    if isinstance(message, dict) and message.get("event") == "notification:new":
                        notification_id = (message.get("data") or [{}])[0].get("id")
                        self.socket_called.setdefault(notification_id, done)
                        self.socket_done[notification_id] = done
                        self.socket_total += 1
                return messages

            manager._unpack = counting_unpack


async def wait_until(check, timeout: float) -> float:
    """Poll ``check()`` (sync or async) until truthy; return the perf_counter time it became so."""
    deadline = time.perf_counter() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError("benchmark condition not met in time")
        await asyncio.sleep(POLL)


# -- seeding ---------------------------------------------------------------------------------------


def member_ids(workspace_id: str, n: int) -> list[str]:
    return [f"{workspace_id[:8]}-m{i:07d}" for i in range(n)]


async def seed_workspace(ctx, workspace_id: str, members: list[str]) -> None:
    now = datetime.now(timezone.utc)
    async with ctx.db.transaction() as session:
        await session.execute(
            sa.insert(workspace_directory).values(
                workspace_id=workspace_id, hotel_id="hotel-bench", name="Bench Hotel", locale="fr",
                timezone="Europe/Paris", deleted_at=None, updated_at=now,
            )
        )
        await DirectoryRepository(session).upsert_members(
            [
                {
                    "member_id": m, "workspace_id": workspace_id, "hotel_id": "hotel-bench", "user_id": f"u-{m}",
                    "name": f"Member {i}", "email": f"{m}@bench.example.com", "locale": "fr",
                    "timezone": "Europe/Paris", "deleted_at": None, "updated_at": now,
                }
                for i, m in enumerate(members)
            ]
        )
        rows = [
            {
                "id": str(uuid.uuid4()), "member_id": m, "workspace_id": workspace_id, "user_id": f"u-{m}",
                "platform": "android", "subscription_id": f"sub-{m}", "is_active": True,
                "created_at": now, "updated_at": now,
            }
            for m in members
        ]
        for start in range(0, len(rows), 5000):
            await session.execute(sa.insert(push_subscription), rows[start:start + 5000])


def page_created(workspace_id: str, receivers: list[str]) -> dict:
    return build_envelope(
        "page.created", workspace_id=workspace_id, hotel_id="hotel-bench", workspace_name="Bench Hotel",
        payload={"id": f"page-{uuid.uuid4().hex[:8]}", "title": "Nouvelle politique RH"},
        channels=("push", "socket"), actor={"id": "bench-author", "name": "Ada Admin", "type": "member"},
        receiver_ids=receivers,
    )


async def publish_elsewhere(running, envelopes: list[dict], tmp: Path,
                            prefix: str = "roomee.notification") -> tuple[float, float]:
    """Publish from another process, as the producing service would (RabbitMQ only): the
    publisher then does not share this process's CPU with the pipeline it measures.
    Returns (start, end) of the publish, on the shared monotonic clock."""
    path = tmp / f"publish-{uuid.uuid4().hex}.json"
    settings = running.settings
    path.write_text(json.dumps({"url": settings.broker_url, "exchange": settings.exchange, "envelopes": envelopes,
                                "prefix": prefix}))
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--publish-file", str(path), stdout=asyncio.subprocess.PIPE
    )
    start = float((await child.stdout.readline()).decode())
    out, _ = await child.communicate()
    if child.returncode:
        raise RuntimeError("the publisher process failed")
    return start, float(out.decode())


async def publish_file(path: str) -> None:
    """The child process: publish the envelopes of a file (confirmed), print start and end times."""
    from roomee.kit.events.amqp import AmqpBroker

    spec = json.loads(Path(path).read_text())
    broker = AmqpBroker(spec["url"], spec["exchange"])
    await broker.start()
    messages = [
        Message(f"{spec['prefix']}.{e['type']}", json.dumps(e).encode(), message_id=e["id"])
        for e in spec["envelopes"]
    ]
    print(time.perf_counter(), flush=True)
    await broker.publish_batch(messages)
    print(time.perf_counter(), flush=True)
    await broker.close()


async def publish(running, envelopes: list[dict], prefix: str = "roomee.notification") -> None:
    await running.platform.broker.publish_batch(
        [Message(f"{prefix}.{e['type']}", json.dumps(e).encode(), message_id=e["id"]) for e in envelopes]
    )


async def ceiling(running, ctx, k: int, tmp: Path) -> tuple[float, float]:
    """The ceiling of the throughput: the kit's batch consumer (inbox, one transaction per batch,
    acks) with an EMPTY handler, on a queue of its own, fed the same K envelopes the same way.
    Seconds from the publish to the K-th event handed to the handler, and this process's CPU
    seconds meanwhile."""
    from roomee.kit.events.consumer import EventConsumer

    handled = 0
    done = asyncio.Event()

    async def empty(_session, batch) -> None:
        nonlocal handled
        handled += len(batch)
        if handled >= k:
            done.set()

    consumer = EventConsumer(ctx.db, running.platform.broker, "notification",
                             f"{ctx.settings.queue_prefix}notification-bench-ceiling", ["roomee.benchceiling.#"],
                             None, batch_handler=empty)
    await consumer.start()
    try:
        envelopes = [page_created(str(uuid.uuid4()), [str(uuid.uuid4())]) for _ in range(k)]
        cpu = cpu_seconds()
        if ARGS.backend == "real":
            start, _end = await publish_elsewhere(running, envelopes, tmp, prefix="roomee.benchceiling")
        else:
            start = time.perf_counter()
            await publish(running, envelopes, prefix="roomee.benchceiling")
        await asyncio.wait_for(done.wait(), ARGS.timeout)
        return time.perf_counter() - start, cpu_seconds() - cpu
    finally:
        await consumer.stop()


async def receiver_count(ctx, *, notification_id: str | None = None, workspace_id: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(notification_receiver)
    if notification_id is not None:
        query = query.where(notification_receiver.c.notification_id == notification_id)
    if workspace_id is not None:
        query = query.where(notification_receiver.c.workspace_id == workspace_id)
    async with ctx.db.transaction() as session:
        return int((await session.execute(query)).scalar_one())


# -- ours ------------------------------------------------------------------------------------------


async def fanout(running, ctx, probe: Probe, n: int) -> dict:
    workspace_id = str(uuid.uuid4())
    members = member_ids(workspace_id, n)
    await seed_workspace(ctx, workspace_id, members)
    envelope = page_created(workspace_id, members)
    nid = notification_id_for(envelope["id"])
    batches = math.ceil(n / PUSH_BATCH)
    cpu = cpu_seconds()
    start = time.perf_counter()
    await publish(running, [envelope])
    rows_at = push_at = socket_at = None
    deadline = start + ARGS.timeout
    polls = 0
    while rows_at is None or push_at is None or socket_at is None:
        now = time.perf_counter()
        if now > deadline:
            raise TimeoutError(f"fan-out {n}: rows={rows_at} push={push_at} socket={socket_at}")
        # The fake records when it received the last request, so it is asked only every 50 ms.
        if push_at is None and polls % 10 == 0:
            seen = await probe.push(nid)
            if seen["requests"] >= batches:
                push_at = seen["last"]
                pushed_ids = seen["ids"]
        if socket_at is None and nid in probe.socket_done:
            socket_at = probe.socket_done[nid]
        # The rows are committed when the emit begins (it runs after the commit); they are
        # counted then, once: polling the database all along would take CPU from the pipeline.
        if rows_at is None and nid in probe.socket_called:
            rows_at = probe.socket_called[nid]
            assert await receiver_count(ctx, notification_id=nid) >= n
        polls += 1
        await asyncio.sleep(POLL)
    cpu = cpu_seconds() - cpu
    assert pushed_ids == n, (pushed_ids, n)
    return {"rows": rows_at - start, "push": push_at - start, "socket": socket_at - start, "batches": batches,
            "cpu": cpu}


async def throughput(running, ctx, probe: Probe, k: int, tmp: Path) -> dict:
    workspace_id = str(uuid.uuid4())
    members = member_ids(workspace_id, k)
    await seed_workspace(ctx, workspace_id, members)
    envelopes = [page_created(workspace_id, [m]) for m in members]
    socket_before, push_before = probe.socket_total, (await probe.push())["total"]
    cpu = cpu_seconds()
    if ARGS.backend == "real":
        start, end = await publish_elsewhere(running, envelopes, tmp)
        published = end - start
    else:  # the embedded bus lives in this process
        start = time.perf_counter()
        await publish(running, envelopes)
        published = time.perf_counter() - start
    rows_at = await wait_until(
        lambda: _rows_and_sockets(ctx, workspace_id, k, probe, socket_before), ARGS.timeout
    )
    cpu = cpu_seconds() - cpu
    seen: dict = {}

    async def pushed() -> bool:
        seen.update(await probe.push())
        return seen["total"] - push_before >= k

    await wait_until(pushed, ARGS.timeout)
    push_at = seen["last"]
    return {"publish": published, "pipeline": rows_at - start, "push": push_at - start, "cpu": cpu}


async def _rows_and_sockets(ctx, workspace_id: str, k: int, probe: Probe, socket_before: int) -> bool:
    if probe.socket_total - socket_before < k:
        return False
    return await receiver_count(ctx, workspace_id=workspace_id) >= k


# -- naive -----------------------------------------------------------------------------------------


def _naive_push_body(key: str, subscription_id: str) -> dict:
    return {
        "app_id": "roomee-app", "contents": {"en": "Nouvelle politique RH"}, "headings": {"en": "Ada Admin"},
        "data": {"naive": key}, "include_subscription_ids": [subscription_id], "idempotency_key": str(uuid.uuid4()),
    }


async def _naive_one(ctx, http: httpx.AsyncClient, notification_id: str, member: str, workspace_id: str,
                     key: str, *, with_notification: bool) -> None:
    insert = _insert_for(ctx)
    now = datetime.now(timezone.utc)
    async with ctx.db.transaction() as session:
        if with_notification:
            await session.execute(
                sa.insert(notification).values(
                    id=notification_id, event_id=notification_id, workspace_id=workspace_id, hotel_id="hotel-bench",
                    type="page.created", category="news", actor_id="bench-author", actor_name="Ada Admin",
                    actor_type="member", renders={"fr": {"title": "t", "body": "b"}}, data={}, created_at=now,
                )
            )
        await session.execute(
            sa.insert(notification_receiver).values(
                notification_id=notification_id, member_id=member, workspace_id=workspace_id, locale="fr",
                channels="socket,push", created_at=now,
            )
        )
        stmt = insert(unread_counter).values(member_id=member, workspace_id=workspace_id, count=1, updated_at=now)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[unread_counter.c.member_id, unread_counter.c.workspace_id],
                set_={"count": unread_counter.c.count + 1, "updated_at": stmt.excluded.updated_at},
            )
        )
    response = await http.post("/notifications", json=_naive_push_body(key, f"sub-{member}"),
                               headers={"Authorization": "Key test-key"})
    response.raise_for_status()


def _insert_for(ctx):
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if ctx.db.is_postgres else sqlite.insert


async def naive_fanout(ctx, http: httpx.AsyncClient, n: int) -> tuple[float, bool]:
    measured = min(n, ARGS.naive_cap)
    workspace_id = str(uuid.uuid4())
    members = member_ids(workspace_id, measured)
    notification_id = str(uuid.uuid4())
    start = time.perf_counter()
    for m in members:
        await _naive_one(ctx, http, notification_id, m, workspace_id, notification_id, with_notification=False)
    elapsed = time.perf_counter() - start
    return elapsed * n / measured, measured < n


async def naive_events(ctx, http: httpx.AsyncClient, k: int) -> tuple[float, bool]:
    measured = min(k, ARGS.naive_events)
    workspace_id = str(uuid.uuid4())
    members = member_ids(workspace_id, measured)
    start = time.perf_counter()
    for m in members:
        notification_id = str(uuid.uuid4())
        await _naive_one(ctx, http, notification_id, m, workspace_id, notification_id, with_notification=True)
    elapsed = time.perf_counter() - start
    return elapsed * k / measured, measured < k


# -- main ------------------------------------------------------------------------------------------


async def main() -> None:
    sizes = [int(s) for s in ARGS.sizes.split(",") if s.strip()]
    print(f"backend={ARGS.backend} cores={os.cpu_count()} python={sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="roomee-bench-") as tmp:
        url_file = Path(tmp) / "fake-url"
        fake = subprocess.Popen([sys.executable, __file__, "--serve-fake", str(url_file)], stdin=subprocess.PIPE)
        try:
            while not url_file.exists() or not url_file.read_text():
                if fake.poll() is not None:
                    raise RuntimeError("the OneSignal fake did not start")
                await asyncio.sleep(0.05)
            fake_url = url_file.read_text()
            probe = Probe(fake_url)
            settings = make_settings(
                Path(tmp), push_backend="onesignal", onesignal_url=fake_url, onesignal_app_id="roomee-app",
                onesignal_api_key="test-key", log_level="ERROR",
            )
            async with running_platform(settings, "notification") as running, \
                    httpx.AsyncClient(base_url=fake_url, timeout=30) as http:
                ctx = running.platform.services["notification"]
                probe.wrap_socket(ctx.state["channels"].socket)
                replicas = start_replicas(settings, ARGS.replicas - 1, Path(tmp))
                await fanout(running, ctx, probe, 100)  # warm-up: connections, caches, queues
                results = []
                for n in sizes:
                    ours = await fanout(running, ctx, probe, n)
                    naive, extrapolated = await naive_fanout(ctx, http, n)
                    results.append((n, ours, naive, extrapolated))
                    print(f"  fan-out {n}: rows {ours['rows']:.3f} s, push {ours['push']:.3f} s, "
                          f"socket {ours['socket']:.3f} s; naive {naive:.2f} s"
                          f"{' (extrapolated)' if extrapolated else ''}", flush=True)
                events = None
                if ARGS.events:
                    ours_k = await throughput(running, ctx, probe, ARGS.events, Path(tmp))
                    ours_k["ceiling"], ours_k["ceiling_cpu"] = await ceiling(running, ctx, ARGS.events, Path(tmp))
                    naive_k, k_extrapolated = await naive_events(ctx, http, ARGS.events)
                    events = (ours_k, naive_k, k_extrapolated)
                for replica in replicas:
                    replica.stdin.close()
                    replica.wait(30)
            await probe.aclose()
        finally:
            fake.stdin.close()
            fake.wait(10)
            await drop_test_resources()
    report(results, events)


def report(results, events) -> None:
    print()
    print(f"Notification pipeline benchmark — backend {ARGS.backend}, {os.cpu_count()} cores")
    print("Fan-out: one page.created to N receivers, seconds from publish")
    header = (f"{'N':>8} {'rows':>8} {'push':>8} {'(reqs)':>7} {'socket':>8} {'cpu':>7} | {'naive':>9} {'ratio':>7}"
              "  (target: slowest <= 0.3 s at 10 000)")
    print(header)
    print("-" * len(header))
    for n, ours, naive, extrapolated in results:
        slowest = max(ours["rows"], ours["push"], ours["socket"])
        print(f"{n:>8} {ours['rows']:>8.3f} {ours['push']:>8.3f} {ours['batches']:>7} {ours['socket']:>8.3f} "
              f"{ours['cpu']:>7.3f} | "
              f"{naive:>8.2f}{'*' if extrapolated else ' '} {naive / slowest:>6.0f}x")
    print("  cpu = CPU seconds of this process until all three; "
          "ratio = naive / slowest of (rows, push, socket); * = naive extrapolated linearly from "
          f"{ARGS.naive_cap} receivers")
    if events:
        ours_k, naive_k, extrapolated = events
        k = ARGS.events
        print(f"Throughput: {k} single-receiver events published at once "
              f"({'from another process, ' if ARGS.backend == 'real' else ''}publish took {ours_k['publish']:.3f} s)")
        rate = k / ours_k["pipeline"]
        push_rate = k / ours_k["push"]
        naive_rate = k / naive_k
        print(f"  rows committed + socket emits: {ours_k['pipeline']:.3f} s = {rate:,.0f} events/s")
        print(f"  push requests received:        {ours_k['push']:.3f} s = {push_rate:,.0f} events/s")
        print(f"  naive (1 tx + 1 push each):    {naive_k:.3f} s = {naive_rate:,.0f} events/s"
              f"{' (extrapolated from %d)' % ARGS.naive_events if extrapolated else ''}")
        print(f"  ratio ours/naive: {rate / naive_rate:.1f}x (rows+socket), {push_rate / naive_rate:.1f}x (with push)")
        ceiling_rate = k / ours_k["ceiling"]
        print(f"  ceiling, the kit's batch consumer with an empty handler: {ours_k['ceiling']:.3f} s = "
              f"{ceiling_rate:,.0f} events/s")
        print(f"  ratio ours/ceiling: {rate / ceiling_rate:.2f}x (rows+socket), {push_rate / ceiling_rate:.2f}x "
              f"(with push); target >= 0.6x")
        ours_cpu, ceiling_cpu = ours_k["cpu"] / k * 1000, ours_k["ceiling_cpu"] / k * 1000
        print(f"  CPU of this process per event: ours {ours_cpu:.3f} ms (until rows+socket, push work included), "
              f"ceiling {ceiling_cpu:.3f} ms; ceiling/ours {ceiling_cpu / ours_cpu:.2f}x")


if __name__ == "__main__":
    if ARGS.serve_fake:
        asyncio.run(serve_fake(ARGS.serve_fake))
    elif ARGS.serve_replica:
        run(serve_replica(ARGS.serve_replica))
    elif ARGS.publish_file:
        asyncio.run(publish_file(ARGS.publish_file))
    else:
        run(main())  # the event loop ``roomee run`` uses
