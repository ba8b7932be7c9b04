"""The chart as a cluster runs it: what `helm template` renders with the chart's default values
(bundled PostgreSQL and RabbitMQ; the Ingress switched on, the public URL the proxy's), run by
tests/deploy/cluster/runner.py on podman (images from tests/deploy/cluster/build-images.sh: the
platform's image built from the checkout, stand-ins for the official PostgreSQL, RabbitMQ and
Python images built from Debian's packages). Everything below goes through the ingress
controller configured from the rendered Ingress, as a client of a deployed platform would:

- a service token (client secret from the rendered Secret) provisions a hotel with
  `POST /hotel/add`, and it reaches `ready`;
- its administrator signs up from the invitation email (the `file` email backend's mail dir in a
  notification pod), invites a member who signs up from hers;
- an article reaches the member's Node socket.io-client (`notification:new`), a comment, a like,
  a direct upload with its thumbnail;
- one replica of each target is killed (SIGKILL) and replaced mid-traffic: every article the
  client sent exists exactly once and notified (clients retry with their Idempotency-Key);
- a stranger's 50 failed sign-ins from other addresses keep no one out: the administrator signs
  in; the stranger's own address is throttled (the platform sees each client's address);
- no container's log holds an invitation token or an upload signature;
- `helm upgrade` with a changed value: the migrations Job runs again, the generated secrets are
  unchanged and tokens issued before stay valid.

It runs once, in the PostgreSQL + RabbitMQ pass (tests/deploy is backend-independent), and
needs root podman, helm, node and the images (CI builds them; elsewhere the test skips).
Figures (objects per kind, time to ready, flow timings, a replica kill's cost) are written to
`$TMPDIR/roomee-cluster-figures.json` and printed.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import yaml
from PIL import Image

from tests.deploy.cluster.kube import KubeApiInThread
from tests.deploy.cluster.runner import Cluster, Rendered, podman, podman_usable
from tests.deploy.tools import helm_template, manifests, tool
from tests.news.support import every_item

pytestmark = pytest.mark.timeout(900)

JS_DIR = Path(__file__).resolve().parents[1] / "notification" / "js"
PASSWORD = "correct horse battery staple"
FIGURES: dict = {}
FIGURES_FILE = Path(tempfile.gettempdir()) / "roomee-cluster-figures.json"


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _images(rendered: Rendered) -> set[str]:
    images = set()
    for kind in ("Deployment", "StatefulSet", "Job"):
        for doc in rendered.of_kind(kind):
            images.update(c["image"] for c in doc["spec"]["template"]["spec"]["containers"])
    return images


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def render(port: int, *extra: str) -> list[dict]:
    return manifests(helm_template("--set", "ingress.enabled=true", "--set", f"publicUrl=http://127.0.0.1:{port}", *extra))


def client_secret(rendered: Rendered, client: str) -> str:
    """A platform client's secret, as the platform derives it (README, "Service clients and tokens")."""
    [secret] = [doc for doc in rendered.of_kind("Secret") if "service-secret" in (rendered.data("Secret", doc["metadata"]["name"]) or {})]
    data = rendered.data("Secret", secret["metadata"]["name"])
    if client == "operator" and data.get("operator-client-secret"):  # its own, checked by auth before any other
        return data["operator-client-secret"].decode()
    explicit = json.loads(data["service-client-secrets"]) if data.get("service-client-secrets") else {}
    if client in explicit:
        return explicit[client]
    return hmac.new(data["service-secret"], f"client:{client}".encode(), hashlib.sha256).hexdigest()


def generated_secrets(rendered: Rendered) -> dict[str, dict[str, bytes]]:
    return {doc["metadata"]["name"]: rendered.data("Secret", doc["metadata"]["name"]) for doc in rendered.of_kind("Secret")}


