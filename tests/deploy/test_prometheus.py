"""Debian's Prometheus scrapes a running `roomee up` while this test drives real traffic
(invitations, sign-ins, notifications to a push provider that fails, refused requests, a hotel
when the hotel target exists); then every dashboard query and every alert expression is evaluated
through Prometheus's HTTP API. A panel whose metrics the platform produced must return data;
the others are listed (-s prints the figures of the closing note)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import sys
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
import socketio
import yaml

from roomee.targets import TARGETS
from tests.deploy.test_dashboards import metric_names, overview
from tests.deploy.tools import ROOT, RULES, tool
from tests.fixtures.fakes import onesignal_fake
from tests.fixtures.kube import running_kube
from tests.fixtures.platform import BACKEND, free_port, make_settings

NAMESPACE = "roomee-e2e"
# What Grafana puts in place of the template variables ("All" targets).
VARIABLES = {"$namespace": NAMESPACE, "$target": ".*", "$__rate_interval": "20s"}
DEADLINE_SECONDS = 120
# The operator is scraped too once it is a registered target (a process of its own).
WITH_OPERATOR = "operator" in TARGETS


def resolve(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def signing_keys(directory: Path) -> Path:
    """A directory holding one PEM signing key, as the chart mounts secrets.signingKeysSecret."""
    directory.mkdir(parents=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (directory / "signing-1.pem").write_bytes(pem)
    return directory


def platform_environment(settings, onesignal_url: str, keys: Path) -> dict[str, str]:
    """`roomee up`'s environment, configured as in production (signing keys, public URL): this
    run's backend (schemas, exchange, queues of its own on 'real'), push to the failing OneSignal,
    retries short enough to reach the dead-letter queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMEE_")}
    env.update(
        ROOMEE_PUBLIC_URL=settings.public_url,
        ROOMEE_AUTH_KEYS_DIR=str(keys),
        ROOMEE_SERVICE_SECRET=settings.service_secret,
        ROOMEE_LOG_LEVEL="WARNING",
        ROOMEE_RETRY_DELAYS_MS="[200,400,800]",
        ROOMEE_OUTBOX_POLL_INTERVAL_SECONDS="0.2",
        ROOMEE_PUSH_BACKEND="onesignal",
        ROOMEE_ONESIGNAL_URL=onesignal_url,
        ROOMEE_ONESIGNAL_APP_ID="roomee-app",
        ROOMEE_ONESIGNAL_API_KEY="test-key",
    )
    if BACKEND == "real":
        env.update(
            ROOMEE_DATABASE_URL=settings.database_url,
            ROOMEE_BROKER_URL=settings.broker_url,
            ROOMEE_SCHEMA_PREFIX=settings.schema_prefix,
            ROOMEE_EXCHANGE=settings.exchange,
            ROOMEE_QUEUE_PREFIX=settings.queue_prefix,
        )
    return env


@asynccontextmanager
async def process(*args: str, log: Path, **kwargs):
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*args, stdout=out, stderr=asyncio.subprocess.STDOUT, **kwargs)
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def wait_until(check, what: str, log: Path, timeout: float = 90.0, proc=None):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if proc is not None and proc.returncode is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}; log:\n{log.read_text()[-4000:]}")
        try:
            result = await check()
            if result:
                return result
        except (httpx.HTTPError, OSError, ValueError):
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s; log:\n{log.read_text()[-4000:]}")
        await asyncio.sleep(0.3)


