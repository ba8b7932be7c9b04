"""Benchmark of the request path (issue 12): every read route of every target against a hello-world
served by the same process, in the same run. A script, not a test.

    python bench/http_paths.py [--backend both|real|embedded] [--seconds 5] [--connections 16]
                               [--only SUBSTRING] [--profile ROUTE_NAME]

One child process serves ``--target all`` (uvicorn, uvloop, one worker, as ``roomee run`` does) and,
on a second port of the same event loop, a bare FastAPI hello-world (``GET /`` -> ``{"hello": "world"}``):
the ceiling of a Python ASGI request on this machine, measured under the same CPU, the same interpreter and
the same run. ``real``: PostgreSQL + RabbitMQ in schemas/queues of their own, dropped at the end;
``embedded``: SQLite files and the in-process bus.

The load is ``wrk`` (Debian package ``wrk``) with one thread and ``--connections`` keep-alive connections,
one route at a time for ``--seconds`` after a one-second warm-up. Columns: req/s; CPU per request (the
server process's user+system CPU over the run, from /proc, divided by the requests answered); p50/p99 from
wrk's latency distribution; the ratio of req/s to the hello-world's. A row whose route does not answer 200
is printed as such, never measured. ``--profile NAME`` records the server with py-spy (pinned in the
``bench`` extra) while NAME is loaded and prints the top functions by own time.

``--rate R`` (default 500) then loads each route at R req/s with ``autocannon -R`` (npm package ``autocannon``,
installed globally; skipped when absent) for the p99 at that fixed load. The server's output goes to a log file,
whose ERROR lines are counted at the end.

Targets: issue 12, an authenticated read of one page >= 0.5x hello-world on PostgreSQL; p99 <= 20 ms at
500 req/s; /users/me and sign-in within 2x of a plain read. Issue 22: reads by id and first pages >= 0.3x
the hello-world by CPU (the column ``× by CPU``: the hello-world's CPU per request over the route's; routes
marked hot are served by ``roomee.kit.hot``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))

import _harness as harness  # noqa: E402
from _harness import cpu_seconds  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("both", "real", "embedded"), default="both")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per route")
    parser.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections")
    parser.add_argument("--only", help="measure only the routes whose name contains this")
    parser.add_argument("--profile", metavar="ROUTE_NAME", help="py-spy the server while this route is loaded")
    parser.add_argument("--pool-size", type=int, help="PostgreSQL connections per target, no overflow (default: "
                        "as deployed, 5 + 10 overflow, opened and closed per request past 5 in flight); with "
                        "--only, so that the pools of all targets stay under max_connections")
    parser.add_argument("--rate", type=int, default=500,
                        help="also load each route at this fixed rate (autocannon -R) for its p99; 0: not")
    parser.add_argument("--cold", action="store_true", help="also measure each hot read with the hot path off "
                        "(FastAPI's full path, same run): what roomee.kit.hot buys")
    parser.add_argument("--serve", metavar="SETTINGS_FILE", help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--hello-port", type=int, help=argparse.SUPPRESS)  # the child's hello-world port
    return parser.parse_args()


ARGS = parse_args()
if ARGS.backend != "both":
    os.environ["ROOMEE_TEST_BACKEND"] = ARGS.backend

PASSWORD = "bench password 1234"
EMAIL = "ada@bench.example.com"


async def serve(settings_file: str, hello_port: int) -> None:
    """The child: the whole platform on its port and a bare FastAPI hello-world on ``hello_port``,
    both on this process's one event loop, until stdin closes."""
    from roomee.kit.settings import Settings
    from tests.fixtures.platform import running_platform

    settings = Settings.model_validate_json(Path(settings_file).read_text())
    hello = await harness.start_hello(hello_port)
    async with running_platform(settings, "all") as running:
        print("ready", flush=True)
        # Lines from the parent: "cold" sends every request to FastAPI (the hot reads off), "hot" back.
        hot = running.app.state.hot_routes
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            hot.enabled = line.strip() != "cold"
        hello.should_exit = True
        await hello.task


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def seed(settings) -> tuple[list[tuple[str, str, str, dict[str, str], str | None]], dict]:
    """Data behind every read route, made through the API; the routes as (target, name, path, headers, body)."""
    import httpx

    from roomee.bootstrap import bootstrap_admin
    from tests.fixtures.platform import sign_in

    await bootstrap_admin(settings, hotel_name="Hotel Bench", email=EMAIL, password=PASSWORD,
                          first_name="Ada", last_name="Admin")
    async with httpx.AsyncClient(base_url=settings.base_url, timeout=60) as http:
        session = await sign_in(http, EMAIL, PASSWORD)
        member = {"Authorization": f"Bearer {session['accessToken']}"}
        claims = claims_of(session["accessToken"])

        async def service(client_id: str) -> dict[str, str]:
            form = {"grant_type": "client_credentials", "client_id": client_id,
                    "client_secret": settings.client_secret_of(client_id)}
            answer = await http.post("/oauth/token", data=form)
            answer.raise_for_status()
            return {"Authorization": f"Bearer {answer.json()['access_token']}"}

        operator, hotel_svc = await service("operator"), await service("hotel")
        feed = (await http.post("/api/v1/pages", json={"pageType": "feed", "title": "Actualités"}, headers=member)).json()["id"]
        body = "<p>" + "Les horaires du restaurant changent à partir de lundi. " * 20 + "</p>"
        articles = [
            (await http.post("/api/v1/pages", json={"pageType": "article", "parentId": feed, "title": f"Article {n}",
                                                    "content": body}, headers=member)).json()["id"]
            for n in range(20)
        ]
        hotel = await http.post("/hotel/add", headers=operator | {"Idempotency-Key": "bench-hotel"}, json={
            "name": "Hotel Provisioned", "email": "desk@bench.example.com", "phone": "+33102030405",
            "address": "1 rue de la Paix, Paris", "plan": "standard",
            "administrator": {"email": "boss@bench.example.com", "firstName": "Bo", "lastName": "Ss"}})
        hotel_id = hotel.json()["id"]
        for _ in range(300):  # the subscription row exists once provisioning passed its step
            if (await http.get(f"/sub/customers/{hotel_id}/subscription", headers=hotel_svc)).status_code == 200:
                break
            await asyncio.sleep(0.1)
    sign_in_body = json.dumps({"email": EMAIL, "password": PASSWORD})
    mid, wid = claims["mid"], claims["wid"]
    routes = [
        ("hello", "hello-world (bare FastAPI, same process)", "HELLO/", {}, None),
        ("kit", "GET /health", "/health", {}, None),
        ("auth", "GET /.well-known/jwks.json", "/.well-known/jwks.json", {}, None),
        ("auth", "GET /users/me", "/users/me", member, None),
        ("members", "GET /members/{id}", f"/members/{mid}", member, None),
        ("members", "GET /members/?limit=20", "/members/?limit=20", member, None),
        ("members", "GET /workspaces", "/workspaces", member, None),
        ("members", "GET /workspaces/{id}", f"/workspaces/{wid}", member, None),
        ("notification", "GET /api/v1/preferences", "/api/v1/preferences", member, None),
        ("notification", "GET /api/v1/notifications?limit=20", "/api/v1/notifications?limit=20", member, None),
        ("notification", "GET /api/v1/notifications/counters", "/api/v1/notifications/counters", member, None),
        ("notification", "GET /api/v1/subscriptions", "/api/v1/subscriptions", member, None),
        ("news", "GET /api/v1/pages/{id}", f"/api/v1/pages/{articles[0]}", member, None),
        ("news", "GET /api/v1/pages?parentId&limit=20", f"/api/v1/pages?parentId={feed}&limit=20", member, None),
        ("news", "GET /api/v1/pages/{id}/comments", f"/api/v1/pages/{articles[0]}/comments", member, None),
        ("media", "GET /media/storage", "/media/storage", member, None),
        ("media", "GET /media?limit=20", "/media?limit=20", member, None),
        ("billing", "GET /sub/plans", "/sub/plans", {}, None),
        ("billing", "GET /sub/customers/{id}/subscription", f"/sub/customers/{hotel_id}/subscription", hotel_svc, None),
        ("hotel", "GET /hotel/{id}", f"/hotel/{hotel_id}", operator, None),
        ("hotel", "GET /hotel/{id}/provisioning", f"/hotel/{hotel_id}/provisioning", operator, None),
        ("hotel", "GET /hotel?limit=20", "/hotel?limit=20", operator, None),
        # Last: its password hashes still queued when its run ends would weigh on the next route.
        ("auth", "POST /users/signIn", "/users/signIn", {"Content-Type": "application/json"}, sign_in_body),
    ]
    return routes, claims