class Mailboxes:
    """The `file` email backend's messages in every notification pod's data dir."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def messages(self) -> list[email.message.EmailMessage]:
        found = []
        for pod in self.cluster.pods.values():
            if "notification" not in pod.owner:
                continue
            data_dir = next((e["value"] for e in pod.main.get("env") or [] if e["name"] == "ROOMEE_DATA_DIR"), "/var/lib/roomee")
            listing = podman("exec", pod.container, "ls", f"{data_dir}/mail/", check=False)
            names = [n for n in listing.stdout.split() if n.endswith(".eml")]
            for name in names:
                raw = podman("exec", pod.container, "cat", f"{data_dir}/mail/{name}", check=False).stdout
                found.append(email.message_from_string(raw, policy=email.policy.default))
        return found

    async def link_for(self, address: str, timeout: float = 90) -> str:
        """The sign-up link of the newest invitation to ``address``."""
        deadline = time.monotonic() + timeout
        while True:
            for message in await asyncio.to_thread(self.messages):
                if address in str(message["To"]):
                    text = message.get_body(("plain",)).get_content()
                    match = re.search(r"https?://\S*token=[A-Za-z0-9_\-.%]+", text)
                    if match:
                        return match.group(0)
            if time.monotonic() > deadline:
                raise AssertionError(f"no invitation email to {address} within {timeout} s")
            await asyncio.sleep(1)


def prerequisites(render: Callable[[int], list[dict]], *more_images: str) -> tuple[int, list[dict], Rendered]:
    """Root podman, helm and every image (the rendered ones and ``more_images``), or skip (fail
    under CI); then the proxy's port, the rendering for it, and that indexed."""
    why = podman_usable()
    if why:
        _unavailable(why)
    tool("helm")
    port = _free_port()
    docs = render(port)
    rendered = Rendered(docs)
    images = _images(rendered) | set(more_images)
    missing = sorted(image for image in images if podman("image", "exists", image, check=False).returncode != 0)
    if missing:
        _unavailable(f"images {missing} are not built: run `bash tests/deploy/cluster/build-images.sh`")
    return port, docs, rendered


@pytest.fixture(scope="module")
def cluster():
    port, docs, rendered = prerequisites(render)
    FIGURES["rendered objects per kind"] = rendered.counts()
    with tempfile.TemporaryDirectory(prefix="roomee-kube-") as directory, \
            KubeApiInThread(Path(directory), rendered.namespace) as kube, \
            Cluster(docs, ingress_port=port, kubeconfig=kube.pod_kubeconfig) as running:
        FIGURES.update(running.timings)
        running.state_of_test = {"port": port, "tokens": [], "signatures": [], "kube": kube}
        # What `helm install` leaves in the cluster for the next upgrade's `lookup`: its Secrets.
        for secret in rendered.of_kind("Secret"):
            kube.kubectl("apply", "--validate=false", "-n", rendered.namespace, "-f", "-", stdin=yaml.safe_dump(secret))
        yield running
    FIGURES_FILE.write_text(json.dumps(FIGURES, indent=2))
    print(f"\ncluster figures ({FIGURES_FILE}):\n{json.dumps(FIGURES, indent=2)}")


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("Node.js and npm are needed for the Socket.IO client")
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        result = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
    return node


