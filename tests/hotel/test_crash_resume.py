"""Crash safety: ``roomee run --target hotel`` is SIGKILLed at every point of a provisioning (before
each step's call, and after a call whose answer is then lost), restarted each time, and the hotel
still ends ``ready`` with exactly one QR object, one quota event, one subscription, one
administrator and one ``hotel.created``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from roomee.kit.events import BrokerUnavailable
from tests.fixtures.events import event_tap
from tests.fixtures.platform import free_port, make_settings, running_platform
from tests.hotel.support import FAST_SAGA, PROVISIONED_TARGETS, FaultProxy, hotel_body, wait_for_status

OTHER_TARGETS = "auth,members,media,billing,notification"
LEASE_SECONDS = 1.5


def hotel_process_env(settings, hotel_url: str, proxy_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMEE_")}
    env.update({
        "ROOMEE_DATA_DIR": str(settings.data_dir),
        "ROOMEE_PORT": hotel_url.rsplit(":", 1)[1],
        "ROOMEE_PUBLIC_URL": settings.base_url,
        "ROOMEE_HOTEL_URL": hotel_url,
        "ROOMEE_SERVICE_SECRET": settings.service_secret,
        "ROOMEE_LOG_LEVEL": "WARNING",
        "ROOMEE_SAGA_LEASE_SECONDS": str(LEASE_SECONDS),
        "ROOMEE_SAGA_MAX_ATTEMPTS": "8",
        "ROOMEE_SAGA_BACKOFF_BASE_SECONDS": "0.05",
        "ROOMEE_SAGA_BACKOFF_MAX_SECONDS": "0.5",
        "ROOMEE_SAGA_POLL_INTERVAL_SECONDS": "0.2",
        "ROOMEE_BREAKER_RESET_TIMEOUT_MS": "500",
    })
    for target in PROVISIONED_TARGETS:
        env[f"ROOMEE_{target.upper()}_URL"] = proxy_url
    for name in ("database_url", "broker_url", "schema_prefix", "exchange", "queue_prefix"):
        value = getattr(settings, name)
        if value:
            env[f"ROOMEE_{name.upper()}"] = str(value)
    return env


class HotelProcess:
    def __init__(self, env: dict[str, str], url: str, log: Path) -> None:
        self.env, self.url, self.log = env, url, log
        self.process: subprocess.Popen | None = None

    async def start(self) -> None:
        roomee = Path(sys.executable).with_name("roomee")
        self.process = subprocess.Popen([str(roomee), "run", "--target", "hotel"], env=self.env,
                                        stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while True:
                assert self.process.poll() is None, self.log.read_text()[-3000:]
                try:
                    if (await client.get(f"{self.url}/health/ready")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the hotel process did not start"
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@asynccontextmanager
async def broker_up(running, timeout: float = 60.0):
    """Wait for the platform's broker connection (the shared RabbitMQ may be restarting for another test)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await running.platform.broker.ping()
            break
        except BrokerUnavailable:
            assert time.monotonic() < deadline, "the broker did not come back"
            await asyncio.sleep(0.2)
    yield


async def count(running, service: str, sql: str, **params) -> int:
    async with running.platform.services[service].db.transaction() as session:
        return (await session.execute(sa.text(sql), params)).scalar_one()


# Nine starts of a process (about 10 s each on a busy 2-core machine).
@pytest.mark.timeout(900)
async def test_sigkill_between_every_step_resumes_without_duplicates(tmp_path):
    settings = make_settings(tmp_path, **FAST_SAGA)
    hotel_url = f"http://127.0.0.1:{free_port()}"
    settings = settings.model_copy(update={"hotel_url": hotel_url})
    proxy = FaultProxy(settings.base_url)
    async with proxy.serving(), running_platform(settings, target=OTHER_TARGETS) as running, \
            broker_up(running), event_tap(running) as tap, httpx.AsyncClient(base_url=hotel_url, timeout=30) as client:
        crash_points = [
            proxy.hold("POST", "/media/upload", drop=True),                       # hotel → qr
            proxy.hold("POST", "/media/upload", after=True),                      # qr done, answer lost
            proxy.hold("GET", "/sub/plans", drop=True),                           # qr → storage
            proxy.hold("POST", "/sub/assign-subscription/", drop=True),           # quota event emitted → subscription
            proxy.hold("POST", "/sub/assign-subscription/", after=True),          # subscribed, answer lost
            proxy.hold("POST", "/members/add/hotel/member", drop=True),           # subscription → admin
            proxy.hold("POST", "/members/add/hotel/member", after=True),          # admin created, answer lost
            # The storage step, still running, waits for media's quota before announce: quota seen, answer lost.
            proxy.hold("GET", r"/media/storage/.+", after=True),
        ]
        hotel = HotelProcess(hotel_process_env(settings, hotel_url, proxy.url), hotel_url, tmp_path / "hotel.log")
        try:
            await hotel.start()
            operator = await running.service_headers("operator")
            body = hotel_body(plan="premium")
            response = await client.post("/hotel/add", json=body, headers=operator)
            assert response.status_code == 202, response.text
            hotel_id = response.json()["id"]
            for point in crash_points:
                await asyncio.wait_for(point.reached.wait(), 30)
                hotel.kill()
                proxy.release(point)
                await hotel.start()
            document = await wait_for_status(client, operator, hotel_id, timeout=60)
        finally:
            hotel.stop()
        assert document["status"] == "ready", document
        assert all(step["status"] == "succeeded" for step in document["steps"])

        assert await count(running, "media", "SELECT count(*) FROM media WHERE hotel_id = :id", id=hotel_id) == 1
        assert await count(running, "billing", "SELECT count(*) FROM subscription WHERE customer_id = :id",
                           id=hotel_id) == 1
        assert await count(running, "members", "SELECT count(*) FROM member WHERE hotel_id = :id",
                           id=hotel_id) == 1
        await tap.wait_for("roomee.notification.hotel.created", lambda e: e["ecosystemId"] == hotel_id)
        await asyncio.sleep(0.5)
        # One event of each (one id): a process killed after the bus took an event but before its outbox row
        # was marked publishes it again on restart, with the same id, which consumers handle once
        # (at least once, as the outbox promises); a step that ran twice would make a second id.
        def event_ids(routing_key: str) -> set[str]:
            return {e["id"] for e in tap.of(routing_key) if e["ecosystemId"] == hotel_id}

        assert len(event_ids("roomee.storage.media")) == 1, tap.of("roomee.storage.media")
        assert len(event_ids("roomee.notification.hotel.created")) == 1
        # One invitation for the administrator: a resumed step found the member instead of inviting again.
        assert len(event_ids("roomee.notification.member.onboarding")) == 1