async def _hot_paths(settings) -> set[str]:
    """The route templates marked hot (roomee.kit.hot): the bench's GETs of these are measured cold too."""
    from roomee import targets
    from roomee.kit.hot import HOT

    return {route.path for spec in targets.resolve("all") for route in spec.router.routes
            if getattr(getattr(route, "endpoint", None), HOT, False)}


_TEMPLATES = {"GET /users/me": "/users/me", "GET /members/{id}": "/members/{member_id}", "GET /members/?limit=20": "/members/",
              "GET /workspaces": "/workspaces", "GET /workspaces/{id}": "/workspaces/{workspace_id}",
              "GET /api/v1/preferences": "/api/v1/preferences", "GET /api/v1/notifications?limit=20": "/api/v1/notifications",
              "GET /api/v1/notifications/counters": "/api/v1/notifications/counters",
              "GET /api/v1/subscriptions": "/api/v1/subscriptions", "GET /api/v1/pages/{id}": "/api/v1/pages/{page_id}",
              "GET /api/v1/pages?parentId&limit=20": "/api/v1/pages",
              "GET /api/v1/pages/{id}/comments": "/api/v1/pages/{page_id}/comments"}


def _with_cold(routes: list, hot_paths: set[str]) -> list:
    """Each route whose template is hot followed by the same route named "... (cold)"."""
    out = []
    for route in routes:
        out.append(route)
        if _TEMPLATES.get(route[1]) in hot_paths:
            out.append((route[0], route[1] + " (cold)", *route[2:]))
    return out


