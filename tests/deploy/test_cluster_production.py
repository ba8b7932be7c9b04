"""The chart as a cluster runs it with production-style values (tests/deploy/values/cluster-production.yaml:
production.yaml's `existingSecret`, `signingKeysSecret`, external database and broker, API docs off;
SMTP, logged push and one media replica on a volume instead of SendGrid, OneSignal and GCS), run by
tests/deploy/cluster/runner.py on podman with the images tests/deploy/cluster/build-images.sh builds.

What an operator does before `helm install`, the test does:
- the Secrets the values name are created with `kubectl create secret --dry-run=client -o yaml |
  kubectl apply -f -` against the Kubernetes API stand-in (`roomee-secrets` with service-, cursor- and media-signing secrets; `roomee-signing-keys`
  with an RSA key generated here; `roomee-db-app` with CloudNativePG's `uri`; `roomee-broker` with
  the AMQP URL), and the runner reads them from there: the chart renders no Secret of its own;
- PostgreSQL and RabbitMQ run as containers of their own on the run's network, under the names
  CloudNativePG and the RabbitMQ Cluster Operator would give them (`roomee-db-rw`, `roomee-rabbitmq`),
  from the stand-ins of the official images: the chart renders no StatefulSet;
- a mail catcher (tests/deploy/cluster/smtp_capture.py) is the SMTP server.

Then the release: the migrations Job against the external database, 2 replicas of each target (media:
1, on a volume), the operator, and the ingress controller from the rendered Ingress. Through it: every
route reaches its target, a service token provisions a hotel (`POST /hotel/add` to `ready`), its
administrator signs up from the email the SMTP server received and signs in; `/metrics`, `/docs` and
`/openapi.json` are not served, while `/metrics` answers on each Service's metrics port inside the
network. Fewer flows than tests/deploy/test_cluster.py (which covers them with the default values).

Runs once, in the PostgreSQL + RabbitMQ pass; needs root podman, helm and the images (CI builds
them; elsewhere the test skips). Figures go to `$TMPDIR/roomee-cluster-production-figures.json`.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import re
import secrets
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.deploy.cluster.kube import KubeApiInThread
from tests.deploy.cluster.runner import Cluster, ClusterError, podman
from tests.deploy.test_cluster import PASSWORD, bearer, client, prerequisites, provision_hotel, sign_in, timed
from tests.deploy.tools import VALUES, helm_template, manifests

pytestmark = pytest.mark.timeout(600)

HERE = Path(__file__).resolve().parent
SMTP_CAPTURE = HERE / "cluster" / "smtp_capture.py"
POSTGRES_IMAGE = "docker.io/library/postgres:15"
RABBITMQ_IMAGE = "docker.io/library/rabbitmq:3.10-management"
PYTHON_IMAGE = "docker.io/library/python:3.11-slim"
MAIL_DIR = "/tmp/mail"
FIGURES: dict = {}
FIGURES_FILE = Path(tempfile.gettempdir()) / "roomee-cluster-production-figures.json"
# The values name these Secrets; an operator creates them before `helm install` (docs/deploy.md §3-4).
OPERATOR_SECRETS = ("roomee-secrets", "roomee-signing-keys", "roomee-db-app", "roomee-broker")


def render(port: int) -> list[dict]:
    return manifests(helm_template("-f", str(VALUES / "cluster-production.yaml"), "--set", f"publicUrl=http://127.0.0.1:{port}"))


def signing_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def names_in(service: str, namespace: str) -> list[str]:
    """The DNS names a Service gets in a cluster (what CloudNativePG's and RabbitMQ's Services are)."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def create_operator_secrets(kube: KubeApiInThread, namespace: str, directory: Path, passwords: dict[str, str]) -> list[dict]:
    """What the operator runs with kubectl before the install; returns the Secrets as the API holds them."""
    key_file = directory / "signing-1.pem"
    key_file.write_text(signing_key_pem())

    def create(name: str, *sources: str) -> None:
        # `kubectl create secret ... --dry-run=client -o yaml | kubectl apply -f -` (the stand-in
        # answers JSON, not the protobuf a plain `kubectl create` sends).
        manifest = kube.kubectl("create", "secret", "generic", name, "-n", namespace, *sources, "--dry-run=client", "-o", "yaml")
        kube.kubectl("apply", "--validate=false", "-n", namespace, "-f", "-", stdin=manifest.stdout)

    create("roomee-secrets", f"--from-literal=service-secret={secrets.token_hex(32)}",
           f"--from-literal=cursor-secret={secrets.token_hex(32)}",
           f"--from-literal=media-signing-secret={secrets.token_hex(32)}",
           f"--from-literal=operator-client-secret={secrets.token_hex(32)}")
    create("roomee-signing-keys", f"--from-file={key_file}")
    host = f"roomee-db-rw.{namespace}"
    create("roomee-db-app", f"--from-literal=uri=postgresql://roomee:{passwords['postgresql']}@{host}:5432/roomee",
           "--from-literal=username=roomee", f"--from-literal=password={passwords['postgresql']}")
    create("roomee-broker", f"--from-literal=broker-url=amqp://roomee:{passwords['rabbitmq']}@roomee-rabbitmq.{namespace}:5672/")
    listed = json.loads(kube.kubectl("get", "secret", "-n", namespace, *OPERATOR_SECRETS, "-o", "json").stdout)
    return listed["items"]