class Traffic:
    """Drives the platform the way its users do, until stopped."""

    def __init__(self, client: httpx.AsyncClient, settings, admin: dict, feed_id: str) -> None:
        self.client = client
        self.settings = settings
        self.headers = {"Authorization": f"Bearer {admin['accessToken']}"}
        self.admin = admin
        self.feed_id = feed_id
        self.statuses: dict[str, int] = {}
        self.errors: list[str] = []

    def _count(self, name: str, response: httpx.Response, *expected: int) -> None:
        self.statuses[f"{name} {response.status_code}"] = self.statuses.get(f"{name} {response.status_code}", 0) + 1
        if response.status_code not in expected and not _degraded(response):
            self.errors.append(f"{name}: {response.status_code} {response.text[:300]}")

    async def hotel(self) -> None:
        """Provision a hotel as a platform operator would (the saga's metrics)."""
        form = {"grant_type": "client_credentials", "client_id": "operator",
                "client_secret": self.settings.client_secret_of("operator"), "scope": "hotel:provision"}
        token = await self.client.post("/oauth/token", data=form)
        self._count("oauth token", token, 200)
        if token.status_code != 200:
            return
        body = {"name": f"Hotel {uuid.uuid4().hex[:6]}", "email": "desk@metrics.example.com", "phone": "+33100000000",
                "address": "1 rue de la Paix, Paris", "plan": "premium",
                "administrator": {"email": "gm@metrics.example.com", "firstName": "Gina", "lastName": "Manager"}}
        headers = {"Authorization": f"Bearer {token.json()['access_token']}", "Idempotency-Key": uuid.uuid4().hex}
        self._count("hotel add", await self.client.post("/hotel/add", json=body, headers=headers), 202)

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            invite = {"email": f"guest{n}-{uuid.uuid4().hex[:6]}@hotel.example.com", "firstName": "Guest",
                      "lastName": f"Number{n}"}
            self._count("invite", await self.client.post("/members/", json=invite, headers=self.headers), 201)
            sign_in = {"email": self.admin["email"], "password": self.admin["password"]}
            self._count("sign in", await self.client.post("/users/signIn", json=sign_in), 200)
            self._count("list members", await self.client.get("/members/", headers=self.headers), 200)
            self._count("unknown member", await self.client.get(f"/members/{uuid.uuid4()}", headers=self.headers), 404)
            self._count("bad invite", await self.client.post("/members/", json={"email": "nope"}, headers=self.headers), 422)
            self._count("inbox", await self.client.get("/api/v1/notifications", headers=self.headers), 200)
            # An article: push + socket to the staff member, whose push provider fails.
            article = {"pageType": "article", "parentId": self.feed_id, "title": f"Planning {n}", "content": "<p>Hi</p>"}
            self._count("article", await self.client.post("/api/v1/pages", json=article, headers=self.headers), 201)
            if n % 8 == 1 and "hotel" in TARGETS:  # keeps saga steps within the panels' rate window
                await self.hotel()
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except TimeoutError:
                pass


def _degraded(response: httpx.Response) -> bool:
    """The platform's answer when a callee is too slow on a loaded machine (timeout or open circuit):
    a 503 the error model describes, part of what the panels show, not a failure of this test."""
    try:
        return response.status_code == 503 and response.json().get("error") == "service_unavailable"
    except ValueError:
        return False


async def query(prom: httpx.AsyncClient, expr: str) -> list[dict]:
    response = await prom.get("/api/v1/query", params={"query": expr})
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def finite(result: list[dict]) -> list[dict]:
    return [series for series in result if not math.isnan(float(series["value"][1]))]


