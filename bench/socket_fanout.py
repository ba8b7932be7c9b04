"""Benchmark of the Socket.IO fan-out (issue 12): one ``notification:new`` broadcast to every client of
one room, our server against the official Node.js Socket.IO server, same clients, same run. A script,
not a test.

    python bench/socket_fanout.py [--clients 3000] [--broadcasts 7] [--idle 0]

Needs Node.js and ``npm ci`` in bench/socketio_reference/ (socket.io and socket.io-client, pinned by its
package-lock.json; node_modules is not in git).

- Reference: bench/socketio_reference/server.js, the official server (websocket transport), every client in
  the room ``workspace:bench``.
- Ours: the notification target as ``roomee run`` serves it (uvicorn, uvloop, one process, with auth and
  members, embedded backend so one process holds every socket), clients signed in with a member token
  and joined to their workspace room by the server; the broadcast is the notification dispatcher's
  ``SocketServer.to_workspace``.
- Clients: ``--clients`` socket.io-client sockets (websocket transport) in one Node.js process per server
  (bench/socketio_reference/clients.js), the same for every server.
- The servers run side by side and take turns: each round is one broadcast by each, so every server
  meets the machine's load of the same moment (the machine is shared; measured one after the other,
  minutes apart, the ratio swung between 0.4x and 8x).

A broadcast's time runs from the server's emit call to the arrival at the last client (one clock: the
same machine). Printed: the median and the best of ``--broadcasts`` broadcasts, how long the emit call
held the server's event loop, and the ratio ours / Node (target <= 1.0). Ours is measured twice, with
python-socketio's own emit (a task per recipient, each encoding the packet) and as shipped (the packet
encoded and framed once, the frame written to each connection). Memory: the server's RSS growth per
connected client (MB per connection); ``--idle N`` also connects N idle clients to our server alone and
reports its MB per connection. ``--profile`` prints cProfile's top functions of our broadcasts (shipped)
on stderr.

``--broker N`` measures instead what the RabbitMQ fan-out between replicas costs (needs RabbitMQ at
``ROOMEE_TEST_BROKER_URL``, default 127.0.0.1): N single-member emits sent by one replica, in batches of
100 as the notification dispatcher sends them, then N/10 sent one per message, and the CPU a second
replica holding none of their rooms spends on them (ms per 1000 emits), in the same run for the fan-out
before issue 22 (one fanout exchange: every replica's queue gets every emit) and as shipped (by room: a
replica's queue is bound to the rooms of its sockets), with the ratio after / before.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "bench" / "socketio_reference"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=3000)
    parser.add_argument("--broadcasts", type=int, default=7)
    parser.add_argument("--idle", type=int, default=0, help="idle connections held by our server (memory)")
    parser.add_argument("--profile", action="store_true", help="cProfile our broadcasts (stderr)")
    parser.add_argument("--broker", type=int, default=0, metavar="N", help="measure the RabbitMQ fan-out instead")
    parser.add_argument("--serve", metavar="SETTINGS_FILE", help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--replica", metavar="EXCHANGE", help=argparse.SUPPRESS)  # the --broker child
    return parser.parse_args()


ARGS = parse_args()
os.environ.setdefault("ROOMEE_TEST_BACKEND", "embedded")
PASSWORD = "bench password 1234"
EMAIL = "ada@bench.example.com"


def payload(n: int) -> dict:
    return {
        "id": f"bench-{n}", "category": "news", "title": "Nouvelle page publiée",
        "body": "Les horaires du restaurant changent lundi.",
        "data": {"pageId": "8f0c3c0e-6c1e-4d55-9a7e-3a4c2f0e9d11", "workspaceId": "bench"},
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def serve(settings_file: str) -> None:
    """The child: the notification target (with auth and members); commands on stdin, answers on stdout."""
    import gc

    from roomee.kit.settings import Settings
    from tests.fixtures.platform import running_platform

    # stdout carries the answers only; the platform's logs go to stderr (a full pipe would stall the loop).
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    settings = Settings.model_validate_json(Path(settings_file).read_text())
    loop = asyncio.get_running_loop()
    async with running_platform(settings, "auth,members,notification") as running:
        server = running.platform.services["notification"].state["socket"]
        if os.environ.get("ROOMEE_BENCH_STOCK_EMIT"):
            # python-socketio's own emit (a task per recipient), for the before/after column.
            from functools import partial

            from socketio.async_manager import AsyncManager

            server.manager.emit = partial(AsyncManager.emit, server.manager)
        profiler = None
        if os.environ.get("ROOMEE_BENCH_PROFILE"):
            import cProfile

            profiler = cProfile.Profile()
        print("ready", file=answers, flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command, *args = line.split()
            if command == "broadcast":
                if profiler is not None:
                    profiler.enable()  # until the next command: the emit and the writes after it
                started = time.time()
                await server.to_workspace(args[1], "notification:new", payload(int(args[0])))
                held = time.time() - started
                print(json.dumps({"started": started * 1000, "held": held * 1000}), file=answers, flush=True)
                continue
            if profiler is not None:
                profiler.disable()
            if command == "memory":
                gc.collect()
                print(json.dumps({"rss": rss_bytes(), "clients": server.connected}), file=answers, flush=True)
        if profiler is not None:
            import pstats

            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)


def node(*args: str) -> subprocess.Popen:
    return subprocess.Popen(["node", *args], cwd=REFERENCE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def expect(process: subprocess.Popen, what: str) -> str:
    line = process.stdout.readline().strip()
    if line != what:
        raise RuntimeError(f"expected {what!r}, got {line!r}")
    return line


def ask(process: subprocess.Popen, command: str) -> dict:
    process.stdin.write(command + "\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())


def stop(process: subprocess.Popen) -> None:
    process.stdin.close()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def broadcasts(targets: dict[str, tuple[subprocess.Popen, subprocess.Popen, str]]) -> dict[str, dict]:
    """``--broadcasts`` rounds, each one broadcast by every server in turn (one at a time, so the servers
    share the machine's load of the moment rather than each its own minutes); times in ms."""
    times: dict[str, list[float]] = {name: [] for name in targets}
    held: dict[str, list[float]] = {name: [] for name in targets}
    for n in range(ARGS.broadcasts):
        for name, (server, clients, room_arg) in targets.items():
            emit = ask(server, f"broadcast {n} {room_arg}".strip())
            arrival = json.loads(clients.stdout.readline())
            times[name].append(arrival["last"] - emit["started"])
            held[name].append(emit["held"])
            time.sleep(0.3)
    return {name: {"median": statistics.median(times[name]), "best": min(times[name]),
                   "held": statistics.median(held[name])} for name in targets}


def connect(url: str, count: int, token: str) -> subprocess.Popen:
    clients = node("clients.js", url, str(count), token)
    expect(clients, "connected")
    time.sleep(1.0)
    return clients


def claims_of(token: str) -> dict:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


async def sign_in(settings) -> str:
    import httpx

    from roomee.bootstrap import bootstrap_admin
    from tests.fixtures.platform import sign_in as fixture_sign_in

    await bootstrap_admin(settings, hotel_name="Hotel Bench", email=EMAIL, password=PASSWORD,
                          first_name="Ada", last_name="Admin")
    async with httpx.AsyncClient(base_url=settings.base_url, timeout=60) as http:
        return (await fixture_sign_in(http, EMAIL, PASSWORD))["accessToken"]


def memory_per_client(server: subprocess.Popen, before: dict) -> float:
    after = ask(server, "memory")
    return (after["rss"] - before["rss"]) / max(after["clients"] - before["clients"], 1) / 2**20


async def start_ours(stack: ExitStack, *, stock: bool) -> dict:
    """Our server (a child process) with ``--clients`` clients connected; stopped by ``stack``."""
    from tests.fixtures.platform import make_settings

    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="roomee-bench-"))
    settings = make_settings(Path(tmp), log_level="ERROR")
    settings_file = Path(tmp) / "platform.json"
    settings_file.write_text(settings.model_dump_json())
    env = os.environ | ({"ROOMEE_BENCH_STOCK_EMIT": "1"} if stock else {})
    if ARGS.profile and not stock:
        env["ROOMEE_BENCH_PROFILE"] = "1"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(settings_file)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    stack.callback(stop, server)
    expect(server, "ready")
    token = await sign_in(settings)
    before = ask(server, "memory")
    clients = connect(settings.base_url, ARGS.clients, token)
    stack.callback(stop, clients)
    return {"server": server, "clients": clients, "room": claims_of(token)["wid"], "before": before,
            "url": settings.base_url, "token": token}


