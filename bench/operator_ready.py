"""Benchmark of the operator (issue 10): a Hotel custom resource until it is ``Ready``. A script, not a test.

    python bench/operator_ready.py [--backend embedded|real] [--hotels 100]

The whole platform runs in this process on real HTTP (uvicorn) with local providers, beside the
test suite's Kubernetes API (kmock + conformance layer) and the operator (kopf), all on one event
loop. Measured from the start of ``kubectl apply`` until the Hotel's ``Ready`` condition is
``True`` in the API server (polled every 20 ms): one Hotel alone, then N Hotels in one apply.

Baseline, in the same run, on the same platform: the same hotels provisioned through the REST API
directly (``POST /hotel/add`` with the operator's token, then the hotel list every 20 ms until
each is ``ready``). ``ratio`` = operator / REST: what Kubernetes and kopf add on top of the saga.
Targets of the issue: one Hotel ≤ 1 s, 100 Hotels ≤ 20 s (issue 19: 100 Hotels ≤ 1.2× REST).

``real``: PostgreSQL + RabbitMQ with pools of the deployed size (5 connections per target, not
the tests' one); the operator with its deployed drift interval (30 s; the tests' 0.5 s made every Ready
Hotel one more request each 0.5 s while the others were still provisioning).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services"))

import yaml  # noqa: E402

import _harness as harness  # noqa: E402

from roomee.kit import loop  # noqa: E402
from tests.fixtures.kube import running_kube  # noqa: E402
from tests.fixtures.platform import drop_test_resources, make_settings, running_platform  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("real", "embedded"), default="embedded")
    parser.add_argument("--hotels", type=int, default=100, help="Hotels applied at once")
    parser.add_argument("--timeout", type=float, default=300.0)
    return parser.parse_args()


def hotel_spec(n: str) -> dict:
    return {
        "name": f"Bench Hotel {n}", "plan": "premium",
        "contact": {"email": f"contact-{n}@bench.example.com", "phone": "+33 1 00 00 00 00", "address": "1 rue du Banc"},
        "administrator": {"email": f"admin-{n}@bench.example.com", "firstName": "Ben", "lastName": "Ch"},
    }


def manifests(names: list[str]) -> str:
    return yaml.safe_dump_all([{"apiVersion": "roomee.io/v1", "kind": "Hotel", "metadata": {"name": name},
                                "spec": hotel_spec(name)} for name in names])


def ready_names(kube) -> set[str]:
    """Names of the Hotels whose ``Ready`` is ``True``, read from the API server's store in place: its
    ``objects_of`` deep-copies every object, and doing that every 5 ms was 14 % of the CPU of a 100-Hotel
    run (the measurement weighed on what it measured)."""
    def ready(obj: dict) -> bool:
        conditions = (obj.get("status") or {}).get("conditions", ())
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    return {obj["metadata"]["name"] for (group, plural, _, _), obj in kube.api.store.items()
            if (group, plural) == ("roomee.io", "hotels") and ready(obj)}


async def through_operator(kube, names: list[str], timeout: float) -> float:
    started = time.perf_counter()
    await kube.kubectl("apply", "--validate=false", "-f", "-", stdin=manifests(names), timeout=timeout)
    wanted = set(names)
    while not wanted <= ready_names(kube):
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{len(wanted - ready_names(kube))} Hotels not Ready after {timeout} s")
        await asyncio.sleep(0.02)  # as the REST side reads the hotel list
    return time.perf_counter() - started


async def through_rest(platform, count: int, timeout: float) -> float:
    async with platform.client() as client:
        headers = await platform.service_headers("operator")

        async def one() -> str:
            n = uuid.uuid4().hex[:10]
            body = {**{k: v for k, v in hotel_spec(n).items() if k != "contact"}, **hotel_spec(n)["contact"]}
            response = await client.post("/hotel/add", json=body, headers={**headers, "Idempotency-Key": n})
            assert response.status_code == 202, response.text
            return response.json()["id"]

        started = time.perf_counter()
        hotel_ids = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), timeout)
        await harness.wait_provisioned(client, headers, hotel_ids, timeout - (time.perf_counter() - started))
        return time.perf_counter() - started


class _Env:
    """``operator_running`` sets KUBECONFIG through a monkeypatch-like object."""

    def setenv(self, name: str, value: str) -> None:
        os.environ[name] = value


async def main() -> None:
    args = parse_args()
    os.environ["ROOMEE_TEST_BACKEND"] = args.backend
    import tests.fixtures.platform as platform_fixture
    from roomee.operator.settings import OperatorSettings
    from tests.fixtures.kube import operator_running

    # Read when the fixtures were imported (above, before the argument was parsed): without this,
    # --backend real ran on the embedded defaults.
    platform_fixture.BACKEND = args.backend
    pools = harness.deployed_pools() if args.backend == "real" else {}
    drift = OperatorSettings.model_fields["operator_drift_interval_seconds"].default

    with tempfile.TemporaryDirectory() as scratch:
        settings = make_settings(Path(scratch) / "platform", log_level="ERROR", **pools)
        try:
            async with running_platform(settings) as platform, running_kube(Path(scratch) / "kube") as kube, \
                    operator_running(_Env(), kube, settings, operator_poll_seconds=0.02,
                                     operator_max_poll_seconds=0.5, operator_drift_interval_seconds=drift):
                await through_rest(platform, 1, args.timeout)  # warm-up: caches, connections, JIT-free paths
                print(f"backend: {args.backend}", flush=True)
                print(f"{'case':<22}{'operator (s)':>14}{'REST (s)':>11}{'ratio':>8}{'target (s)':>12}", flush=True)
                rest_one = await through_rest(platform, 1, args.timeout)
                operator_one = await through_operator(kube, ["bench-one"], args.timeout)
                print(f"{'1 Hotel':<22}{operator_one:>14.3f}{rest_one:>11.3f}{operator_one / rest_one:>8.2f}"
                      f"{1.0:>12.1f}", flush=True)
                rest_many = await through_rest(platform, args.hotels, args.timeout)
                names = [f"bench-{i:03d}" for i in range(args.hotels)]
                operator_many = await through_operator(kube, names, args.timeout)
                print(f"{f'{args.hotels} Hotels at once':<22}{operator_many:>14.3f}{rest_many:>11.3f}"
                      f"{operator_many / rest_many:>8.2f}{20.0:>12.1f}", flush=True)
        finally:
            await drop_test_resources()


if __name__ == "__main__":
    try:
        loop.run(main())
    finally:
        # On the embedded defaults an SQLite connection the shutdown left open (a request or relay cancelled
        # mid-way) keeps a worker thread that is not a daemon: the run printed its figures, then never
        # exited. The test suite's end-of-session hook ends those threads.
        from tests.conftest import pytest_unconfigure

        pytest_unconfigure(None)