def wait_for_port(address: str, port: int, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} does not listen on {address}:{port} after {timeout} s") from None
            time.sleep(0.5)


def start_external_services(passwords: dict[str, str], namespace: str):
    """`before_install`: PostgreSQL, RabbitMQ and the mail catcher exist before the release does."""

    def start(cluster: Cluster) -> None:
        started = time.monotonic()
        postgres = cluster.run_external("roomee-db-1", POSTGRES_IMAGE, aliases=names_in("roomee-db-rw", namespace),
                                        env={"POSTGRES_USER": "roomee", "POSTGRES_PASSWORD": passwords["postgresql"],
                                             "POSTGRES_DB": "roomee"})
        rabbitmq = cluster.run_external("roomee-rabbitmq-server-0", RABBITMQ_IMAGE, aliases=names_in("roomee-rabbitmq", namespace),
                                        env={"RABBITMQ_DEFAULT_USER": "roomee", "RABBITMQ_DEFAULT_PASS": passwords["rabbitmq"]})
        smtp = cluster.run_external("smtp-capture", PYTHON_IMAGE, "python3", "-c", SMTP_CAPTURE.read_text(), "0.0.0.0", "1025",
                                    MAIL_DIR, aliases=["smtp-capture"])
        wait_for_port(postgres, 5432, "the external PostgreSQL")
        wait_for_port(rabbitmq, 5672, "the external RabbitMQ")
        wait_for_port(smtp, 1025, "the SMTP server")
        FIGURES["external PostgreSQL, RabbitMQ and SMTP server listening after (s)"] = round(time.monotonic() - started, 1)

    return start


@pytest.fixture(scope="module")
def production():
    port, docs, rendered = prerequisites(render, POSTGRES_IMAGE, RABBITMQ_IMAGE, PYTHON_IMAGE)
    FIGURES["rendered objects per kind"] = rendered.counts()
    passwords = {"postgresql": secrets.token_hex(16), "rabbitmq": secrets.token_hex(16)}
    with tempfile.TemporaryDirectory(prefix="roomee-kube-") as directory, \
            KubeApiInThread(Path(directory), rendered.namespace) as kube:
        created = create_operator_secrets(kube, rendered.namespace, Path(directory), passwords)
        with Cluster(docs + created, ingress_port=port, kubeconfig=kube.pod_kubeconfig,
                     before_install=start_external_services(passwords, rendered.namespace)) as running:
            FIGURES.update(running.timings)
            running.state_of_test = {"kube": kube, "rendered_only": rendered}
            yield running
    FIGURES_FILE.write_text(json.dumps(FIGURES, indent=2))
    print(f"\nproduction cluster figures ({FIGURES_FILE}):\n{json.dumps(FIGURES, indent=2)}")


def captured_mail(cluster: Cluster) -> list[email.message.EmailMessage]:
    container = f"{cluster.run_id}-smtp-capture"
    names = podman("exec", container, "ls", MAIL_DIR, check=False).stdout.split()
    return [email.message_from_string(podman("exec", container, "cat", f"{MAIL_DIR}/{name}").stdout, policy=email.policy.default)
            for name in sorted(names) if name.endswith(".eml")]


async def invitation_link(cluster: Cluster, address: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for message in await asyncio.to_thread(captured_mail, cluster):
            if address in str(message["To"]):
                match = re.search(r"https?://\S*token=[A-Za-z0-9_\-.%]+", message.get_body(("plain",)).get_content())
                if match:
                    return match.group(0)
        if time.monotonic() > deadline:
            raise AssertionError(f"the SMTP server received no invitation to {address} within {timeout} s")
        await asyncio.sleep(1)


def test_the_render_has_no_engine_and_no_secret_of_its_own(production):
    rendered = production.state_of_test["rendered_only"]
    assert not rendered.of_kind("StatefulSet"), "the chart renders a database or broker though external ones are given"
    assert not rendered.of_kind("Secret"), "the chart generates a Secret though existingSecret is set"
    referenced = set()
    for kind in ("Deployment", "Job"):
        for workload in rendered.of_kind(kind):
            spec = workload["spec"]["template"]["spec"]
            for container in spec["containers"]:
                referenced |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env") or []
                               if "secretKeyRef" in (e.get("valueFrom") or {})}
            referenced |= {v["secret"]["secretName"] for v in spec.get("volumes") or [] if "secret" in v}
    assert referenced == set(OPERATOR_SECRETS)


