"""The project's Kubernetes API stand-in (tests/fixtures/kube.py, ConformingKubernetes) for a
cluster run: served from a thread of its own (the runner blocks on podman while the operator's pod
talks to it), listening on every address of the machine so pods reach it through their network's
gateway, with the repository's CRDs applied by the real kubectl. `pod_kubeconfig` is what the
runner mounts into pods that mount their service account (``__NODE__``: the gateway address)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

import kmock
import yaml

from tests.fixtures.kube import CRD_DIR, ConformingKubernetes, Kind, RunningKube, kubectl_binary, write_kubeconfig


class KubeApiInThread:
    def __init__(self, directory: Path, namespace: str) -> None:
        self.directory = directory
        self.namespace = namespace
        self.kubeconfig = directory / "kubeconfig"
        self.port = 0
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kube-api", daemon=True)

    def __enter__(self) -> KubeApiInThread:
        self._thread.start()
        if not self._ready.wait(120) or self._failure:
            self.__exit__()
            raise RuntimeError(f"the Kubernetes API stand-in did not start: {self._failure!r}")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop and self._stop and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        api = ConformingKubernetes()
        # Secrets: what helm's `lookup` reads when an upgrade renders (the release's generated Secret).
        api.register(Kind("", "v1", "secrets", "Secret", namespaced=True))
        api._write(api.kinds["", "v1", "namespaces"], None, self.namespace,
                   api._created({"metadata": {"name": self.namespace}}, None, self.namespace), "ADDED")
        async with api, kmock.Server(api, host="0.0.0.0") as server:
            self.port = server.port
            url = f"http://127.0.0.1:{self.port}"
            running = RunningKube(api, url, write_kubeconfig(self.kubeconfig, url))
            await running.kubectl("apply", "--validate=false", "-f", str(CRD_DIR))
            await running.kubectl("wait", "--for=condition=Established", "crd/hotels.roomee.io", "crd/workspaces.roomee.io")
            self._ready.set()
            await self._stop.wait()

    @property
    def pod_kubeconfig(self) -> str:
        """A service account's view of this API: the server at the machine's address on the pods'
        network, the release's namespace as the default."""
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
            "clusters": [{"name": "in-cluster", "cluster": {"server": f"http://__NODE__:{self.port}"}}],
            "users": [{"name": "service-account", "user": {"token": "service-account-token"}}],
            "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "service-account",
                                                           "namespace": self.namespace}}],
        })

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run([kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args], input=stdin,
                                capture_output=True, text=True, timeout=timeout,
                                env={"HOME": str(self.directory), "KUBECACHEDIR": str(self.directory / "cache"),
                                     "PATH": "/usr/bin:/bin"})
        if result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result
