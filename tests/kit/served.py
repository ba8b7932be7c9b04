"""A platform served by the ``roomee`` command in a subprocess (a real uvicorn, its real access log),
configured through the environment as a Deployment configures it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from roomee.kit.settings import Settings
from tests.fixtures.platform import make_settings

ROOMEE = [sys.executable, "-m", "roomee.cli"]


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The process environment without the caller's ROOMEE_* variables, plus ``settings`` as ROOMEE_*."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ROOMEE_")}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        env[f"ROOMEE_{name.upper()}"] = str(value)
    return env | extra


@dataclass
class Served:
    url: str
    settings: Settings
    log_file: Path
    process: subprocess.Popen

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def admin_credentials(self) -> dict:
        """What ``roomee up`` wrote for the demo administrator (once its hotel is provisioned)."""
        path = self.settings.data_dir / "admin-credentials.json"
        deadline = time.monotonic() + 60
        while not path.exists():
            assert time.monotonic() < deadline, self.log()[-3000:]
            time.sleep(0.2)
        return json.loads(path.read_text())

    def client(self, forwarded_for: str | None = None, source: str | None = None) -> httpx.Client:
        """A client connecting from loopback address ``source`` (default 127.0.0.1), as a proxy giving
        ``X-Forwarded-For: forwarded_for`` when set."""
        transport = httpx.HTTPTransport(local_address=source) if source else None
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        return httpx.Client(base_url=self.url, headers=headers, transport=transport, timeout=30)


@contextmanager
def served(tmp_path: Path, *command: str, env: dict[str, str] | None = None, **overrides):
    """Run ``roomee <command>`` (default ``run --target all``) until it answers /health/ready 200."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = make_settings(tmp_path / "data", **overrides)
    log_file = tmp_path / "roomee.log"
    args = list(command) or ["run", "--target", "all"]
    if args[0] == "up":
        args += ["--port", str(settings.port), "--data-dir", str(settings.data_dir)]
    with log_file.open("w") as output:
        process = subprocess.Popen([*ROOMEE, *args], stdout=output, stderr=subprocess.STDOUT,
                                   env=environment(settings, **(env or {})))
    running = Served(settings.base_url, settings, log_file, process)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"roomee ended early:\n{running.log()[-3000:]}"
            try:
                if httpx.get(f"{running.url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"roomee never became ready:\n{running.log()[-3000:]}"
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