def use_fanout_exchange() -> None:
    """The fan-out as it was before issue 22 (for the bench's before column only): every emit on one
    fanout exchange, so every replica's queue gets every emit, whatever rooms its sockets are in."""
    import aio_pika

    from roomee.notification.realtime import fanout, server

    class FanoutManager(fanout.SharedManager):
        async def _exchange(self, channel):
            return await channel.declare_exchange(self.channel, aio_pika.ExchangeType.FANOUT)

        def routing_keys(self, data):
            return [fanout.ALL_KEY]

    server.SharedManager = FanoutManager


async def replica(argument: str) -> None:
    """The ``--broker`` child: a replica holding no socket of the emits' rooms (one fake socket in the
    marker's room); answers its CPU time and the emits its queue brought."""
    from roomee.notification.realtime.server import SocketServer
    from tests.fixtures.platform import AMQP_URL

    mode, exchange = argument.split(":", 1)
    if mode == "fanout":
        use_fanout_exchange()
    server = SocketServer(None, broker_url=AMQP_URL, exchange=exchange)
    handled = markers = 0
    handle_emit = server.manager._handle_emit

    async def counted(message):
        nonlocal handled, markers
        handled += 1
        markers += message.get("event") == MARKER
        await handle_emit(message)

    server.manager._handle_emit = counted
    await server.start()
    sid = await server.manager.connect("bench-eio-sid", "/")
    await server.manager.enter_room(sid, "/", "member:marker")
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        print(json.dumps({"cpu": time.process_time(), "handled": handled, "markers": markers,
                          "messages": server.manager.received_messages}), flush=True)
    await server.close()


