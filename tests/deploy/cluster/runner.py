"""Run rendered Kubernetes manifests (`helm template` output) as a cluster would, with podman.

No kube-apiserver or kubelet can run here (RECIPES.md, "Running rendered Kubernetes manifests
here"); this plays their part for the workloads a chart renders, from the rendered objects only:

- one podman bridge network per run; every pod a container named after its pod (`<run>-<pod>`,
  hostname the pod's name), with network aliases for every Service whose selector matches its
  labels (`svc`, `svc.<ns>`, `svc.<ns>.svc`, `svc.<ns>.svc.cluster.local`; several replicas share
  an alias and DNS answers each of them) and, for a StatefulSet, `<pod>.<serviceName>`;
- a Service port that differs from its target port (`80 -> http`) is translated inside each
  selected pod's network namespace (an iptables REDIRECT, what kube-proxy's DNAT does);
- each container with its rendered image, command, args, env (values, `configMapKeyRef`,
  `secretKeyRef`, `fieldRef`, `envFrom`, `$(VAR)` expansion, resolved from the rendered objects),
  volumes (emptyDir: an empty tmpfs owned by the pod's user; PersistentVolumeClaim and
  volumeClaimTemplates: named podman volumes kept across upgrades, owned by the pod's user when it
  has an fsGroup; Secret and ConfigMap: files, items and defaultMode honoured), securityContext
  (user, read-only root, dropped capabilities, no new privileges) and memory limit; restarted when
  it fails, as restartPolicy Always does; a pod that mounts its service account's token gets a
  kubeconfig (`KUBECONFIG`) for the Kubernetes API the test gives (cluster/kube.py);
- `replicas` pods per Deployment and StatefulSet; helm's pre-install/pre-upgrade hook Jobs run
  first, then everything else starts at once (as `helm install` applies it) and the release is up
  once every Job has exited 0 (a failed Job pod is replaced up to its backoffLimit) and every
  readiness probe (httpGet from the node to the pod's address, tcpSocket, exec through
  `podman exec`) passes;
- an ingress controller (Debian's nginx in a container on the host's network, listening on a
  local port) configured from the rendered Ingresses: each rule's paths (Prefix/Exact, longest
  first) to its Service's name resolved through the network's DNS at request time (so a killed
  replica leaves it), `X-Forwarded-For` set to the client's address (replacing what the client
  sent), WebSocket upgrades passed, an access log without query strings;
- `upgrade(docs)`: hook Jobs, the new revision's Jobs, and every workload whose pod template
  changed rolled at once (RollingUpdate: a new pod ready before an old one goes; Recreate;
  StatefulSets keeping their volumes);
- `replace_pod(pod, kill=True)`: a pod killed (SIGKILL) and a new one started, as a ReplicaSet does;
- `run_external(...)` (from `before_install`): what the release expects to exist already (an
  external PostgreSQL or RabbitMQ, a mail server) as containers of the run, not of the release;
- everything the run made (containers, network, volumes, files) is removed by `close()`, also
  after a failure.

What it does not do: scheduling, resource requests, PodDisruptionBudgets, RBAC (the operator's
permissions are the Kubernetes API stand-in's concern), Ingress TLS and ingress-nginx annotations
other than the body size and timeouts (the Socket.IO Ingress's cookie affinity is not: clients
connect with the WebSocket transport), NetworkPolicies, liveness probes (nothing restarts a live but
stuck pod); a pod is in its Services' DNS from its start, not from its first passing readiness probe.
Runs whose test process was killed are removed by the next run (`reap_stale_runs`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTAINERS_CONF = HERE / "containers.conf"
INGRESS_IMAGE = "localhost/roomee-test-ingress:nginx"
HOOK = "helm.sh/hook"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Containers join and leave the network one at a time: in one run of many, a pod started while
# others joined and left at once never resolved a peer's name (gaierror for 300 s); podman 4.3's
# DNS (aardvark-dns) is updated on each join and leave, and this keeps those updates apart.
NETWORK_CHANGES = threading.Lock()


class ClusterError(AssertionError):
    pass


def podman(*args: str, check: bool = True, timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("ROOMEE_TEST_CONTAINERS_CONF", str(CONTAINERS_CONF))}
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env, input=stdin)
    if check and result.returncode != 0:
        raise ClusterError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def podman_usable() -> str | None:
    """Why podman cannot run the cluster here, or None."""
    if not shutil.which("podman"):
        return "podman is not installed (apt-get install -y podman runc mmdebstrap)"
    if os.geteuid() != 0:
        return "the cluster runner needs root podman (network namespaces of pods, iptables)"
    return None


def _labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion ($$ escapes; unknown references stay as they are)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


@dataclass
class Pod:
    """One running replica: a container of the run."""

    name: str  # the pod's name (hostname)
    owner: str  # kind/name of its workload
    container: str  # podman container name
    spec: dict
    labels: dict
    workload: dict
    probe_ports: dict[str, int] = field(default_factory=dict)

    @property
    def main(self) -> dict:
        return self.spec["containers"][0]


class Rendered:
    """The rendered objects, indexed, and what pods read from them."""

    def __init__(self, docs: Iterable[dict]) -> None:
        self.docs = [doc for doc in docs if doc]
        self.namespace = next((doc["metadata"].get("namespace") for doc in self.docs
                               if doc["metadata"].get("namespace")), "default")

    def of_kind(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def get(self, kind: str, name: str) -> dict | None:
        return next((doc for doc in self.of_kind(kind) if doc["metadata"]["name"] == name), None)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for doc in self.docs:
            counts[doc["kind"]] = counts.get(doc["kind"], 0) + 1
        return dict(sorted(counts.items()))

    def data(self, kind: str, name: str) -> dict[str, bytes] | None:
        """A Secret's or ConfigMap's data, decoded."""
        doc = self.get(kind, name)
        if doc is None:
            return None
        out = {key: str(value).encode() for key, value in (doc.get("stringData") or {}).items()}
        for key, value in (doc.get("data") or {}).items():
            out.setdefault(key, base64.b64decode(value) if kind == "Secret" else str(value).encode())
        for key, value in (doc.get("binaryData") or {}).items():
            out.setdefault(key, base64.b64decode(value))
        return out

    def _ref(self, kind: str, ref: dict, where: str) -> str | None:
        data = self.data(kind, ref["name"])
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise ClusterError(f"{where}: {kind} {ref['name']!r} key {ref['key']!r} is not rendered")
        return data[ref["key"]].decode()

    def env(self, container: dict, pod_name: str, where: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
            data = self.data(kind, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise ClusterError(f"{where}: envFrom {kind} {ref['name']!r} is not rendered")
            env.update({source.get("prefix", "") + key: value.decode() for key, value in data.items()})
        for entry in container.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = _expand(str(entry["value"]), env)
                continue
            source = entry.get("valueFrom") or {}
            if "secretKeyRef" in source:
                value = self._ref("Secret", source["secretKeyRef"], where)
            elif "configMapKeyRef" in source:
                value = self._ref("ConfigMap", source["configMapKeyRef"], where)
            elif "fieldRef" in source:
                value = {"metadata.name": pod_name, "metadata.namespace": self.namespace,
                         "spec.nodeName": "node-0"}.get(source["fieldRef"]["fieldPath"])
                if value is None:
                    raise ClusterError(f"{where}: fieldRef {source['fieldRef']['fieldPath']} is not emulated")
            elif "valueFrom" not in entry:
                value = ""
            else:
                raise ClusterError(f"{where}: env {entry['name']} from {source} is not emulated")
            if value is not None:
                env[entry["name"]] = value
        return env

    def services_selecting(self, labels: dict) -> list[dict]:
        return [svc for svc in self.of_kind("Service") if _labels_match(svc["spec"].get("selector") or {}, labels)]

    def ingress_routes(self) -> list[tuple[str, str, str, int | str]]:
        """(pathType, path, service, port) of every rule of every rendered Ingress."""
        routes = []
        for ingress in self.of_kind("Ingress"):
            for rule in ingress["spec"].get("rules") or []:
                for entry in (rule.get("http") or {}).get("paths") or []:
                    backend = entry["backend"]["service"]
                    port = backend["port"].get("number") or backend["port"].get("name")
                    routes.append((entry.get("pathType", "Prefix"), entry.get("path", "/"), backend["name"], port))
        return sorted(set(routes), key=lambda route: -len(route[1]))

    def ingress_annotations(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for ingress in self.of_kind("Ingress"):
            merged.update(ingress["metadata"].get("annotations") or {})
        return merged


def _hooks(doc: dict) -> set[str]:
    value = (doc["metadata"].get("annotations") or {}).get(HOOK, "")
    return {hook.strip() for hook in value.split(",") if hook.strip()}


class Cluster:
    """A release of rendered manifests running on podman. Use as a context manager."""

    def __init__(self, docs: Iterable[dict], *, name: str | None = None, ingress_port: int = 0,
                 kubeconfig: str | None = None, before_install: Callable[[Cluster], None] | None = None) -> None:
        """``kubeconfig``: the Kubernetes API credentials a pod that mounts its service account's
        token gets (``automountServiceAccountToken`` not false), as a file named by ``KUBECONFIG``;
        ``__NODE__`` in it stands for the address of the machine as the pods reach it.
        ``before_install``: called once the run's network exists and before anything of the release
        starts, to start what the release expects to find there (``run_external``)."""
        self.before_install = before_install
        self.rendered = Rendered(docs)
        self.run_id = name or f"rt{uuid.uuid4().hex[:8]}"
        self.network = self.run_id
        self.gateway = ""
        self.kubeconfig = kubeconfig
        self.pods: dict[str, Pod] = {}
        self.finished: list[Pod] = []  # pods of Jobs, and replaced or killed pods (their logs are kept)
        self.logs_of_removed: dict[str, str] = {}
        self.volumes: set[str] = set()
        self.files = Path(tempfile.mkdtemp(prefix=f"{self.run_id}-"))
        self.revision = 1
        self.ingress_port = ingress_port  # 0: any free port
        self.ingress_container = f"{self.run_id}-ingress"
        self.timings: dict[str, float] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, timeout: float = 300) -> None:
        reap_stale_runs()
        podman("network", "create", "--label", f"roomee-test-run={self.run_id}", "--label", f"roomee-test-pid={os.getpid()}",
               self.network)
        self.gateway = json.loads(podman("network", "inspect", self.network).stdout)[0]["subnets"][0]["gateway"]
        if self.before_install:
            self.before_install(self)
        started = time.monotonic()
        self._run_hooks({"pre-install"}, timeout)
        with ThreadPoolExecutor(6) as pool:  # as `helm install` applies everything at once
            list(pool.map(self._start_workload, self._workloads()))
        self._start_ingress()
        self.wait_ready(timeout)
        self._run_hooks({"post-install"}, timeout)
        self.timings["first container to every probe ready (s)"] = round(time.monotonic() - started, 1)

    def close(self) -> None:
        remove_run(self.run_id)
        shutil.rmtree(self.files, ignore_errors=True)

    def upgrade(self, docs: Iterable[dict], timeout: float = 300) -> None:
        """`helm upgrade` with the new rendering: hook Jobs, the new revision's Jobs, and every
        workload whose pod template changed rolled (RollingUpdate pod by pod, Recreate, StatefulSet
        highest ordinal first), all workloads at once."""
        self.rendered = Rendered(docs)
        self.revision += 1
        self._run_hooks({"pre-upgrade"}, timeout)

        def roll(workload: dict) -> None:
            kind, name = workload["kind"], workload["metadata"]["name"]
            old = self.pods_of(kind, name)
            if kind == "Job":
                self._start_workload(workload)
            elif old and all(pod.workload["spec"]["template"] == workload["spec"]["template"] for pod in old):
                return  # an unchanged pod template rolls nothing
            elif kind == "StatefulSet":  # ordered, highest ordinal first, each keeping its volumes
                for pod in reversed(old):
                    self.remove_pod(pod)
                    self._wait_pods([self._start_pod(workload, pod.name, int(pod.name.rsplit("-", 1)[1]))], timeout)
            elif (workload["spec"].get("strategy") or {}).get("type") == "Recreate":
                for pod in old:
                    self.remove_pod(pod)
                self._wait_pods(self._start_workload(workload), timeout)
            else:  # RollingUpdate with maxUnavailable 0: a new pod ready before an old one goes
                replicas = workload["spec"].get("replicas", 1)
                for index in range(max(replicas, len(old))):
                    if index < replicas:
                        self._wait_pods([self._start_pod(workload, f"{name}-r{self.revision}-{index}", index)], timeout)
                    if index < len(old):
                        self.remove_pod(old[index])

        with ThreadPoolExecutor(6) as pool:  # every workload rolls at once, as the controllers do
            list(pool.map(roll, self._workloads()))
        self._write_ingress_config()
        podman("exec", self.ingress_container, "nginx", "-s", "reload")
        self.wait_ready(timeout)
        self._run_hooks({"post-upgrade"}, timeout)

    def run_external(self, name: str, image: str, *args: str, aliases: Iterable[str] = (),
                     env: dict[str, str] | None = None) -> str:
        """A container that is not the release's (an existing database, a mail server) on the run's
        network under the DNS ``aliases``, removed with the run; returns its address."""
        container = f"{self.run_id}-{name}"
        command = ["run", "-d", "--name", container, "--hostname", name, "--network", self.network,
                   "--label", f"roomee-test-run={self.run_id}"]
        for alias in aliases:
            command += ["--network-alias", alias]
        for key, value in (env or {}).items():
            command += ["--env", f"{key}={value}"]
        # The image's VOLUMEs as volumes of the run (anonymous ones outlive `podman rm`).
        declared = json.loads(podman("image", "inspect", image).stdout)[0].get("Config", {}).get("Volumes") or {}
        for index, path in enumerate(sorted(declared)):
            volume = f"{container}-volume-{index}"
            podman("volume", "create", "--label", f"roomee-test-run={self.run_id}", volume)
            self.volumes.add(volume)
            command += ["-v", f"{volume}:{path}"]
        with NETWORK_CHANGES:
            podman(*command, image, *args)
        networks = json.loads(podman("inspect", container).stdout)[0]["NetworkSettings"]["Networks"]
        return networks[self.network]["IPAddress"]

    # -- workloads ----------------------------------------------------------------------------------

    def _workloads(self) -> list[dict]:
        return [doc for doc in self.rendered.docs
                if doc["kind"] in ("StatefulSet", "Deployment", "Job") and not _hooks(doc)]

    def _run_hooks(self, hooks: set[str], timeout: float) -> None:
        jobs = [doc for doc in self.rendered.of_kind("Job") if _hooks(doc) & hooks]
        jobs.sort(key=lambda doc: int((doc["metadata"].get("annotations") or {}).get("helm.sh/hook-weight", "0")))
        for job in jobs:
            [pod] = self._start_workload(job)
            self._wait_job(pod, timeout)

    def _start_workload(self, workload: dict) -> list[Pod]:
        kind, name = workload["kind"], workload["metadata"]["name"]
        if kind == "Job":
            return [self._start_pod(workload, f"{name}-r{self.revision}", 0)]
        if kind == "StatefulSet":
            return [self._start_pod(workload, f"{name}-{index}", index) for index in range(workload["spec"].get("replicas", 1))]
        return [self._start_pod(workload, f"{name}-r{self.revision}-{index}", index)
                for index in range(workload["spec"].get("replicas", 1))]

    def replace_pod(self, pod: Pod, *, kill: bool = True) -> Pod:
        """What a ReplicaSet does when a pod dies: the pod goes (SIGKILL with ``kill``), a new one starts."""
        kind, name = pod.owner.split("/", 1)
        workload = self.rendered.get(kind, name)
        self.remove_pod(pod, kill=kill)
        index = sum(1 for p in self.finished if p.owner == pod.owner)
        new_name = pod.name if kind == "StatefulSet" else f"{name}-r{self.revision}-x{index}"
        return self._start_pod(workload, new_name, 0)

    def remove_pod(self, pod: Pod, *, kill: bool = False) -> None:
        with NETWORK_CHANGES:
            if kill:
                podman("kill", "-s", "KILL", pod.container, check=False)
            else:
                grace = str(pod.spec.get("terminationGracePeriodSeconds", 30))
                podman("stop", "-t", grace, pod.container, check=False, timeout=120)
        self.logs_of_removed[pod.container] = self._logs(pod.container)
        with NETWORK_CHANGES:
            podman("rm", "-f", "-t", "0", pod.container, check=False)
        self.pods.pop(pod.container, None)
        self.finished.append(pod)

    def _start_pod(self, workload: dict, pod_name: str, index: int) -> Pod:
        kind, name = workload["kind"], workload["metadata"]["name"]
        template = workload["spec"]["template"]
        spec, labels = template["spec"], dict(template["metadata"].get("labels") or {})
        if kind == "StatefulSet":
            labels["statefulset.kubernetes.io/pod-name"] = pod_name
        if len(spec["containers"]) != 1 or spec.get("initContainers"):
            raise ClusterError(f"{kind}/{name}: only pods of one container (no init containers) are emulated")
        container = spec["containers"][0]
        where = f"{kind}/{name} container {container['name']}"
        cname = f"{self.run_id}-{pod_name}"
        pod_ctx = spec.get("securityContext") or {}
        ctx = {**pod_ctx, **(container.get("securityContext") or {})}
        args = ["run", "-d", "--name", cname, "--hostname", pod_name, "--network", self.network,
                "--label", f"roomee-test-run={self.run_id}", "--label", f"roomee-test-owner={kind}/{name}",
                "--restart", "no" if kind == "Job" or spec.get("restartPolicy") == "Never" else "on-failure"]
        for alias in self._aliases(workload, pod_name, labels):
            args += ["--network-alias", alias]
        env = self.rendered.env(container, pod_name, where)
        if self.kubeconfig and spec.get("automountServiceAccountToken") is not False:
            host = self.files / pod_name / "serviceaccount" / "kubeconfig"
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_text(self.kubeconfig.replace("__NODE__", self.gateway))
            host.chmod(0o644)
            args += ["-v", f"{host.parent}:{SERVICE_ACCOUNT_DIR}:ro"]
            env["KUBECONFIG"] = f"{SERVICE_ACCOUNT_DIR}/kubeconfig"
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        if "runAsUser" in ctx:
            args += ["--user", f"{ctx['runAsUser']}:{ctx.get('runAsGroup', ctx['runAsUser'])}"]
        if pod_ctx.get("fsGroup") is not None:
            args += ["--group-add", str(pod_ctx["fsGroup"])]
        if ctx.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        if "ALL" in ((ctx.get("capabilities") or {}).get("drop") or []):
            args += ["--cap-drop", "ALL"]
        for cap in (ctx.get("capabilities") or {}).get("add") or []:
            args += ["--cap-add", cap]
        if ctx.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        memory = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        if memory:
            args += ["--memory", self._bytes(memory)]
        args += self._volume_args(workload, spec, container, pod_name, where)
        if container.get("command"):
            args += ["--entrypoint", json.dumps([_expand(part, env) for part in container["command"]])]
        args.append(container["image"])
        args += [_expand(str(part), env) for part in container.get("args") or []]
        with NETWORK_CHANGES:
            podman(*args)
        pod = Pod(pod_name, f"{kind}/{name}", cname, spec, labels, workload,
                  {port["name"]: port["containerPort"] for port in container.get("ports") or [] if port.get("name")})
        self.pods[cname] = pod
        self._translate_service_ports(pod)
        return pod

    def _aliases(self, workload: dict, pod_name: str, labels: dict) -> list[str]:
        ns = self.rendered.namespace
        names = [svc["metadata"]["name"] for svc in self.rendered.services_selecting(labels)]
        aliases = [alias for svc in names for alias in (svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local")]
        service_name = workload["spec"].get("serviceName")
        if workload["kind"] == "StatefulSet" and service_name:
            aliases += [f"{pod_name}.{service_name}", f"{pod_name}.{service_name}.{ns}.svc.cluster.local"]
        return aliases

    @staticmethod
    def _bytes(quantity: str) -> str:
        units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
        match = re.fullmatch(r"(\d+)([KMG]i?)?", str(quantity))
        if not match:
            raise ClusterError(f"memory quantity {quantity!r} is not understood")
        return str(int(match.group(1)) * units.get(match.group(2) or "", 1))

    def _volume_args(self, workload: dict, spec: dict, container: dict, pod_name: str, where: str) -> list[str]:
        volumes = {volume["name"]: volume for volume in spec.get("volumes") or []}
        claims = {tpl["metadata"]["name"] for tpl in workload["spec"].get("volumeClaimTemplates") or []}
        owned = "U" if (spec.get("securityContext") or {}).get("fsGroup") is not None else ""
        args: list[str] = []
        for mount in container.get("volumeMounts") or []:
            path, ro = mount["mountPath"], mount.get("readOnly", False)
            volume = volumes.get(mount["name"])
            if volume is None and mount["name"] in claims:
                volume = {"persistentVolumeClaim": {"claimName": f"{mount['name']}-{pod_name}"}}
            if volume is None:
                raise ClusterError(f"{where}: volume {mount['name']!r} is not rendered")
            if mount.get("subPath") and not ("secret" in volume or "configMap" in volume):
                raise ClusterError(f"{where}: subPath of a {sorted(volume)} volume is not emulated")
            if "emptyDir" in volume:
                # Empty (not a copy of the image's directory), owned by the pod's user (as fsGroup gives).
                size = (volume["emptyDir"] or {}).get("sizeLimit")
                args += ["--tmpfs", f"{path}:rw,U,notmpcopyup" + (f",size={self._bytes(size)}" if size else "")]
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if not claim.endswith(pod_name) and self.rendered.get("PersistentVolumeClaim", claim) is None:
                    raise ClusterError(f"{where}: PersistentVolumeClaim {claim!r} is not rendered")
                podman_volume = f"{self.run_id}-{claim}"
                if podman_volume not in self.volumes:
                    podman("volume", "create", "--label", f"roomee-test-run={self.run_id}", podman_volume)
                    self.volumes.add(podman_volume)
                flags = ",".join(flag for flag in ("ro" if ro else "", owned) if flag)
                args += ["-v", f"{podman_volume}:{path}" + (f":{flags}" if flags else "")]
            elif "secret" in volume or "configMap" in volume:
                kind, source = ("Secret", volume["secret"]) if "secret" in volume else ("ConfigMap", volume["configMap"])
                ref = source.get("secretName") or source.get("name")
                data = self.rendered.data(kind, ref)
                if data is None:
                    if source.get("optional"):
                        continue
                    raise ClusterError(f"{where}: {kind} {ref!r} of volume {mount['name']!r} is not rendered")
                host = self.files / pod_name / mount["name"]
                host.mkdir(parents=True, exist_ok=True)
                items = source.get("items") or [{"key": key, "path": key} for key in data]
                for item in items:
                    if item["key"] not in data:
                        raise ClusterError(f"{where}: {kind} {ref!r} has no key {item['key']!r}")
                    target = host / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data[item["key"]])
                    target.chmod(item.get("mode", source.get("defaultMode", 0o644)))
                bind = host / mount["subPath"] if mount.get("subPath") else host
                args += ["-v", f"{bind}:{path}:ro"]
            else:
                raise ClusterError(f"{where}: volume {mount['name']!r} of type {sorted(volume)} is not emulated")
        return args

    def _translate_service_ports(self, pod: Pod) -> None:
        """Service port -> target port inside the pod's network namespace, as kube-proxy's DNAT."""
        rules = set()
        for svc in self.rendered.services_selecting(pod.labels):
            for port in svc["spec"].get("ports") or []:
                target = port.get("targetPort", port["port"])
                target = pod.probe_ports.get(target, target) if isinstance(target, str) else target
                if not isinstance(target, int):
                    raise ClusterError(f"Service {svc['metadata']['name']}: target port {target!r} is not a port of {pod.name}")
                if target != port["port"]:
                    rules.add((port["port"], target))
        if not rules:
            return
        state = json.loads(podman("inspect", pod.container).stdout)[0]
        pid = state["State"]["Pid"]
        address = self.address(pod)
        for port, target in sorted(rules):
            for chain, match in (("PREROUTING", []), ("OUTPUT", ["-d", address])):
                subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-t", "nat", "-A", chain, "-p", "tcp", *match,
                                "--dport", str(port), "-j", "REDIRECT", "--to-ports", str(target)],
                               check=True, capture_output=True, timeout=30)

    # -- state and probes ---------------------------------------------------------------------------

    def address(self, pod: Pod) -> str:
        networks = json.loads(podman("inspect", pod.container).stdout)[0]["NetworkSettings"]["Networks"]
        return networks[self.network]["IPAddress"]

    def state(self, pod: Pod) -> dict:
        return json.loads(podman("inspect", pod.container).stdout)[0]["State"]

    def pods_of(self, kind: str, name: str) -> list[Pod]:
        return sorted((pod for pod in self.pods.values() if pod.owner == f"{kind}/{name}"), key=lambda p: p.name)

    def workloads(self, kind: str) -> list[dict]:
        return self.rendered.of_kind(kind)

    def probe(self, pod: Pod, which: str = "readinessProbe") -> bool:
        probe = pod.main.get(which)
        if probe is None:
            return self.state(pod)["Running"]
        timeout = probe.get("timeoutSeconds", 1) + 2
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = pod.probe_ports.get(get["port"], get["port"])
            try:
                with urllib.request.urlopen(f"http://{self.address(pod)}:{port}{get.get('path', '/')}", timeout=timeout) as answer:
                    return 200 <= answer.status < 400
            except (urllib.error.URLError, OSError, ValueError):
                return False
        if "tcpSocket" in probe:
            port = pod.probe_ports.get(probe["tcpSocket"]["port"], probe["tcpSocket"]["port"])
            try:
                with socket.create_connection((self.address(pod), int(port)), timeout=timeout):
                    return True
            except OSError:
                return False
        if "exec" in probe:
            return podman("exec", pod.container, *probe["exec"]["command"], check=False, timeout=timeout + 10).returncode == 0
        raise ClusterError(f"{pod.name}: probe {probe} is not emulated")

    def _logs(self, container: str) -> str:
        result = podman("logs", container, check=False, timeout=60)
        return result.stdout + result.stderr

    def logs(self) -> dict[str, str]:
        """Every container's output (stdout and stderr), the removed ones' included."""
        logs = dict(self.logs_of_removed)
        for pod in list(self.pods.values()):
            logs[pod.container] = self._logs(pod.container)
        logs[self.ingress_container] = self._logs(self.ingress_container)
        return logs

    def _diagnose(self, pods: Iterable[Pod], state: dict | None = None) -> str:
        lines = []
        for pod in pods:
            state = state or self.state(pod)
            tail = "\n    ".join(self._logs(pod.container).strip().splitlines()[-12:])
            lines.append(f"{pod.name}: {state['Status']} (exit {state['ExitCode']}, restarts {state.get('RestartCount', 0)})\n    {tail}")
        return "\n".join(lines)

    def _wait_job(self, pod: Pod, timeout: float) -> None:
        """Until the Job's pod exits 0; a failed pod is replaced up to the Job's backoffLimit (as the
        Job controller does, with a 5 s pause instead of its growing back-off)."""
        deadline = time.monotonic() + timeout
        failures: list[str] = []
        while True:
            state = self.state(pod)
            if state["Status"] in ("exited", "stopped"):
                self.pods.pop(pod.container, None)
                self.finished.append(pod)
                self.logs_of_removed[pod.container] = self._logs(pod.container)
                if state["ExitCode"] == 0:
                    return
                failures.append(self._diagnose([pod], state))
                if len(failures) > pod.workload["spec"].get("backoffLimit", 6):
                    raise ClusterError(f"Job {pod.owner} failed {len(failures)} times; the last:\n{failures[-1]}")
                time.sleep(5)
                pod = self._start_pod(pod.workload, f"{pod.owner.split('/', 1)[1]}-r{self.revision}-retry{len(failures)}", 0)
            elif time.monotonic() > deadline:
                raise ClusterError(f"Job pod {pod.name} still running after {timeout} s:\n{self._diagnose([pod])}")
            time.sleep(1)

    def _wait_pods(self, pods: list[Pod], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(pods)
        while waiting:
            for pod in list(waiting):
                if pod.owner.startswith("Job/"):
                    self._wait_job(pod, max(1, deadline - time.monotonic()))
                    waiting.remove(pod)
                elif self.probe(pod):
                    waiting.remove(pod)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"not ready after {timeout} s:\n{self._diagnose(waiting)}")
            time.sleep(1)

    def wait_ready(self, timeout: float = 300) -> None:
        """Every Job exited 0 and every other pod's readiness probe passes."""
        self._wait_pods(list(self.pods.values()), timeout)

    # -- the ingress controller -----------------------------------------------------------------------

    def _start_ingress(self) -> None:
        if not self.rendered.of_kind("Ingress"):
            return
        if not self.ingress_port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.ingress_port = probe.getsockname()[1]
        self._write_ingress_config()
        podman("run", "-d", "--name", self.ingress_container, "--network", "host",
               "--label", f"roomee-test-run={self.run_id}",
               "-v", f"{self.files / 'nginx.conf'}:/etc/nginx/nginx.conf:ro", INGRESS_IMAGE)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.ingress_port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise ClusterError(f"the ingress controller does not listen:\n{self._logs(self.ingress_container)}") from None
                time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    def _write_ingress_config(self) -> None:
        if not self.ingress_port:
            return
        (self.files / "nginx.conf").write_text(nginx_config(self.rendered, self.ingress_port, self.gateway))


