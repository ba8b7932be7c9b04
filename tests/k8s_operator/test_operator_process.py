"""``roomee run --target operator`` as the Deployment runs it: a process of its own, with /health,
/health/ready and /metrics, reconciling a Hotel applied with kubectl; never part of ``all``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx

from roomee import targets
from tests.fixtures.kube import CRD_DIR
from tests.fixtures.platform import free_port, make_settings, running_platform
from tests.hotel.support import FAST_SAGA
from tests.k8s_operator.test_chart_operator import operator_env
from tests.k8s_operator.test_hotel_lifecycle import eventually

ROOMEE = [sys.executable, "-m", "roomee.cli"]


def test_the_operator_is_a_target_of_its_own_never_in_all():
    assert "operator" in targets.TARGETS
    assert "operator" not in {spec.name for spec in targets.resolve("all")}
    assert [spec.name for spec in targets.resolve("operator")] == ["operator"]


async def test_operator_process_serves_health_metrics_and_reconciles(tmp_path, kube):
    # auth checks the operator's own client secret (as the chart gives it to the auth target); the
    # operator's process gets only that secret, not the service secret every client's secret derives from.
    settings = make_settings(tmp_path / "platform", operator_client_secret="operator-only-secret", **FAST_SAGA)
    async with running_platform(settings) as platform:
        port = free_port()
        # Exactly the env the chart gives the operator's pod (nothing else of ROOMEE_*), with the Services'
        # URLs, the Secret's value and the pod's fields resolved here.
        rendered = {name: entry.get("value") for name, entry in operator_env().items()}
        assert "ROOMEE_SERVICE_SECRET" not in rendered
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMEE_")} | rendered | {
            "KUBECONFIG": str(kube.kubeconfig), "ROOMEE_OPERATOR_CLIENT_SECRET": "operator-only-secret",
            "ROOMEE_LOG_LEVEL": "WARNING", "ROOMEE_AUTH_URL": platform.url, "ROOMEE_HOTEL_URL": platform.url,
            "ROOMEE_MEMBERS_URL": platform.url, "ROOMEE_OPERATOR_LEASE_NAMESPACE": "default",
            "ROOMEE_OPERATOR_IDENTITY": "roomee-operator-pod-0",
        }
        assert all(value is not None for value in env.values()), env
        workdir = tmp_path / "operator-cwd"
        workdir.mkdir()
        process = await asyncio.create_subprocess_exec(
            *ROOMEE, "run", "--target", "operator", "--port", str(port), env=env, cwd=workdir,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                async def answers(path: str) -> bool:
                    try:
                        return (await client.get(path)).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(lambda: answers("/health/ready"), timeout=60, interval=0.2)
                assert (await client.get("/health")).json()["targets"] == ["operator"]

                await kube.kubectl("apply", "--validate=false", "-f", str(CRD_DIR / "examples" / "hotel.yaml"))
                await kube.kubectl("wait", "--for=condition=Ready", "hotel/grand-paris", "--timeout=60s")
                metrics = (await client.get("/metrics")).text
                assert 'roomee_operator_reconciliations_total{handler="create",outcome="done",resource="hotel"} 1.0' in metrics
                assert "roomee_operator_reconciliation_duration_seconds_bucket" in metrics
                assert 'http_client_request_duration_seconds_count{endpoint="/hotel/add",service="operator"' in metrics
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


def test_operator_runs_alone():
    import subprocess

    out = subprocess.run([*ROOMEE, "run", "--target", "operator,hotel"], capture_output=True, text=True)
    assert out.returncode != 0 and "runs alone" in out.stderr


def test_without_a_cluster_the_operator_says_what_it_looked_for_in_one_line_and_exits_2(tmp_path):
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMEE_") and k != "KUBECONFIG"} | {
        "HOME": str(tmp_path), "ROOMEE_DATA_DIR": str(tmp_path / "data"),
        **{f"ROOMEE_{target}_URL": "http://127.0.0.1:9" for target in ("AUTH", "HOTEL", "MEMBERS")}}
    out = subprocess.run([*ROOMEE, "run", "--target", "operator"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "service account" in lines[0] and "KUBECONFIG" in lines[0] and "Traceback" not in out.stderr