def client(cluster: Cluster, source: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client of the proxy from the local address ``source`` (127.0.0.0/8 are all this machine's)."""
    transport = httpx.AsyncHTTPTransport(local_address=source, retries=0)
    return httpx.AsyncClient(base_url=cluster.url, transport=transport, timeout=30)


async def service_token(http: httpx.AsyncClient, rendered: Rendered, client_id: str, scope: str) -> dict[str, str]:
    response = await http.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                     "client_secret": client_secret(rendered, client_id), "scope": scope})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def sign_in(http: httpx.AsyncClient, address: str, workspace: str | None = None) -> dict:
    body = {"email": address, "password": PASSWORD, **({"workspaceId": workspace} if workspace else {})}
    response = await http.post("/users/signIn", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def bearer(session: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['accessToken']}"}


async def sign_up_from_email(cluster: Cluster, http: httpx.AsyncClient, address: str) -> None:
    link = await Mailboxes(cluster).link_for(address)
    token = parse_qs(urlparse(link).query)["token"][0]
    cluster.state_of_test["tokens"].append(token)
    # What clicking the link does (the sign-up page, or a redirect to the configured one).
    opened = await http.get(link)
    assert opened.status_code in (200, 307), f"the invitation link {urlparse(link).path} answers {opened.status_code}"
    response = await http.post("/users/signUp", json={"token": token, "password": PASSWORD, "firstName": "Test", "lastName": "Person"})
    assert response.status_code == 201, response.text


def timed(name: str, figures: dict = FIGURES):
    class Timer:
        def __enter__(self):
            self.start = time.monotonic()

        def __exit__(self, *exc):
            if exc[0] is None:
                figures.setdefault("flows through the proxy (s)", {})[name] = round(time.monotonic() - self.start, 2)

    return Timer()


async def provision_hotel(http: httpx.AsyncClient, rendered: Rendered, key: str) -> tuple[dict[str, str], str, str]:
    """The operator client's token provisions a hotel with `POST /hotel/add` until it is ready:
    (the token's headers, the administrator's email, the hotel's id)."""
    operator = await service_token(http, rendered, "operator", "hotel:provision")
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@hotel.example.com"
    body = {"name": f"Hôtel {key}", "email": "desk@cluster.example.com", "phone": "+33 4 50 00 00 00",
            "address": "1 quai du Lac, Annecy", "plan": "premium",
            "administrator": {"email": admin_email, "firstName": "Ada", "lastName": "Admin", "locale": "en"}}
    added = await http.post("/hotel/add", json=body, headers={**operator, "Idempotency-Key": key})
    assert added.status_code == 202, added.text
    hotel_id = added.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        document = (await http.get(f"/hotel/{hotel_id}/provisioning", headers=operator)).json()
        if document.get("status") in ("ready", "failed") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert document["status"] == "ready", document
    return operator, admin_email, hotel_id


async def test_a_hotel_is_provisioned_and_its_people_sign_up_through_the_proxy(cluster):
    state = cluster.state_of_test
    async with client(cluster) as http:
        with timed("service token + POST /hotel/add to ready"):
            operator, admin_email, hotel_id = await provision_hotel(http, cluster.rendered, "cluster-1")
        with timed("administrator signs up from the email and signs in"):
            await sign_up_from_email(cluster, http, admin_email)
            admin = await sign_in(http, admin_email)
        with timed("member invited, signs up from the email and signs in"):
            member_email = f"member-{uuid.uuid4().hex[:8]}@hotel.example.com"
            invited = await http.post("/members/", json={"email": member_email, "role": "staff", "firstName": "Nina",
                                                         "lastName": "New"}, headers=bearer(admin))
            assert invited.status_code == 201, invited.text
            await sign_up_from_email(cluster, http, member_email)
            member = await sign_in(http, member_email, admin["member"]["workspaceId"])
        join = await http.get(f"/join/{hotel_id}")
        assert join.status_code in (200, 307), join.text
        state.update(hotel_id=hotel_id, admin_email=admin_email, admin=admin, member=member, operator=operator)


async def test_an_article_reaches_a_node_client_then_a_comment_a_like_and_an_upload(cluster, node):
    state = cluster.state_of_test
    admin, member = bearer(state["admin"]), bearer(state["member"])
    async with client(cluster) as http:
        listener = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / "client.mjs"), cluster.url, state["member"]["accessToken"], "websocket", "1", "notification:new",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            connected = json.loads(await asyncio.wait_for(listener.stdout.readline(), 30))
            assert connected["type"] == "connected", connected
            with timed("article published to notification:new at a Node socket.io-client"):
                feed = await http.post("/api/v1/pages", json={"pageType": "feed", "title": "Actualités"}, headers=admin)
                assert feed.status_code == 201, feed.text
                article = await http.post("/api/v1/pages", json={
                    "pageType": "article", "parentId": feed.json()["id"], "title": "Bienvenue au cluster",
                    "content": "<p>Bonjour</p>", "enableNotifications": True}, headers={**admin, "Idempotency-Key": "cluster-article"})
                assert article.status_code == 201, article.text
                event = json.loads(await asyncio.wait_for(listener.stdout.readline(), 30))
            assert event["type"] == "event" and event["event"] == "notification:new", event
        finally:
            if listener.returncode is None:
                listener.kill()
            await listener.wait()
        page = article.json()
        with timed("comment and like"):
            commented = await http.post("/api/v1/comments", json={"pageId": page["id"], "content": "Merci !"}, headers=member)
            assert commented.status_code == 201, commented.text
            liked = await http.put(f"/api/v1/pages/{page['id']}/like", headers=member)
            assert liked.status_code in (200, 201, 204), liked.text
        with timed("direct upload, completion and thumbnail"):
            picture = io.BytesIO()
            Image.new("RGB", (640, 480), (200, 40, 40)).save(picture, "JPEG")
            data = picture.getvalue()
            signed = await http.post("/media/generate-presigned-url", json={"fileName": "lobby.jpg", "contentType": "image/jpeg",
                                                                             "size": len(data)}, headers=member)
            assert signed.status_code in (200, 201), signed.text
            upload = signed.json()
            state["signatures"] += [value for key, values in parse_qs(urlparse(upload["uploadUrl"]).query).items()
                                    for value in values if "sig" in key.lower() or len(value) >= 20]
            put = await http.request(upload.get("method", "PUT"), upload["uploadUrl"], content=data, headers=upload.get("headers") or {})
            assert put.status_code in (200, 201, 204), put.text
            done = await http.post("/media/upload-complete", json={"id": upload["id"]}, headers=member)
            assert done.status_code == 200, done.text
            thumbnail = await http.get(done.json()["thumbnailUrl"], headers=member, follow_redirects=True)
            assert thumbnail.status_code == 200, thumbnail.text
            assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 640
        state["feed_id"] = feed.json()["id"]