@pytest.mark.timeout(400)
async def test_prometheus_scrapes_roomee_up_and_every_panel_and_alert_evaluates(tmp_path):
    prometheus = tool("prometheus")
    port, prom_port, operator_port = free_port(), free_port(), free_port()
    settings = make_settings(tmp_path / "settings", port=port)
    data_dir = tmp_path / "data"
    roomee = str(Path(sys.executable).parent / "roomee")
    scraped = [f"127.0.0.1:{port}"] + ([f"127.0.0.1:{operator_port}"] if WITH_OPERATOR else [])
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{
            "job_name": "roomee",
            "static_configs": [{"targets": scraped, "labels": {"namespace": NAMESPACE}}],
        }],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    async with AsyncExitStack() as stack:
        onesignal = await stack.enter_async_context(onesignal_fake())
        onesignal.respond("POST", "/notifications", 500, {"errors": ["provider unavailable"]})
        platform_log = tmp_path / "roomee-up.log"
        up = await stack.enter_async_context(process(
            roomee, "up", "--port", str(port), "--host", "127.0.0.1", "--data-dir", str(data_dir),
            env=platform_environment(settings, onesignal.url, signing_keys(tmp_path / "keys")), cwd=str(tmp_path),
            log=platform_log,
        ))
        await stack.enter_async_context(process(
            prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn", log=tmp_path / "prometheus.log",
        ))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30))
        prom = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{prom_port}", timeout=30))
        credentials_file = data_dir / "admin-credentials.json"
        await wait_until(lambda: _exists(credentials_file), "roomee up's first start", platform_log, proc=up)
        credentials = json.loads(credentials_file.read_text())
        session = (await client.post("/users/signIn", json=credentials)).json()
        admin = session | credentials
        member = session["member"]
        for person in (session, await _staff_member(client, session, data_dir)):
            device = await client.post(
                "/api/v1/subscriptions", headers={"Authorization": f"Bearer {person['accessToken']}"},
                json={"workspaceId": member["workspaceId"], "platform": "android", "subscriptionId": str(uuid.uuid4())},
            )
            assert device.status_code in (200, 201), device.text
        feed = await client.post("/api/v1/pages", json={"pageType": "feed", "title": "Hotel news"},
                                 headers={"Authorization": f"Bearer {session['accessToken']}"})
        assert feed.status_code == 201, feed.text
        if WITH_OPERATOR:
            await _operator_reconciling_a_hotel(stack, tmp_path, settings, operator_port, roomee)
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(f"http://127.0.0.1:{port}", auth={"token": session["accessToken"]},
                          transports=["websocket"], wait_timeout=10)
        await wait_until(lambda: _ready(prom), "Prometheus ready", tmp_path / "prometheus.log")

        traffic = Traffic(client, settings, admin, feed.json()["id"])
        stop = asyncio.Event()
        driving = asyncio.create_task(traffic.run(stop))
        try:
            panels, produced = await _evaluate_until_proven(prom)
            firing = await _alerts_once_firing(prom, "RoomeeEventsDeadLettered")
            alerts = {rule["alert"]: rule["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for rule in g["rules"]}
            alert_results = {name: await query(prom, expr) for name, expr in alerts.items()}
            rules = (await prom.get("/api/v1/rules")).json()["data"]["groups"]
        finally:
            stop.set()
            await driving
            await sio.disconnect()

    _report(panels, produced, alert_results, firing, traffic)
    assert not traffic.errors, traffic.errors[:5]
    succeeded = {key.rsplit(" ", 1)[0] for key in traffic.statuses if not key.endswith(" 503")}
    assert {"invite", "sign in", "article", "list members", "unknown member", "bad invite", "inbox"} <= succeeded
    assert onesignal.requests_to("POST", "/notifications"), "no push reached the failing provider"
    unproven = [p for p in panels if p["provable"] and not p["proven"]]
    assert not unproven, [(p["title"], p["expr"]) for p in unproven]
    # The queries this traffic always feeds return data.
    required = required_queries()
    assert {(p["title"], None) for p in panels} >= {(t, None) for t, _ in required}
    assert all(p["proven"] for p in panels if is_required(p, required)), [
        (p["title"], p["ref"]) for p in panels if is_required(p, required) and not p["proven"]]
    # Every rule was evaluated by Prometheus without error, and the failing provider's dead
    # letters fired their alert on real signals.
    evaluated = [rule for group in rules for rule in group["rules"]]
    assert len(evaluated) == len(alerts) and all(rule["health"] == "ok" for rule in evaluated), evaluated
    assert firing.get("RoomeeEventsDeadLettered") == "firing", firing
    assert alert_results["RoomeeEventsDeadLettered"]


async def _staff_member(client: httpx.AsyncClient, admin: dict, data_dir: Path) -> dict:
    """A staff member invited by the admin, signed up with the link of the invitation email."""
    email = "staff@hotel.example.com"
    invited = await client.post("/members/", json={"email": email, "firstName": "Sam", "lastName": "Staff"},
                                headers={"Authorization": f"Bearer {admin['accessToken']}"})
    assert invited.status_code == 201, invited.text

    async def invitation() -> str | None:
        for path in sorted((data_dir / "mail").glob("*.eml")):
            message = message_from_bytes(path.read_bytes(), policy=default_policy)
            if email in str(message["To"]):
                link = re.search(r"https?://\S+", message.get_body(("plain",)).get_content()).group(0)
                return parse_qs(urlparse(link).query)["token"][0]
        return None

    token = await wait_until(invitation, "the invitation email", data_dir.parent / "roomee-up.log", timeout=30)
    password = "correct horse battery staple"
    signed_up = await client.post("/users/signUp", json={"token": token, "password": password})
    assert signed_up.status_code == 201, signed_up.text
    signed_in = await client.post("/users/signIn", json={"email": email, "password": password})
    assert signed_in.status_code == 200, signed_in.text
    return signed_in.json()


async def _operator_reconciling_a_hotel(stack: AsyncExitStack, tmp_path: Path, settings, port: int, roomee: str):
    """`roomee run --target operator` against the test Kubernetes API (kmock + conformance layer),
    driving the platform's hotel API; a Hotel from crds/examples is applied with kubectl."""
    kube = await stack.enter_async_context(running_kube(tmp_path / "kube"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMEE_")} | {
        "KUBECONFIG": str(kube.kubeconfig), "ROOMEE_DATA_DIR": str(tmp_path / "operator"),
        "ROOMEE_SERVICE_SECRET": settings.service_secret, "ROOMEE_LOG_LEVEL": "WARNING",
        "ROOMEE_AUTH_URL": settings.public_url, "ROOMEE_HOTEL_URL": settings.public_url,
        "ROOMEE_MEMBERS_URL": settings.public_url, "ROOMEE_OPERATOR_DRIFT_INTERVAL_SECONDS": "1",
    }
    log = tmp_path / "operator.log"
    operator = await stack.enter_async_context(
        process(roomee, "run", "--target", "operator", "--port", str(port), env=env, log=log, cwd=str(tmp_path))
    )

    async def ready() -> bool:
        async with httpx.AsyncClient(timeout=5) as probe:
            return (await probe.get(f"http://127.0.0.1:{port}/health/ready")).status_code == 200

    await wait_until(ready, "the operator ready", log, proc=operator)
    await kube.kubectl("apply", "--validate=false", "-f", str(ROOT / "crds" / "examples" / "hotel.yaml"))


async def _exists(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


async def _ready(prom: httpx.AsyncClient) -> bool:
    return (await prom.get("/-/ready")).status_code == 200


def required_queries() -> set[tuple[str, str | None]]:
    """(panel, query ref or None for all) the test's traffic feeds: the seed's four panels and the
    SRE panels of the targets served (a saga that fails is not part of this traffic)."""
    titles = ["Inter-service latency", "Error rate by service", "AMQP throughput",
              "Notification delivery rate by channel", "HTTP requests by service", "HTTP latency by service",
              "Circuit breaker state", "Outbox backlog", "Dead-lettered and retried events", "Socket.IO connections",
              "Event fan-out latency"]
    required = {(title, None) for title in titles}
    if "hotel" in TARGETS:
        required |= {("Saga step outcomes", "A"), ("Sagas in flight and step latency", None)}
    if WITH_OPERATOR:
        required |= {("Operator reconciliations", "A"), ("Operator reconciliations", "C")}
    return required


def is_required(panel: dict, required: set[tuple[str, str | None]]) -> bool:
    return (panel["title"], None) in required or (panel["title"], panel["ref"]) in required


async def _alerts_once_firing(prom: httpx.AsyncClient, alert: str) -> dict[str, str]:
    """The alerts' states once `alert` fires (or at the deadline)."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_SECONDS
    while True:
        alerts = (await prom.get("/api/v1/alerts")).json()["data"]["alerts"]
        states = {a["labels"]["alertname"]: a["state"] for a in alerts}
        if states.get(alert) == "firing" or asyncio.get_running_loop().time() > deadline:
            return states
        await asyncio.sleep(1)


async def _evaluate_until_proven(prom: httpx.AsyncClient) -> tuple[list[dict], set[str]]:
    """Evaluate every panel query until each one whose metrics were scraped returns data (and,
    among them, every query of the panels the traffic feeds)."""
    board = overview()
    required = required_queries()
    deadline = asyncio.get_running_loop().time() + DEADLINE_SECONDS
    while True:
        names = (await prom.get("/api/v1/label/__name__/values")).json()["data"]
        produced = set(names)
        panels = []
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = resolve(target["expr"])
                result = await query(prom, expr)
                provable = metric_names(target["expr"]) <= produced
                panels.append({"title": panel["title"], "ref": target["refId"], "expr": expr,
                               "series": len(finite(result)), "provable": provable, "proven": bool(finite(result))})
        if all(p["proven"] for p in panels if p["provable"] or is_required(p, required)):
            return panels, produced
        if asyncio.get_running_loop().time() > deadline:
            return panels, produced
        await asyncio.sleep(2)


def _report(panels, produced, alert_results, firing, traffic) -> None:
    print("\nPanel queries evaluated through Prometheus (series returned):")
    for p in panels:
        state = "ok" if p["proven"] else ("NO DATA" if p["provable"] else "metric not produced in this run")
        print(f"  {p['title']} [{p['ref']}]: {p['series']} series ({state})\n    {p['expr']}")
    print("Alert expressions (series now):")
    for name, result in alert_results.items():
        print(f"  {name}: {len(result)} series, state {firing.get(name, 'inactive')}")
    print(f"Traffic: {dict(sorted(traffic.statuses.items()))}")
