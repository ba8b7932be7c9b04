"""Two operator replicas, one active: leader election on a ``coordination.k8s.io/v1`` Lease.
Two ``roomee run --target operator`` processes against the Kubernetes API stand-in: only the
holder reconciles (each Event once, one ``POST /hotel/add``); after a kill -9 of the leader the
other takes the Lease over once it expires; after a SIGTERM the leader releases it and the
standing-by replica takes over at its next attempt."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import time

import httpx

from tests.fixtures.kube import CRD_DIR
from tests.fixtures.platform import free_port, make_settings, running_platform
from tests.hotel.support import FAST_SAGA, FaultProxy
from tests.k8s_operator.test_hotel_lifecycle import eventually

ROOMEE = [sys.executable, "-m", "roomee.cli"]
LEASE = ("coordination.k8s.io", "leases", "default", "roomee-operator")


def holder(kube) -> str | None:
    lease = kube.api.store.get(LEASE)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


class Replica:
    def __init__(self, name: str, kube, platform, hotel_url: str, tmp_path) -> None:
        self.name, self.port = name, free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMEE_")} | {
            "KUBECONFIG": str(kube.kubeconfig), "ROOMEE_DATA_DIR": str(tmp_path / name),
            "ROOMEE_SERVICE_SECRET": platform.settings.service_secret, "ROOMEE_LOG_LEVEL": "WARNING",
            "ROOMEE_AUTH_URL": platform.url, "ROOMEE_HOTEL_URL": hotel_url, "ROOMEE_MEMBERS_URL": platform.url,
            "ROOMEE_OPERATOR_IDENTITY": name, "ROOMEE_OPERATOR_POLL_SECONDS": "0.05",
            "ROOMEE_OPERATOR_MAX_POLL_SECONDS": "0.5",
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Replica:
        self.process = await asyncio.create_subprocess_exec(
            *ROOMEE, "run", "--target", "operator", "--port", str(self.port), env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await eventually(lambda: self.health(), timeout=60, interval=0.2)
        return self

    async def health(self) -> dict | None:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                response = await client.get(f"http://127.0.0.1:{self.port}/health/ready")
                if response.status_code == 200:
                    return (await client.get(f"http://127.0.0.1:{self.port}/health")).json()
        except httpx.TransportError:
            return None
        return None

    async def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def test_two_replicas_one_active_and_hand_over_on_kill_and_on_sigterm(tmp_path, kube):
    settings = make_settings(tmp_path / "platform", **FAST_SAGA)
    async with running_platform(settings) as platform:
        to_hotel = FaultProxy(platform.url)
        async with to_hotel.serving():
            replicas = {name: Replica(name, kube, platform, to_hotel.url, tmp_path) for name in ("op-a", "op-b", "op-c")}
            try:
                await asyncio.gather(replicas["op-a"].start(), replicas["op-b"].start())
                leader_name = await eventually(lambda: holder(kube), timeout=30)
                assert leader_name in ("op-a", "op-b")
                standby_name = "op-b" if leader_name == "op-a" else "op-a"
                assert (await replicas[leader_name].health())["leader"] is True
                assert (await replicas[standby_name].health())["leader"] is False

                await kube.kubectl("apply", "--validate=false", "-f", str(CRD_DIR / "examples" / "hotel.yaml"))
                await kube.kubectl("wait", "--for=condition=Ready", "hotel/grand-paris", "--timeout=60s")
                assert to_hotel.count("POST", "/hotel/add") == 1
                events = kube.api.events_for("grand-paris")
                reasons = collections.Counter(event["reason"] for event in events)
                assert reasons["Accepted"] == 1 and reasons["Provisioned"] == 1, reasons
                assert all(count == 1 for count in reasons.values()), reasons
                assert {event.get("reportingInstance") for event in events} == {leader_name}

                # kill -9: no release; the other replica takes over once the Lease expires.
                killed_at = time.monotonic()
                replicas[leader_name].process.kill()
                await replicas[leader_name].process.wait()
                await eventually(lambda: holder(kube) == standby_name, timeout=40, interval=0.1)
                kill_hand_over = time.monotonic() - killed_at
                await eventually(lambda: replicas[standby_name].health(), timeout=30, interval=0.2)
                await kube.kubectl("patch", "hotel", "grand-paris", "--type=merge", "-p", '{"spec":{"plan":"standard"}}')
                await kube.kubectl("wait", "--for=jsonpath={.status.observedGeneration}=2", "hotel/grand-paris",
                                   "--timeout=60s")

                # SIGTERM (a rolling update): the leader releases the Lease; the new replica takes it.
                await replicas["op-c"].start()
                assert holder(kube) == standby_name
                terminated_at = time.monotonic()
                await replicas[standby_name].stop(signal.SIGTERM)
                assert replicas[standby_name].process.returncode == 0
                await eventually(lambda: holder(kube) == "op-c", timeout=30, interval=0.1)
                term_hand_over = time.monotonic() - terminated_at
                print(f"\nhand-over after kill -9: {kill_hand_over:.1f} s; after SIGTERM: {term_hand_over:.1f} s")
                await kube.kubectl("delete", "hotel", "grand-paris", "--timeout=60s")
                assert to_hotel.count("POST", "/hotel/add") == 1
            finally:
                for replica in replicas.values():
                    await replica.stop(signal.SIGKILL)