async def test_killing_one_replica_of_each_target_mid_traffic_loses_nothing(cluster):
    state = cluster.state_of_test
    admin = bearer(state["admin"])
    titles: list[str] = []
    failed_attempts: list[str] = []
    killing_done = asyncio.Event()

    async def publish(http: httpx.AsyncClient, title: str) -> None:
        # What a client does: retry with the same Idempotency-Key until an answer says it is done.
        titles.append(title)
        deadline = time.monotonic() + 120
        while True:
            try:
                answer = await http.post("/api/v1/pages", json={"pageType": "article", "parentId": state["feed_id"], "title": title,
                                                                 "content": "<p>x</p>", "enableNotifications": True},
                                         headers={**admin, "Idempotency-Key": f"kill-{title}"})
                if answer.status_code in (200, 201):
                    return
                failed_attempts.append(f"{answer.status_code} {answer.text[:80]}")
            except httpx.TransportError as exc:
                failed_attempts.append(type(exc).__name__)
            assert time.monotonic() < deadline, failed_attempts
            await asyncio.sleep(0.5)

    async def traffic(http: httpx.AsyncClient, lane: int) -> None:
        """Articles one after another until every killed replica is replaced and ready, and a few more."""
        sent = 0
        while not killing_done.is_set() or sent < 3:
            await publish(http, f"Pendant la panne {lane}-{sent:03d}")
            sent += 1
            await asyncio.sleep(1)

    async def kill_one_of_each() -> float:
        started = time.monotonic()
        await asyncio.sleep(1)
        targets = [d for d in cluster.workloads("Deployment") if d["spec"].get("replicas", 1) > 1]
        for deployment in targets:
            pods = cluster.pods_of("Deployment", deployment["metadata"]["name"])
            replacement = await asyncio.to_thread(cluster.replace_pod, pods[0], kill=True)
            FIGURES.setdefault("replica kill", {}).setdefault("killed", []).append(pods[0].name)
            state.setdefault("replacements", []).append(replacement)
        await asyncio.to_thread(cluster.wait_ready, 240)
        killing_done.set()
        return time.monotonic() - started

    async with client(cluster) as http:
        started = time.monotonic()
        lanes = [asyncio.create_task(traffic(http, lane)) for lane in range(3)]
        recovered = await kill_one_of_each()
        await asyncio.gather(*lanes)
        FIGURES["replica kill"].update({
            "every replacement ready after (s)": round(recovered, 1),
            f"{len(titles)} articles published in (s)": round(time.monotonic() - started, 1),
            "failed attempts retried": len(failed_attempts),
            "failures": sorted(set(failed_attempts))[:5],
        })
        listed = await every_item(http, SimpleNamespace(headers=admin), "/api/v1/pages", 50, parentId=state["feed_id"])
        found = [item["title"] for item in listed if item["title"] in titles]
        assert sorted(found) == sorted(titles), f"lost or doubled: {sorted(found)}; failed attempts: {failed_attempts}"
        # Every article is notified to the member (the events survive the kill).
        member = SimpleNamespace(headers=bearer(state["member"]))
        deadline = time.monotonic() + 90
        while True:
            text = json.dumps(await every_item(http, member, "/api/v1/notifications", 50), ensure_ascii=False)
            missing = [title for title in titles if title not in text]
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert not missing, f"articles never notified to the member: {missing}"