def wrk(url: str, headers: dict[str, str], body: str | None, seconds: float) -> dict:
    return harness.wrk(url, headers, body, seconds, ARGS.connections)


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
                             "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_of(raw: Path, count: int = 25) -> list[tuple[str, float, float]]:
    """(function, own %, total %) from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        n = int(n)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + n
    rows = sorted(own.items(), key=lambda item: -item[1])[:count]
    return [(frame, 100 * n / samples, 100 * total[frame] / samples) for frame, n in rows]


async def run_backend(backend: str) -> list[dict]:
    os.environ["ROOMEE_TEST_BACKEND"] = backend
    import importlib

    import httpx

    import tests.fixtures.platform as fixtures
    from roomee.kit.settings import Settings

    fixtures = importlib.reload(fixtures)
    with tempfile.TemporaryDirectory(prefix="roomee-bench-") as tmp:
        # The relays' poll interval and the PostgreSQL pools as deployed (the tests poll faster and keep one
        # connection per target, so that under load every request would open and close a connection).
        deployed = {name: Settings.model_fields[name].default for name in ("db_pool_size", "db_max_overflow")}
        if ARGS.pool_size:
            deployed.update(db_pool_size=ARGS.pool_size, db_max_overflow=0)
        settings = fixtures.make_settings(Path(tmp), log_level="ERROR", outbox_poll_interval_seconds=0.5,
                                          **deployed)
        settings_file = Path(tmp) / "platform.json"
        settings_file.write_text(settings.model_dump_json())
        hello_port = fixtures.free_port()
        child = harness.start_child([sys.executable, __file__, "--backend", backend, "--serve", str(settings_file),
                                     "--hello-port", str(hello_port)], env=os.environ | {"ROOMEE_TEST_BACKEND": backend})
        results = []
        try:
            routes, _claims = await seed(settings)
            await asyncio.sleep(2)  # provisioning's last steps
            before = cpu_seconds(child.pid)
            await asyncio.sleep(3)
            idle = (cpu_seconds(child.pid) - before) / 3  # background work (relays, followers), CPU s per s
            print(f"{backend}: idle process CPU {1000 * idle:.0f} ms/s (subtracted from CPU per request)", flush=True)
            hot_paths = await _hot_paths(settings) if ARGS.cold else set()
            for target, name, path, headers, body in _with_cold(routes, hot_paths):
                if ARGS.only and ARGS.only not in name and target != "hello":
                    continue
                if ARGS.cold:  # each route with the hot path on, except the rows named "(cold)"
                    child.stdin.write(b"cold\n" if name.endswith("(cold)") else b"hot\n")
                    child.stdin.flush()
                url = f"http://127.0.0.1:{hello_port}/" if path == "HELLO/" else settings.base_url + path
                async with httpx.AsyncClient(timeout=30) as http:
                    answer = await http.request("POST" if body else "GET", url, headers=headers, content=body)
                check = wrk(url, headers, body, 1.0) if answer.status_code == 200 else {}  # warm-up
                # (A warm-up second may end before any answer: 16 sign-ins' password hashes take longer.)
                if answer.status_code != 200 or check["errors"]:
                    failure = f"{answer.status_code} {answer.text[:80]}"
                    if answer.status_code == 200:  # what a burst of as many requests as connections answers
                        async with httpx.AsyncClient(timeout=30) as http:
                            burst = await asyncio.gather(*(
                                http.request("POST" if body else "GET", url, headers=headers, content=body)
                                for _ in range(ARGS.connections)))
                        codes = Counter(f"{r.status_code} {r.json().get('error', '')}".strip() for r in burst)
                        failure = "non-2xx under load: " + ", ".join(f"{n}× {code}" for code, n in codes.items())
                    results.append({"backend": backend, "target": target, "name": name, "failed": failure})
                    continue
                recorder = None
                if ARGS.profile and ARGS.profile == name:
                    raw = Path(tempfile.gettempdir()) / f"roomee-profile-{backend}.txt"
                    recorder = profile(child.pid, ARGS.seconds, raw)
                before, started = cpu_seconds(child.pid), time.perf_counter()
                row = wrk(url, headers, body, ARGS.seconds)
                cpu = cpu_seconds(child.pid) - before - idle * (time.perf_counter() - started)
                row.update(backend=backend, target=target, name=name, cpu_ms=1000 * cpu / max(row["requests"], 1))
                if ARGS.rate and harness.has_autocannon():
                    paced = harness.at_rate(url, headers, body, ARGS.rate, ARGS.seconds)
                    row.update(rate_rps=paced["rps"], rate_p99=paced["p99"], rate_errors=paced["errors"])
                results.append(row)
                if recorder is not None:
                    recorder.wait(60)
                    print(f"\nprofile of {name} on {backend} (py-spy, own % / total %):")
                    for frame, own, total in top_of(raw):
                        print(f"  {own:5.1f}% {total:5.1f}%  {frame}")
                    print(flush=True)
        finally:
            errors = harness.stop_child(child)
            if errors:
                print(f"{backend}: the server logged {errors} errors (see {child.log})", flush=True)
            await fixtures.drop_test_resources()
    return results


def report(results: list[dict]) -> None:
    print(f"\n| backend | target | route | req/s | CPU ms/req | p50 ms | p99 ms | × hello-world | × by CPU | "
          f"p99 ms at {ARGS.rate} req/s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for backend in dict.fromkeys(r["backend"] for r in results):
        rows = [r for r in results if r["backend"] == backend]
        hello = next(r for r in rows if r["target"] == "hello")
        for r in rows:
            if r.get("failed"):
                print(f"| {backend} | {r['target']} | {r['name']} | {r['failed']} | | | | | | |")
                continue
            paced = ""
            if "rate_p99" in r:
                # Achieved below the asked rate: the route cannot carry it, and its p99 is a queue's.
                short = f" (only {r['rate_rps']:.0f} req/s)" if r["rate_rps"] < 0.95 * ARGS.rate else ""
                failed = f" ({r['rate_errors']} non-2xx)" if r["rate_errors"] else ""
                paced = f"{r['rate_p99']:.1f}{short}{failed}"
            # The ratio by CPU: the hello-world's CPU per request over the route's (issue 22's measure).
            by_cpu = f"{hello['cpu_ms'] / r['cpu_ms']:.2f}" if r["cpu_ms"] > 0 and r["requests"] else "—"
            print(f"| {backend} | {r['target']} | {r['name']} | {r['rps']:.0f} | {r['cpu_ms']:.2f} | "
                  f"{r['p50']:.1f} | {r['p99']:.1f} | {r['rps'] / hello['rps']:.2f} | {by_cpu} | {paced} |")
        reads = [r for r in rows if not r.get("failed") and r["target"] not in ("hello", "kit")
                 and not r["name"].endswith("(cold)")]
        plain = next((r for r in reads if r["name"] == "GET /api/v1/preferences"), None)
        # The same ratios by CPU per request (hello-world's CPU / the route's): on a machine whose other load
        # changes during the run, req/s swings with it while the CPU a request costs holds much better.
        # Sign-in is argon2id by design (≈ 0.4 s of CPU): out of these figures, as it may answer nothing in a run.
        reads = [r for r in reads if r["name"] != "POST /users/signIn" and r["requests"]]
        if reads:
            worst = min(reads, key=lambda r: r["rps"])
            costly = max(reads, key=lambda r: r["cpu_ms"])
            print(f"| {backend} | | slowest: {worst['name']} | | | | | {worst['rps'] / hello['rps']:.2f} | | |")
            print(f"| {backend} | | costliest: {costly['name']} | | {costly['cpu_ms']:.2f} | | | | "
                  f"{hello['cpu_ms'] / costly['cpu_ms']:.2f} | |")
        if plain:
            print(f"| {backend} | | one-row read by CPU | | {plain['cpu_ms']:.2f} | | | | "
                  f"{hello['cpu_ms'] / plain['cpu_ms']:.2f} (target ≥ 0.3) | |")
            for name in ("GET /users/me",):
                r = next((r for r in reads if r["name"] == name), None)
                if r:
                    print(f"| {backend} | | {name} / one-row read | | {r['cpu_ms'] / plain['cpu_ms']:.2f}× CPU | | | "
                          f"{plain['rps'] / r['rps']:.2f}× slower (target ≤ 2) | | |")


async def main() -> None:
    harness.require_tools(("wrk", "Debian package wrk: apt-get install wrk"))
    print(f"cores={os.cpu_count()} python={sys.version.split()[0]} wrk -t1 -c{ARGS.connections} "
          f"seconds={ARGS.seconds}", flush=True)
    backends = ("real", "embedded") if ARGS.backend == "both" else (ARGS.backend,)
    results = []
    for backend in backends:
        results += await run_backend(backend)
    report(results)


if __name__ == "__main__":
    from roomee.kit.loop import run

    if ARGS.serve:
        run(serve(ARGS.serve, ARGS.hello_port))
    else:
        run(main())
