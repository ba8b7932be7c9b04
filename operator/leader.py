"""Leader election on a ``coordination.k8s.io/v1`` Lease, as Kubernetes controllers do it: the
replica whose identity (its pod name) holds the Lease runs kopf; the others wait to take it over.

client-go's algorithm: a candidate reads the Lease; it takes it when it is free (no holder, or
released) or when its record has not changed for ``leaseDurationSeconds`` by the candidate's own
clock (a holder that stopped renewing: killed, or cut off). Every write carries the Lease's
``resourceVersion``, so of two candidates only one wins. The holder renews every few seconds and
gives up (stops kopf) when it could not renew within the renew deadline, well before another
replica may take over; on shutdown it releases the Lease so the next replica takes over at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import random
import socket
import ssl
import time
from typing import Any

import httpx
import kopf

from roomee.operator.settings import OperatorSettings

log = logging.getLogger("roomee.operator.leader")

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class NoCluster(RuntimeError):
    """Neither an in-cluster service account nor a kubeconfig was found."""


def connection_info() -> kopf.ConnectionInfo:
    """The credentials of the pod's service account, else of ``KUBECONFIG`` (or ~/.kube/config)."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        kubeconfig = os.environ.get("KUBECONFIG")
        raise NoCluster(
            "no Kubernetes cluster: looked for an in-cluster service account "
            f"({SERVICE_ACCOUNT_DIR}/token: absent) and a kubeconfig "
            f"(KUBECONFIG {'=' + kubeconfig if kubeconfig else 'unset'}, ~/.kube/config: absent)"
        )
    return info


def kube_client(info: kopf.ConnectionInfo, timeout: float) -> httpx.AsyncClient:
    """An HTTP client for the API server from kopf's connection info (token, client cert, CA)."""
    verify: Any = not info.insecure
    if verify and (info.ca_path or info.ca_data):
        context = ssl.create_default_context(cafile=info.ca_path)
        if info.ca_data:
            import base64

            context.load_verify_locations(cadata=base64.b64decode(info.ca_data).decode())
        verify = context
    headers = {"Authorization": f"Bearer {info.token}"} if info.token else {}
    cert = (info.certificate_path, info.private_key_path) if info.certificate_path and info.private_key_path else None
    return httpx.AsyncClient(base_url=info.server, headers=headers, verify=verify, cert=cert, timeout=timeout)


def _micro_time() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def default_namespace(info: kopf.ConnectionInfo) -> str:
    try:
        with open(f"{SERVICE_ACCOUNT_DIR}/namespace", encoding="utf-8") as found:
            return found.read().strip() or "default"
    except OSError:
        return info.default_namespace or "default"


class LeaderElection:
    """One replica's candidacy for the Lease ``namespace/name``."""

    def __init__(self, client: httpx.AsyncClient, *, namespace: str, name: str, identity: str,
                 duration: float, renew: float, retry: float) -> None:
        self.client, self.identity = client, identity
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self.duration, self.renew_every, self.retry_every = duration, renew, retry
        # Stop acting when not renewed for this long: before any other replica may take over.
        self.renew_deadline = max(renew, duration * 2 / 3)
        self.holding = False
        self._observed: tuple | None = None
        self._observed_at = 0.0
        self._last_renewal = 0.0

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> LeaderElection:
        info = connection_info()
        return cls(
            kube_client(info, timeout=min(5.0, settings.operator_lease_renew_seconds)),
            namespace=settings.operator_lease_namespace or default_namespace(info),
            name=settings.operator_lease_name, identity=settings.operator_identity or default_identity(),
            duration=settings.operator_lease_duration_seconds, renew=settings.operator_lease_renew_seconds,
            retry=settings.operator_lease_retry_seconds,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def _spec(self, previous: dict | None) -> dict:
        now = _micro_time()
        mine = bool(previous) and previous.get("holderIdentity") == self.identity
        return {
            "holderIdentity": self.identity, "leaseDurationSeconds": int(self.duration),
            "acquireTime": previous.get("acquireTime") if mine else now, "renewTime": now,
            "leaseTransitions": (previous or {}).get("leaseTransitions", 0) + (0 if mine or not previous else 1),
        }

    async def _try(self) -> bool:
        """Acquire or renew the Lease once; True while this replica holds it."""
        response = await self.client.get(self.path)
        if response.status_code == 404:
            namespace, name = self.path.split("/namespaces/")[1].split("/leases/")
            created = await self.client.post(self.path.rsplit("/", 1)[0], json={
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace}, "spec": self._spec(None)})
            return created.status_code == 201 or created.status_code == 200
        response.raise_for_status()
        lease = response.json()
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed:  # judged by this replica's clock, not the holder's
            self._observed, self._observed_at = record, time.monotonic()
        holder = spec.get("holderIdentity")
        duration = spec.get("leaseDurationSeconds") or self.duration
        if holder and holder != self.identity and time.monotonic() - self._observed_at < duration:
            return False
        lease["spec"] = self._spec(spec)
        replaced = await self.client.put(self.path, json=lease)
        if replaced.status_code == 409:  # another replica wrote first
            return False
        replaced.raise_for_status()
        self._observed = None
        return True

    async def _attempt(self) -> bool:
        try:
            return await self._try()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("lease %s: %s", self.path, exc)
            return False

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        logged = False
        while not await self._attempt():
            if not logged:
                log.info("standing by: another replica holds the lease", extra={"identity": self.identity})
                logged = True
            await asyncio.sleep(self.retry_every * random.uniform(0.8, 1.0))
        self.holding, self._last_renewal = True, time.monotonic()
        log.info("leading: this replica holds the lease", extra={"identity": self.identity})

    async def hold(self) -> None:
        """Renew the Lease until it is lost (returns then; kopf must stop)."""
        while True:
            wait = self.renew_every if time.monotonic() - self._last_renewal < self.renew_every else 1.0
            await asyncio.sleep(min(wait, max(0.0, self._last_renewal + self.renew_deadline - time.monotonic())))
            if await self._attempt():
                self._last_renewal = time.monotonic()
            elif time.monotonic() - self._last_renewal >= self.renew_deadline:
                self.holding = False
                log.warning("lease lost: not renewed within %.0f s; stopping", self.renew_deadline,
                            extra={"identity": self.identity})
                return

    async def release(self) -> None:
        """Give the Lease up (on shutdown): the next replica takes it at its next attempt."""
        if not self.holding:
            return
        self.holding = False
        try:
            response = await self.client.get(self.path)
            if response.status_code != 200:
                return
            lease = response.json()
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1,
                             "renewTime": _micro_time()}
            await self.client.put(self.path, json=lease)
            log.info("lease released", extra={"identity": self.identity})
        except httpx.HTTPError as exc:
            log.warning("lease %s not released: %s", self.path, exc)