def address_failure_limit(rendered: Rendered) -> int:
    """Failed sign-ins one address may make (the auth Deployment's ROOMEE_ADDRESS_MAX_FAILURES, default 50)."""
    for deployment in rendered.of_kind("Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        if "auth" in (container.get("args") or []):
            env = rendered.env(container, "probe", "auth")
            return int(env.get("ROOMEE_ADDRESS_MAX_FAILURES", 50))
    raise AssertionError("no auth Deployment is rendered")


async def test_a_strangers_failed_sign_ins_through_the_proxy_lock_no_one_out(cluster):
    state = cluster.state_of_test
    limit = address_failure_limit(cluster.rendered)
    with timed(f"{limit} failed sign-ins from a stranger, {limit} more at the admin from other addresses, then the admin"):
        async with client(cluster, "127.0.0.2") as stranger:
            for attempt in range(limit):
                refused = await stranger.post("/users/signIn", json={"email": f"nobody-{attempt}@example.com", "password": "wrong"})
                assert refused.status_code in (401, 429), refused.text
            throttled = await stranger.post("/users/signIn", json={"email": "nobody@example.com", "password": "wrong"})
        # The same stranger going for the administrator's account from other addresses.
        for address in range(3, 3 + min(limit, 250)):
            async with client(cluster, f"127.0.0.{address}") as other:
                await other.post("/users/signIn", json={"email": state["admin_email"], "password": "wrong"})
        async with client(cluster) as http:
            admin = await http.post("/users/signIn", json={"email": state["admin_email"], "password": PASSWORD})
    assert admin.status_code == 200, admin.text
    assert throttled.status_code == 429, "the stranger's own address is not throttled: the platform does not see client addresses"


async def test_the_operator_provisions_a_hotel_applied_with_kubectl(cluster):
    """The operator's Deployment, with the service account's kubeconfig, against the API stand-in."""
    kube = cluster.state_of_test["kube"]
    hotel = (Path(__file__).resolve().parents[2] / "crds" / "examples" / "hotel-minimal.yaml").read_text()
    hotel = hotel.replace("owner@seaside-inn.example.com", f"owner-{uuid.uuid4().hex[:8]}@seaside-inn.example.com")
    with timed("kubectl apply of a Hotel to READY through the operator"):
        await asyncio.to_thread(kube.kubectl, "apply", "--validate=false", "-n", cluster.rendered.namespace, "-f", "-", stdin=hotel)
        waited = await asyncio.to_thread(kube.kubectl, "wait", "-n", cluster.rendered.namespace, "--for=condition=Ready",
                                         "hotel/seaside-inn", "--timeout=150s", timeout=170)
    assert "condition met" in waited.stdout
    status = json.loads((await asyncio.to_thread(kube.kubectl, "get", "-n", cluster.rendered.namespace, "hotel/seaside-inn",
                                                 "-o", "json")).stdout)["status"]
    async with client(cluster) as http:
        found = await http.get(f"/hotel/{status['hotelId']}", headers=cluster.state_of_test["operator"])
    assert found.status_code == 200 and found.json()["name"] == "Seaside Inn", found.text


def test_no_log_holds_an_invitation_token_or_an_upload_signature(cluster):
    state = cluster.state_of_test
    secrets_in_flow = [s for s in state["tokens"] + state["signatures"] if len(s) >= 16]
    assert state["tokens"] and secrets_in_flow
    logs = cluster.logs()
    # The logs cover the flow: the invitation link opened and the direct upload are there.
    assert any("/signup" in text for text in logs.values()) and any("/media/objects/" in text for text in logs.values())
    leaks = {container: [s[:8] + "…" for s in secrets_in_flow if s in text] for container, text in logs.items()}
    assert not {c: found for c, found in leaks.items() if found}


async def test_helm_upgrade_reruns_the_job_keeps_the_secrets_and_the_tokens(cluster):
    state = cluster.state_of_test
    before = generated_secrets(cluster.rendered)
    jobs_before = {pod.name for pod in cluster.finished if pod.owner.startswith("Job/")}
    docs = render(state["port"], "--set", "config.ROOMEE_LOG_LEVEL=WARNING", *upgrade_lookup_args(cluster))
    started = time.monotonic()
    await asyncio.to_thread(cluster.upgrade, docs)
    FIGURES["helm upgrade (Job, rolling replacement) (s)"] = round(time.monotonic() - started, 1)
    jobs_after = {pod.name for pod in cluster.finished if pod.owner.startswith("Job/")}
    assert jobs_after - jobs_before, "no migrations Job ran for the upgrade"
    assert generated_secrets(cluster.rendered) == before, "the upgrade's rendering generated other secrets"
    async with client(cluster) as http:
        me = await http.get("/users/me", headers=bearer(state["admin"]))
        assert me.status_code == 200, me.text
        hotel = await http.get(f"/hotel/{state['hotel_id']}", headers=state["operator"])
        assert hotel.status_code == 200, hotel.text


def upgrade_lookup_args(cluster: Cluster) -> list[str]:
    """`helm upgrade` renders with `lookup` answered by the cluster, `helm template` with nothing:
    render against the Kubernetes API stand-in holding what the install created."""
    return ["--dry-run=server", "--kubeconfig", str(cluster.state_of_test["kube"].kubeconfig)]
