"""Benchmark of the news feed read (issue 8). A script, not a test.

    python bench/news_feed.py [--backend real|embedded] [--seconds 10] [--concurrency 32] [--articles 200]

``real`` (default): PostgreSQL (+ RabbitMQ for the platform's events) on this machine, in schemas,
an exchange and queues of their own, dropped at the end. ``embedded``: SQLite and the in-process bus.

Measured: ``GET /api/v1/pages?parentId=<feed>&limit=20`` (one page of 20 articles of a feed, with
the caller's like and acknowledgement of each, as the app's feed screen asks it) by a member with a
valid access token, against a FastAPI hello-world (``GET /`` answering ``{"hello": "world"}``)
measured in the same run, and the news process's own ``GET /health`` (the platform's per-request
floor: middleware, metrics, tracing, no database). Each server is one process with one worker on uvloop, as ``roomee run``
serves a target (the news process also serves auth and members, which the measured requests do not
touch; tokens are verified locally). The load is ``wrk`` (bench/_harness.py) with ``--concurrency``
keep-alive connections for ``--seconds`` after one second of warm-up; throughput is completed
requests per second, latency is per request (p50, p99). Target: the feed at >= 0.5x hello-world.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("real", "embedded"), default="real")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per server")
    parser.add_argument("--concurrency", type=int, default=32, help="connections kept busy")
    parser.add_argument("--articles", type=int, default=200, help="articles in the feed read")
    parser.add_argument("--serve-platform", metavar="SETTINGS_FILE", help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--serve-hello", metavar="PORT", help=argparse.SUPPRESS)  # a child process
    return parser.parse_args()


ARGS = parse_args()
os.environ["ROOMEE_TEST_BACKEND"] = ARGS.backend

import aiohttp  # noqa: E402
import httpx  # noqa: E402

import _harness as harness  # noqa: E402

from roomee.bootstrap import bootstrap_admin  # noqa: E402
from roomee.kit.loop import run  # noqa: E402
from roomee.kit.settings import Settings  # noqa: E402
from tests.fixtures.platform import (  # noqa: E402
    drop_test_resources, free_port, make_settings, running_platform, sign_in,
)

PLATFORM_TARGETS = "auth,members,news"
PASSWORD = "bench password 1234"


async def serve_platform(settings_file: str) -> None:
    """The child process: the news target (with auth and members) on one port, until stdin closes."""
    settings = Settings.model_validate_json(Path(settings_file).read_text())
    async with running_platform(settings, PLATFORM_TARGETS):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def start_child(*args: str) -> subprocess.Popen:
    return harness.start_child([sys.executable, __file__, "--backend", ARGS.backend, *args])


async def seed(base_url: str, settings: Settings) -> tuple[dict[str, str], str]:
    """An administrator, a feed and ``--articles`` articles, through the API; the reader's headers and the feed id."""
    await bootstrap_admin(settings, hotel_name="Hotel Bench", email="ada@bench.example.com", password=PASSWORD,
                          first_name="Ada", last_name="Admin")
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        session = await sign_in(client, "ada@bench.example.com", PASSWORD)
    async with aiohttp.ClientSession(base_url) as http:
        headers = {"Authorization": f"Bearer {session['accessToken']}"}
        async with http.post("/api/v1/pages", json={"pageType": "feed", "title": "Actualités"}, headers=headers) as r:
            feed = (await r.json())["id"]
        body = "<p>" + "Les horaires du restaurant changent à partir de lundi. " * 20 + "</p>"
        for start in range(0, ARGS.articles, 20):
            answers = await asyncio.gather(*(
                http.post("/api/v1/pages", json={"pageType": "article", "parentId": feed, "title": f"Article {n}",
                                                 "content": body}, headers=headers)
                for n in range(start, min(start + 20, ARGS.articles))
            ))
            for answer in answers:
                assert answer.status == 201, await answer.text()
                answer.release()
        return headers, feed


async def load(url: str, headers: dict[str, str]) -> dict[str, float]:
    """``--concurrency`` wrk connections for one warm-up second, then ``--seconds`` measured."""
    harness.wrk(url, headers, None, 1.0, ARGS.concurrency)
    row = harness.wrk(url, headers, None, ARGS.seconds, ARGS.concurrency)
    if row["errors"] or not row["requests"]:
        raise RuntimeError(f"{row['errors']} of {row['requests']} requests to {url} failed")
    return row


async def main() -> None:
    harness.require_tools(("wrk", "Debian package wrk: apt-get install wrk"))
    print(f"backend={ARGS.backend} cores={os.cpu_count()} python={sys.version.split()[0]} "
          f"concurrency={ARGS.concurrency} seconds={ARGS.seconds}", flush=True)
    with tempfile.TemporaryDirectory(prefix="roomee-bench-") as tmp:
        settings = make_settings(Path(tmp), log_level="ERROR")
        settings_file = Path(tmp) / "platform.json"
        settings_file.write_text(settings.model_dump_json())
        platform = start_child("--serve-platform", str(settings_file))
        hello_port = free_port()
        hello = start_child("--serve-hello", str(hello_port))
        try:
            headers, feed = await seed(settings.base_url, settings)
            feed_url = f"{settings.base_url}/api/v1/pages?parentId={feed}&limit=20"
            async with aiohttp.ClientSession(headers=headers) as http, http.get(feed_url) as check:
                items = (await check.json())["items"]
                assert check.status == 200 and len(items) == 20, items
            baseline = await load(f"http://127.0.0.1:{hello_port}/", {})
            floor = await load(f"{settings.base_url}/health", {})
            ours = await load(feed_url, headers)
        finally:
            harness.stop_child(hello)
            harness.stop_child(platform)
            await drop_test_resources()
    ratio = ours["rps"] / baseline["rps"]
    print()
    print("| server | req/s | p50 ms | p99 ms | requests |")
    print("|---|---:|---:|---:|---:|")
    for name, row in (("FastAPI hello-world", baseline), ("the news process's GET /health", floor),
                      ("news feed, 20 articles", ours)):
        print(f"| {name} | {row['rps']:.0f} | {row['p50']:.1f} | {row['p99']:.1f} | {row['requests']} |")
    print(f"\nfeed / hello-world throughput: {ratio:.2f}x (target >= 0.5x); "
          f"feed / the same process's /health: {ours['rps'] / floor['rps']:.2f}x")


if __name__ == "__main__":
    if ARGS.serve_platform:
        run(serve_platform(ARGS.serve_platform))
    elif ARGS.serve_hello:
        run(harness.serve_hello(int(ARGS.serve_hello)))
    else:
        run(main())