def test_every_target_runs_its_replicas_after_the_migrations_job(production):
    jobs = [pod for pod in production.finished if pod.owner.startswith("Job/")]
    assert jobs, "no migrations Job ran"
    for deployment in production.workloads("Deployment"):
        name = deployment["metadata"]["name"]
        expected = 1 if name.endswith("-media") else 2
        assert deployment["spec"]["replicas"] == expected, name
        pods = production.pods_of("Deployment", name)
        assert len(pods) == expected and all(production.probe(pod) for pod in pods), name


async def test_every_route_of_the_ingress_reaches_its_target(production):
    """Each routed path answers from the platform (its `X-Request-ID`), not from the proxy (its own
    404 page, or 502/503/504 for a backend it cannot reach)."""
    async with client(production) as http:
        for _, path, service, _ in production.rendered.ingress_routes():
            if path.rstrip("/") == "/socket.io":  # Engine.IO's handshake (the open packet, `0{"sid": ...}`)
                answer = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
                assert answer.status_code == 200 and answer.text.startswith("0{"), (path, service, answer.status_code, answer.text[:80])
                continue
            answer = await http.get(path)
            assert answer.status_code not in (502, 503, 504), (path, service, answer.status_code)
            assert "x-request-id" in answer.headers, (path, service, answer.status_code, "answered by the proxy, not the target")


async def test_a_service_token_provisions_a_hotel_and_its_administrator_signs_up_from_the_email(production):
    async with client(production) as http:
        with timed("service token + POST /hotel/add to ready", FIGURES):
            operator, admin_email, hotel_id = await provision_hotel(http, production.rendered, "production-1")
        with timed("administrator signs up from the email (SMTP) and signs in", FIGURES):
            link = await invitation_link(production, admin_email)
            assert link.startswith(production.url + "/"), link
            token = parse_qs(urlparse(link).query)["token"][0]
            opened = await http.get(link)
            assert opened.status_code in (200, 307), f"the invitation link {urlparse(link).path} answers {opened.status_code}"
            signed_up = await http.post("/users/signUp", json={"token": token, "password": PASSWORD, "firstName": "Ada",
                                                               "lastName": "Admin"})
            assert signed_up.status_code == 201, signed_up.text
            admin = await sign_in(http, admin_email)
        me = await http.get("/users/me", headers=bearer(admin))
        assert me.status_code == 200 and me.json()["user"]["email"] == admin_email, me.text
        assert me.json()["member"]["ecosystemId"] == hotel_id, me.text
        # Every auth replica signs with the key the operator put in `roomee-signing-keys`: the JWKS
        # publishes that one key only, and the session's token names it.
        jwks = (await http.get("/.well-known/jwks.json")).json()
        [pem] = production.rendered.data("Secret", "roomee-signing-keys").values()
        numbers = serialization.load_pem_private_key(pem, password=None).public_key().public_numbers()
        modulus = base64.urlsafe_b64encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
        assert [key["n"] for key in jwks["keys"]] == [modulus], jwks
        header = json.loads(base64.urlsafe_b64decode(admin["accessToken"].split(".")[0] + "=="))
        assert header["kid"] == jwks["keys"][0]["kid"], header


def test_metrics_and_docs_are_not_served_through_the_proxy_but_metrics_answer_on_their_port(production):
    import httpx

    with httpx.Client(base_url=production.url, timeout=10) as http:
        for path in ("/metrics", "/docs", "/openapi.json", "/redoc"):
            assert http.get(path).status_code == 404, path
    # Inside the network, as Prometheus scrapes: every target's Service by name, from a pod.
    [auth, *_] = production.pods_of("Deployment", "roomee-auth")
    routed = {service for _, _, service, _ in production.rendered.ingress_routes()}
    checked = {}
    for svc in production.rendered.of_kind("Service"):
        ports = {port.get("name"): port["port"] for port in svc["spec"]["ports"]}
        if "metrics" not in ports:
            continue
        name = svc["metadata"]["name"]
        script = (
            "import json, urllib.request, urllib.error\n"
            "def get(url):\n"
            "    try:\n"
            "        with urllib.request.urlopen(url, timeout=10) as r: return r.status, r.read(200).decode()\n"
            "    except urllib.error.HTTPError as e: return e.code, ''\n"
            f"print(json.dumps([get('http://{name}:{ports['metrics']}/metrics'), get('http://{name}:{ports.get('http', 80)}/metrics'),"
            f" get('http://{name}:{ports.get('http', 80)}/docs')]))\n"
        )
        answer = podman("exec", auth.container, "python", "-c", script).stdout.strip()
        checked[name] = answer
        (metrics_status, metrics_text), (api_metrics_status, _), (docs_status, _) = json.loads(answer)
        assert metrics_status == 200 and metrics_text.startswith("#"), (name, answer)
        if name in routed:  # the API port the Ingress sends traffic to serves neither
            assert api_metrics_status == 404 and docs_status == 404, (name, answer)
    assert routed <= set(checked), (routed, checked)
