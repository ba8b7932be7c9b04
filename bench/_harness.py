"""What the HTTP benchmarks share: the hello-world ceiling, child processes, wrk and autocannon, the
provisioning poller. Not a benchmark itself.

- :func:`hello_app` / :func:`serve_hello`: a bare FastAPI ``GET /`` -> ``{"hello": "world"}`` under the same
  uvicorn configuration as ``roomee run``: the ceiling of a Python ASGI request on this machine.
- :func:`start_child` / :func:`stop_child`: a child process that prints ``ready`` once serving and stops when its
  stdin closes; its later output goes to a log file (a pipe nobody read would fill and stall the child).
- :func:`wrk`: one closed-loop ``wrk`` run (Debian package ``wrk``); :func:`at_rate`: one open-loop run at a fixed
  request rate with ``autocannon -R`` (npm package ``autocannon``), for a p99 at a given load.
- :func:`wait_provisioned`: watch the hotel list until every hotel given is ``ready``.
- :func:`deployed_pools`: PostgreSQL pools of the deployed size, for benchmarks on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def require_tools(*tools: tuple[str, str]) -> None:
    """Exit with one line naming each missing tool and how to install it: ``(command, how to get it)``."""
    missing = [f"`{command}` ({how})" for command, how in tools if shutil.which(command) is None]
    if missing:
        raise SystemExit(f"{Path(sys.argv[0]).name} needs {', '.join(missing)}: not found on PATH")


def hello_app():
    from fastapi import FastAPI

    # FastAPI traces every request itself once a process has an OpenTelemetry SDK provider, as the platform
    # installs one beside it: off, as in a process of its own (and as the platform's app, which spans once).
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False})

    @app.get("/")
    async def hello_world() -> dict[str, str]:
        return {"hello": "world"}

    return app


async def start_hello(port: int):
    """The hello-world served on ``port`` by this process's event loop; returns the server once it listens
    (``server.should_exit = True`` stops it)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(hello_app(), host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    server.task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    return server


async def serve_hello(port: int) -> None:
    """A child process's body: the hello-world until stdin closes."""
    server = await start_hello(port)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.should_exit = True
    await server.task


async def until_stdin_closes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def start_child(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``argv`` and wait for its ``ready`` line; its later output is kept in ``child.log``."""
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    lines = []
    while True:
        line = child.stdout.readline()
        if not line:
            raise RuntimeError(f"the child {argv[1:]} did not start:\n" + b"".join(lines[-30:]).decode(errors="replace"))
        if line.strip() == b"ready":
            break
        lines.append(line)
    child.log = Path(tempfile.mkstemp(prefix="roomee-bench-child-", suffix=".log")[1])

    def drain() -> None:
        with child.log.open("ab") as out:
            shutil.copyfileobj(child.stdout, out)

    threading.Thread(target=drain, daemon=True).start()
    return child


def stop_child(child: subprocess.Popen, timeout: float = 120) -> int:
    """Close the child's stdin, wait for it; the number of ERROR lines it logged."""
    child.stdin.close()
    child.wait(timeout)
    text = child.log.read_text(errors="replace") if child.log.exists() else ""
    return len(re.findall(r"\bERROR\b", text))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _post_script(body: str | None) -> str | None:
    if body is None:
        return None
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n')
    script.close()
    return script.name


def wrk(url: str, headers: dict[str, str], body: str | None, seconds: float, connections: int) -> dict[str, Any]:
    """One closed-loop ``wrk`` run (one thread): requests, req/s, p50/p99 (ms), non-2xx count."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    script = _post_script(body)
    if script is not None:
        command += ["-s", script]
    try:
        output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    finally:
        if script is not None:
            os.unlink(script)

    def latency(percent: str) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"requests": int(re.search(r"(\d+) requests in", output).group(1)),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "p50": latency("50"), "p99": latency("99"), "errors": int(non_2xx.group(1)) if non_2xx else 0}


def has_autocannon() -> bool:
    return shutil.which("autocannon") is not None


def at_rate(url: str, headers: dict[str, str], body: str | None, rate: int, seconds: float,
            connections: int = 32) -> dict[str, Any]:
    """``rate`` requests per second for ``seconds`` with autocannon (open loop up to ``connections`` in
    flight): achieved req/s, p50/p99 (ms), non-2xx count."""
    command = ["autocannon", "-j", "-R", str(rate), "-c", str(connections), "-d", str(max(1, round(seconds))),
               "-t", "10"]
    for name, value in headers.items():
        command += ["-H", f"{name}={value}"]
    if body is not None:
        command += ["-m", "POST", "-b", body]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    result = json.loads(output)
    latency = result["latency"]
    return {"requests": result["requests"]["total"], "rps": result["requests"]["average"],
            "p50": latency["p50"], "p99": latency["p99"], "errors": result["non2xx"] + result["errors"]}


def deployed_pools() -> dict[str, int]:
    """PostgreSQL pools of the deployed size (``Settings.db_pool_size``) without their overflow. The test
    fixtures keep one connection per target, so that under a burst every transaction past the first opened
    and closed a connection of its own (5 % of the 100-hotel provisioning profile); the deployed overflow
    (10 per target, 7 targets in one process) passes this machine's ``max_connections`` (100) beside the
    other suites running on it ("too many clients" in a run)."""
    from roomee.kit.settings import Settings

    return {"db_pool_size": Settings.model_fields["db_pool_size"].default, "db_max_overflow": 0}


async def wait_provisioned(client, headers: dict[str, str], hotel_ids, timeout: float,
                           interval: float = 0.02) -> None:
    """Until every hotel of ``hotel_ids`` is ``ready``, watched through ``GET /hotel?status=…`` (one request per
    200 hotels every 20 ms); a failed hotel stops the run. Polling each hotel's provisioning document every
    5 ms, as at first, put hundreds of reads per second on the database the sagas write to: the measurement
    weighed on what it measured (a third of the 100-hotel time)."""
    started, pending = time.perf_counter(), set(hotel_ids)
    while pending:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"{len(pending)} hotels not ready after {timeout} s")
        for status in ("ready", "failed"):
            cursor = None
            while True:
                params = {"status": status, "limit": 200} | ({"cursor": cursor} if cursor else {})
                response = await client.get("/hotel", params=params, headers=headers)
                if response.status_code != 200:  # an overloaded moment: polled again
                    break
                page = response.json()
                found = {hotel["id"] for hotel in page["items"]} & pending
                if status == "failed" and found:
                    raise SystemExit(f"hotels failed: {sorted(found)}")
                pending -= found
                cursor = page.get("nextCursor")
                if not cursor:
                    break
        await asyncio.sleep(interval)