MARKER = "bench:marker"


async def measure_broker(count: int) -> None:
    """Each mode (fanout: before issue 22; rooms: as shipped) with its own exchange and replica child."""
    import aio_pika

    from roomee.notification.realtime import server as server_module
    from roomee.notification.realtime.fanout import EXCHANGE_SUFFIX
    from tests.fixtures.platform import AMQP_URL

    shipped = server_module.SharedManager
    rows: dict[tuple[str, str], tuple[float, float, int]] = {}

    async def phase(mode: str, name: str, other: subprocess.Popen, sender, emits: int, send) -> None:
        before = ask(other, "cpu")
        cpu = time.process_time()
        await send()
        cpu = time.process_time() - cpu
        await sender.to_members(["marker"], MARKER, {})  # after every emit of the phase, on every queue
        while (after := ask(other, "cpu"))["markers"] <= before["markers"]:
            await asyncio.sleep(0.05)
        other_ms = (after["cpu"] - before["cpu"]) / emits * 1e6
        rows[mode, name] = (other_ms, cpu / emits * 1e6, after["handled"] - before["handled"] - 1)

    for mode in ("fanout", "rooms"):
        exchange = f"bench-{os.getpid()}-{mode}"
        server_module.SharedManager = shipped
        if mode == "fanout":
            use_fanout_exchange()
        other = subprocess.Popen([sys.executable, __file__, "--replica", f"{mode}:{exchange}"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        sender = server_module.SocketServer(None, broker_url=AMQP_URL, exchange=exchange)

        async def batched() -> None:
            for batch in range(0, count, 100):
                await sender.to_members_many(
                    [("notification:new", payload(n), [f"member-{n}"]) for n in range(batch, min(batch + 100, count))]
                )

        async def one_by_one() -> None:
            for n in range(count // 10):
                await sender.to_members([f"member-{n}"], "notification:new", payload(n))

        try:
            expect(other, "ready")
            await sender.start()
            await phase(mode, "batches", other, sender, count, batched)
            await phase(mode, "single", other, sender, count // 10, one_by_one)
        finally:
            await sender.close()
            stop(other)
            connection = await aio_pika.connect(AMQP_URL)
            async with connection:
                await (await connection.channel()).exchange_delete(f"{exchange}{EXCHANGE_SUFFIX}")
    server_module.SharedManager = shipped

    names = {"batches": f"{count} emits in batches of 100 (to_members_many, the dispatcher's notification:new)",
             "single": f"{count // 10} emits, one message each (to_members / to_workspace)"}
    print("| emits | fan-out | a replica holding none of the rooms: ms CPU per 1000 emits | emits its queue brought "
          "| the emitting replica: ms CPU per 1000 emits |")
    print("|---|---|---:|---:|---:|")
    for name, label in names.items():
        for mode in ("fanout", "rooms"):
            other_ms, own_ms, handled = rows[mode, name]
            print(f"| {label} | {'fanout exchange (before)' if mode == 'fanout' else 'by room (after)'} "
                  f"| {other_ms:.2f} | {handled} | {own_ms:.2f} |")
    for name, label in names.items():
        before, after = rows["fanout", name][0], rows["rooms", name][0]
        print(f"{label}: a replica holding none of the rooms, after / before = {after / before:.3f}x")


async def main() -> None:
    if ARGS.broker:
        return await measure_broker(ARGS.broker)
    if not (REFERENCE / "node_modules" / "socket.io").exists():
        raise SystemExit(f"socket_fanout.py needs the Node reference server: run `npm ci` in {REFERENCE} (node and npm from Debian)")
    from tests.fixtures.platform import free_port

    print(f"cores={os.cpu_count()} python={sys.version.split()[0]} "
          f"node={subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()} "
          f"clients={ARGS.clients} broadcasts={ARGS.broadcasts}", flush=True)
    node_name = "Node.js socket.io 4.8.1 (reference)"
    stock_name = "ours with python-socketio's own emit (a task and an encoding per recipient)"
    our_name = "ours: the notification target as shipped"
    idle_mb = None
    with ExitStack() as stack:
        port = free_port()
        reference = node("--expose-gc", "server.js", str(port))
        stack.callback(stop, reference)
        expect(reference, "ready")
        node_before = ask(reference, "memory")
        node_clients = connect(f"http://127.0.0.1:{port}", ARGS.clients, "-")
        stack.callback(stop, node_clients)
        stock = await start_ours(stack, stock=True)
        ours = await start_ours(stack, stock=False)
        rows = broadcasts({node_name: (reference, node_clients, ""),
                           stock_name: (stock["server"], stock["clients"], stock["room"]),
                           our_name: (ours["server"], ours["clients"], ours["room"])})
        node_row, stock_row, our_row = rows[node_name], rows[stock_name], rows[our_name]
        node_row["mb"] = memory_per_client(reference, node_before)
        stock_row["mb"] = memory_per_client(stock["server"], stock["before"])
        our_row["mb"] = memory_per_client(ours["server"], ours["before"])
        if ARGS.idle:
            stack.callback(stop, connect(ours["url"], ARGS.idle, ours["token"]))
            idle_mb = memory_per_client(ours["server"], ours["before"])

    print(f"\n| server | {ARGS.clients} clients: median ms | best ms | emit call held the loop ms | MB per connection |")
    print("|---|---:|---:|---:|---:|")
    for name, row in ((node_name, node_row), (stock_name, stock_row), (our_name, our_row)):
        print(f"| {name} | {row['median']:.0f} | {row['best']:.0f} | {row['held']:.1f} | {row['mb']:.3f} |")
    print(f"\nours / Node (median): {our_row['median'] / node_row['median']:.2f}x (target <= 1.0); "
          f"python-socketio's own emit / Node: {stock_row['median'] / node_row['median']:.2f}x")
    if idle_mb is not None:
        print(f"ours with {ARGS.clients + ARGS.idle} connections: {idle_mb:.3f} MB per connection")


if __name__ == "__main__":
    if ARGS.replica:
        from roomee.kit.loop import run

        run(replica(ARGS.replica))
    elif ARGS.serve:
        from roomee.kit.loop import run

        run(serve(ARGS.serve))
    else:
        asyncio.run(main())