def nginx_config(rendered: Rendered, port: int, resolver: str) -> str:
    """nginx configured from the rendered Ingresses: paths -> Services, resolved per request."""
    annotations = rendered.ingress_annotations()
    body_size = annotations.get("nginx.ingress.kubernetes.io/proxy-body-size", "1m")
    read_timeout = annotations.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60")
    locations = []
    for path_type, path, service, svc_port in rendered.ingress_routes():
        svc = rendered.get("Service", service)
        if svc is None:
            raise ClusterError(f"Ingress routes {path} to Service {service!r}, which is not rendered")
        if isinstance(svc_port, str):
            svc_port = next(p["port"] for p in svc["spec"]["ports"] if p.get("name") == svc_port)
        prefix = path.rstrip("/")
        pattern = f"^{re.escape(path)}$" if path_type == "Exact" else f"^{re.escape(prefix)}(/|$)"
        locations.append(
            f"    location ~ {pattern} {{\n"
            f"      set $backend {service}.dns.podman:{svc_port};\n"
            f"      proxy_pass http://$backend;\n"
            f"    }}\n"
        )
    # The access log holds the path without the query string (as many ingress set-ups do); a
    # secret in a path shows.
    return f"""worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
  log_format ingress '$remote_addr "$request_method $uri" $status $body_bytes_sent $request_time $upstream_addr';
  access_log /dev/stdout ingress;
  resolver {resolver} valid=1s ipv6=off;
  client_max_body_size {body_size};
  proxy_http_version 1.1;
  proxy_read_timeout {read_timeout}s;
  proxy_send_timeout {read_timeout}s;
  proxy_next_upstream error timeout;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  proxy_set_header Host $host;
  proxy_set_header X-Forwarded-For $remote_addr;
  proxy_set_header X-Real-IP $remote_addr;
  proxy_set_header X-Forwarded-Proto $scheme;
  proxy_set_header X-Forwarded-Host $host;
  proxy_set_header Upgrade $http_upgrade;
  proxy_set_header Connection $connection_upgrade;
  server {{
    listen 127.0.0.1:{port} default_server;
{''.join(locations)}    location / {{ return 404; }}
  }}
}}
"""


def remove_run(run_id: str) -> None:
    """Every container, volume and the network of a run."""
    label = f"label=roomee-test-run={run_id}"
    containers = podman("ps", "-a", "-q", "--filter", label, check=False).stdout.split()
    if containers:
        podman("rm", "-f", "-t", "0", *containers, check=False, timeout=180)
    podman("network", "rm", "-f", run_id, check=False)
    volumes = podman("volume", "ls", "-q", "--filter", label, check=False).stdout.split()
    if volumes:
        podman("volume", "rm", "-f", *volumes, check=False)


def reap_stale_runs() -> None:
    """What runs whose test process was killed (no clean-up) left behind."""
    listed = podman("network", "ls", "--filter", "label=roomee-test-run", "--format", "json", check=False).stdout
    for network in json.loads(listed or "[]"):
        labels = network.get("labels") or {}
        pid = labels.get("roomee-test-pid", "")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove_run(labels["roomee-test-run"])


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ClusterError(f"{what}: not within {timeout} s")
        time.sleep(interval)
